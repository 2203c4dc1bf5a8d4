"""scripts/evidence.py's suites: the rows each table compares, the ablations, the judges, the budgets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


DIAGNOSTICS = ("rank/kendall_tau", "rank/top1_oracle_accuracy", "rank/q_mass_on_correct")
FINAL_METRICS = ("accuracy", "oracle_score", "win_rate", "win_rate_lc", "length")
TAU_WINDOW = 3  # steps averaged for the early and the late τ
README_MARKERS = ("<!-- evidence:start -->", "<!-- evidence:end -->")
REAL_MARKERS = ("<!-- evidence-real:start -->", "<!-- evidence-real:end -->")


@dataclass(frozen=True)
class Row:
    name: str  # the run directory's name
    method: str  # what the table calls it
    ranker: str | None
    overrides: tuple[str, ...]
    ablation: str | None = None  # what this row changes from its base row, for the ablation table


def comparison_rows(rankers: tuple[str, ...]) -> list[Row]:
    rows = [Row("sft", "SFT only (continued)", None, ("loss=sft",))]
    for loss, label in (("dpo", "PU-RLD + DPO"), ("grpo", "PU-RLD + GRPO"), ("ldl", "PU-RLD + LDL")):
        rows += [Row(f"{loss}-{ranker}", label, ranker, (f"loss={loss}", f"ranker={ranker}")) for ranker in rankers]
    rows.append(Row("grpo-oracle", "GRPO, oracle reward (upper bound)", "oracle", ("loss=grpo", "ranker=oracle", "ranker.baseline=true")))
    rows.append(Row("grpo-random", "GRPO, random ranker (lower bound)", "random", ("loss=grpo", "ranker=random")))
    return rows


def toy_ablation_rows(num_candidates: int, temperature: float) -> list[Row]:
    """What might move PU-RLD GRPO against SFT: the self-ranker's judge, K, sampling temperature, the KL weight,
    the learning rate, τ (each changes one thing of the lexical or likelihood GRPO row)."""
    base = ("loss=grpo", "ranker=lexical")
    return [
        Row("grpo-likelihood-frozen", "PU-RLD + GRPO", "likelihood", ("loss=grpo", "ranker=likelihood", "ranker.judge_model=reference"),
            "likelihood ranker read by the frozen warm start (vs the current policy)"),
        Row(f"grpo-lexical-K{2 * num_candidates}", "PU-RLD + GRPO", "lexical", (*base, f"rollout.num_candidates={2 * num_candidates}"),
            f"K = {2 * num_candidates} (vs {num_candidates})"),
        Row("grpo-lexical-T1.0", "PU-RLD + GRPO", "lexical", (*base, "rollout.temperature=1.0"), f"sampling temperature 1.0 (vs {temperature})"),
        Row("grpo-lexical-beta0", "PU-RLD + GRPO", "lexical", (*base, "loss.beta=0.0"), "β = 0, no KL to the reference (vs 0.04)"),
        Row("grpo-lexical-lr1e-4", "PU-RLD + GRPO", "lexical", (*base, "optimizer.lr=1.0e-4"), "learning rate 1e-4 (vs 3e-5)"),
        Row("grpo-lexical-tau1.0", "PU-RLD + GRPO", "lexical", (*base, "loss.preferences.temperature=1.0"),
            "τ = 1.0 in q = softmax(s/τ) (vs 0.1)"),
    ]


def real_ablation_rows(num_candidates: int, temperature: float) -> list[Row]:
    """On the real student: does reading the self-rankers with the frozen warm start (so that the policy cannot move
    its own judge) help, and what K, β and τ do to the self_judge GRPO row."""
    base = ("loss=grpo", "ranker=self_judge")
    return [
        Row("grpo-self_judge-frozen", "PU-RLD + GRPO", "self_judge", (*base, "ranker.judge_model=reference"),
            "self_judge read by the frozen warm start (vs the current policy)"),
        Row("grpo-likelihood-frozen", "PU-RLD + GRPO", "likelihood", ("loss=grpo", "ranker=likelihood", "ranker.judge_model=reference"),
            "likelihood read by the frozen warm start (vs the current policy)"),
        Row(f"grpo-self_judge-K{2 * num_candidates}", "PU-RLD + GRPO", "self_judge", (*base, f"rollout.num_candidates={2 * num_candidates}"),
            f"K = {2 * num_candidates} (vs {num_candidates})"),
        Row("grpo-self_judge-beta0", "PU-RLD + GRPO", "self_judge", (*base, "loss.beta=0.0"), "β = 0, no KL to the reference (vs 0.04)"),
        Row("grpo-self_judge-tau1.0", "PU-RLD + GRPO", "self_judge", (*base, "loss.preferences.temperature=1.0"),
            "τ = 1.0 in q = softmax(s/τ) (vs 0.1)"),
    ]


JUDGE_REFERENCE_LAST = ("You are grading an answer against a reference answer.\n\n[Task]\n{prompt}\n\n[Candidate answer]\n{candidate}"
                        "\n\n[Reference answer]\n{anchor}\n\nDoes the candidate answer reach the same final result as the "
                        "reference answer? Reply Yes or No.\nReply: ")
JUDGE_SAME_NUMBER = ("[Question]\n{prompt}\n\n[Correct answer]\n{anchor}\n\n[Student answer]\n{candidate}\n\n"
                     "Is the student's final answer the same as the correct answer? Reply Yes or No.\nReply: ")


LIKELIHOOD_ANCHOR_AFTER = "{prompt}\nReference answer: {anchor}"


def quoted(text: str) -> str:
    """`text` as one Hydra override value: braces, newlines and apostrophes kept as written."""
    return "'" + text.replace("'", "\\'") + "'"


@dataclass(frozen=True)
class SignalVariant:
    """One change to a ranker, scored on the frozen warm start's samples (`purld-signal`, train prompts only)."""

    name: str
    ranker: str
    overrides: tuple[str, ...]
    ablation: str


def real_signal_ablation() -> list[SignalVariant]:
    """Why a self-ranker does or does not see correctness: where the anchor sits in its prompt, and what the judge is
    asked. Each variant scores the same samples as the others (the same prompts, seed and student)."""
    return [
        SignalVariant("self_judge", "self_judge", (), "self_judge as configured (reference before the candidate)"),
        SignalVariant("self_judge-reference-last", "self_judge", (f"ranker.template={quoted(JUDGE_REFERENCE_LAST)}",),
                      "self_judge, the reference after the candidate"),
        SignalVariant("self_judge-same-number", "self_judge", (f"ranker.template={quoted(JUDGE_SAME_NUMBER)}",),
                      "self_judge asked whether the final answers are the same (reference labelled correct)"),
        SignalVariant("likelihood", "likelihood", (), "likelihood as configured (the anchor before the prompt)"),
        SignalVariant("likelihood-anchor-after", "likelihood", (f"ranker.anchor_template={quoted(LIKELIHOOD_ANCHOR_AFTER)}",),
                      "likelihood, the anchor after the prompt"),
    ]


def lexical_judge() -> list[str]:
    return ["eval.judge={_target_:purld.ranking.LexicalRanker}"]


def llm_judge(model_dir: str, out: Path) -> list[str]:
    """A local model as the fixed judge (`judge=hf`: both orders, verdicts cached in the output directory)."""
    return ["judge=hf", f"eval.judge.teacher.model_name_or_path={model_dir}", f"eval.judge.cache_path={out / 'judge_cache.sqlite'}"]


@dataclass(frozen=True)
class Suite:
    """What one evidence table compares: its tasks (each the `purld-train` overrides that select it), the rankers of
    the PU-RLD rows, the ablation, the fixed judge of the win rate, and the budget every row gets by default."""

    name: str
    tasks: dict[str, tuple[str, ...]]
    rankers: tuple[str, ...]
    ablation: Callable[[int, float], list[Row]]
    defaults: dict[str, Any]  # argparse defaults for this suite
    quick: dict[str, Any]  # and what --quick changes
    signal: bool = False  # score the frozen warm start's samples with every ranker first (purld-signal)
    signal_ablation: Callable[[], list[SignalVariant]] = list  # ranker variants scored the same way, on the ablation task
    markers: tuple[str, str] = README_MARKERS



TOY = Suite(
    name="toy",
    tasks={"arithmetic": ("task=arithmetic",), "sort": ("task=sort",)},
    rankers=("likelihood", "lexical"),  # a self-ranker and one other
    ablation=toy_ablation_rows,
    defaults={"out": Path("outputs/evidence"), "seeds": "0,1,2", "steps": 100, "warmstart_steps": 500, "num_candidates": 8,
              "temperature": 0.7, "eval_prompts": 512, "eval_every": 25, "signal_prompts": 0},
    quick={"out": Path("outputs/evidence/quick"), "seeds": "0", "steps": 40, "eval_prompts": 256, "eval_every": 20, "no_ablation": True},
)
# experiment=smollm2 is the full fine-tune of SmolLM2-135M-Instruct (12.9 s a step on 2 cores against LoRA's 17.0 s),
# batch 4 prompts × K 4, PU-RLD at lr 5e-6, a 10-step SFT warm start at 1e-5; constraints has no operands to set.
REAL = Suite(
    name="real",
    tasks={"word_problems": ("experiment=smollm2", "task=word_problems", "task.max_operand=19"),
           # No final answer to extract: the preset's ranker=verifier does not apply (every row sets its own ranker).
           "constraints": ("experiment=smollm2", "task=constraints", "~task.max_operand", "ranker=lexical")},
    rankers=("self_judge", "likelihood", "embedding"),  # the paper's two self-rankers and the best other (purld-signal)
    ablation=real_ablation_rows,
    defaults={"out": Path("outputs/evidence/real"), "seeds": "0,1,2", "steps": 10, "warmstart_steps": 10, "num_candidates": 4,
              "temperature": 0.7, "eval_prompts": 128, "eval_every": 0, "signal_prompts": 200},
    quick={"out": Path("outputs/evidence/real_quick"), "seeds": "0", "steps": 4, "signal_prompts": 16, "eval_prompts": 64,
           "tasks": "word_problems", "no_ablation": True, "rows": "sft,grpo-self_judge,grpo-oracle,grpo-random"},
    signal=True,
    signal_ablation=real_signal_ablation,
    markers=REAL_MARKERS,
)
SUITES = {suite.name: suite for suite in (TOY, REAL)}
SIGNAL_CANDIDATES = 8  # K of the signal tables, whatever K the training rows use
SIGNAL_ABLATION_PROMPTS = 64  # train prompts of each ranker variant (each variant samples them again: same seed, same samples)
