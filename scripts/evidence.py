"""Does PU-RLD work? One command that trains every comparison row and writes the table, the JSON and the plot.

    python scripts/evidence.py            # toy students: 2 tasks × 9 rows × 3 seeds + an ablation (under 60 min on 2 cores)
    python scripts/evidence.py --quick    # the same code path: 1 seed, fewer steps (under 10 min), in outputs/evidence/quick
    python scripts/evidence.py --real     # SmolLM2-135M-Instruct: the signal tables, then 2 tasks × 12 rows × 3 seeds
    python scripts/evidence.py --real --quick   # word_problems, 1 seed, 4 rows of 4 steps, 16 signal prompts (10.5 min)

Two suites share the code. The toy one (`arithmetic`, 2-digit addition with worked
steps; `sort`, sorting a few digits) trains random-init students; `--real` trains
the pretrained SmolLM2-135M-Instruct (`experiment=smollm2`, full fine-tune, its chat
template) on `word_problems` (operands 2..19) and `constraints` (one sentence under
verifiable constraints), the tasks' reference answers as anchors.

For each task one SFT warm start is trained on the anchors (`purld-train
trainer.max_steps=0`) and saved. With `--real`, the frozen warm start's samples are
first scored by every ranker against the oracle with no training (`purld-signal`,
K = 8 on `--signal-prompts` train prompts: Kendall τ, top-1 oracle accuracy, q mass
on correct candidates, bootstrap intervals). Every row then starts from that saved
student (`student=hf student.model_name_or_path=<warm start>`, `warmstart.sft_steps=0`)
with the same budget: `--steps` optimizer steps of the suite's batch of prompts, and
K sampled candidates per prompt wherever a row samples:
  1. SFT only: continued SFT on the anchors (the distillation baseline);
  2–4. PU-RLD with DPO, GRPO and LDL, each with the suite's rankers (toy: the
     `likelihood` self-ranker and `lexical`, ROUGE-L to the anchor; real: the two
     self-rankers `self_judge` and `likelihood`, and `embedding`);
  5. GRPO on the oracle reward (an upper bound; not PU-RLD);
  6. GRPO with a random ranker (a lower bound: does the ranking carry signal?).
Seeds change sampling and prompt order, not the warm start. Held-out accuracy
is measured on the task's held-out split, which nothing here tunes on. The win
rate against the anchor is judged by one fixed judge for every row (`eval.judge`),
so rows are comparable: the lexical ranker by default (an answer equal to the anchor
is a tie, ½; none of the real suite's PU-RLD rows trains on it), or with
`--judge-model DIR` a local model asked which response is better in both orders
(`judge=hf`), with the length-controlled win rate beside it. SmolLM2-135M-Instruct
is not that judge: asked about 128 warm-start answers in both orders it replied
"A" to all 243 distinct questions, a pure position bias that the two orders turn
into 128 ties (win rate exactly ½). Ranking diagnostics are means over the
training steps (Kendall τ between ranker and oracle scores, how often the
top-ranked candidate is correct, the mass of q on correct candidates).

Runs go to `<out>/runs/<task>/<row>/seed<k>/` (plain `purld-train` run
directories: `purld-compare` reads them), the signal tables to
`<out>/signal/<task>/signal.json`. A run that finished (its summary.json or
signal.json exists) is not run again, so an interrupted command picks up where it
stopped; a failed run is reported and the others go on. Results:
`<out>/evidence.json`, `<out>/evidence.md` (the tables README.md shows, also
written between its evidence markers into the file `--readme` names: README.md for the
real suite, scripts/README.md for the toy one), and
`<out>/accuracy_curves.png` (held-out accuracy and, for ranked rows, Kendall τ over
the steps, mean over seeds).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from purld.cli.compare import read_curves

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


@dataclass
class Settings:
    suite: Suite
    out: Path
    seeds: list[int]
    steps: int
    warmstart_steps: int
    num_candidates: int
    temperature: float
    eval_prompts: int
    eval_every: int
    signal_prompts: int  # train prompts of each task's signal table (0: none)
    judge_model: str | None  # a local model directory that judges the win rate (judge=hf); None: the lexical ranker
    jobs: int
    tasks: list[str]
    ablation_task: str | None
    rows: list[str] | None = None  # only these rows (tests, partial reruns)
    started: float = field(default_factory=time.perf_counter)


# ------------------------------------------------------------------------ running
def common_overrides(s: Settings) -> list[str]:
    return [
        "logger=csv",
        f"anchors.cache_path={s.out / 'anchor_cache.sqlite'}",
        f"eval.num_prompts={s.eval_prompts}",
        *(llm_judge(s.judge_model, s.out) if s.judge_model else lexical_judge()),
        "checkpointing.enabled=false",
        "samples.every_n_steps=0",
    ]


def run_purld(entry_point: str, result: str, run_dir: Path, overrides: list[str], threads: int) -> dict[str, Any]:
    """One `purld-<entry_point>` in its own process; the JSON it writes (`result` in its run directory), or an error
    naming the run and the last lines it printed. A run whose result exists is not run again."""
    result_path = run_dir / result
    if result_path.exists():
        return json.loads(result_path.read_text())
    if run_dir.exists():  # a run that was cut short: start it again from nothing
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled"}
    command = [sys.executable, "-m", f"purld.cli.{entry_point}", *overrides, f"hydra.run.dir={run_dir}"]
    with (run_dir / "stdout.log").open("w") as log:
        process = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    if process.returncode != 0 or not result_path.exists():
        tail = (run_dir / "stdout.log").read_text().strip().splitlines()[-5:]
        raise RuntimeError(f"{run_dir}: purld-{entry_point} exited {process.returncode}:\n  " + "\n  ".join(tail))
    return json.loads(result_path.read_text())


def run_purld_train(run_dir: Path, overrides: list[str], threads: int) -> dict[str, Any]:
    return run_purld("train", "summary.json", run_dir, overrides, threads)


def run_purld_signal(run_dir: Path, overrides: list[str], threads: int) -> dict[str, Any]:
    return run_purld("signal", "signal.json", run_dir, overrides, threads)


def warm_start(s: Settings, task: str) -> Path:
    """The task's shared SFT warm start: trained once, saved as a student directory."""
    run_dir = s.out / "runs" / task / "warmstart"
    overrides = [*s.suite.tasks[task], *common_overrides(s), "trainer.max_steps=0", f"warmstart.sft_steps={s.warmstart_steps}", "seed=0"]
    run_purld_train(run_dir, overrides, threads=os.cpu_count() or 1)
    return run_dir / "student"


def signal_overrides(s: Settings, task: str, student: Path, num_prompts: int | None = None) -> list[str]:
    """`purld-signal` on the frozen warm start: every ranker that applies scores the same K = 8 samples."""
    return [
        *s.suite.tasks[task],
        f"anchors.cache_path={s.out / 'anchor_cache.sqlite'}",
        f"checkpoint={student}",
        f"rollout.num_candidates={SIGNAL_CANDIDATES}",
        f"rollout.temperature={s.temperature}",
        f"signal.num_prompts={num_prompts or s.signal_prompts}",
        "seed=0",
    ]


def signal_variant_overrides(s: Settings, task: str, student: Path, variant: SignalVariant) -> list[str]:
    prompts = min(SIGNAL_ABLATION_PROMPTS, s.signal_prompts)
    return [*signal_overrides(s, task, student, prompts), f"ranker={variant.ranker}", *variant.overrides, f"signal.rankers=[{variant.ranker}]"]


def row_overrides(s: Settings, task: str, row: Row, seed: int, student: Path) -> list[str]:
    return [
        *s.suite.tasks[task],
        *common_overrides(s),
        "student=hf",
        f"student.model_name_or_path={student}",
        "warmstart.sft_steps=0",
        "eval.before=false",  # the warm start's own evaluation is every row's "before"
        f"trainer.max_steps={s.steps}",
        f"rollout.num_candidates={s.num_candidates}",
        f"rollout.temperature={s.temperature}",
        f"eval.every_n_steps={s.eval_every}",
        f"seed={seed}",
        *row.overrides,  # last: an ablation row's own K or temperature wins
    ]


# ------------------------------------------------------------------------ reading
def diagnostics(run_dir: Path) -> dict[str, float]:
    """Means over the training steps of the ranking diagnostics that this run logged, over the steps where each
    was defined (`read_curves` leaves out the NaN steps), and how many those were (`<name>/steps_defined`)."""
    curves = read_curves(run_dir / "logs" / "purld" / "metrics.csv", DIAGNOSTICS)
    means = {name: statistics.mean(v for _, v in points) for name, points in curves.items() if points}
    return {**means, **{f"{name}/steps_defined": len(curves.get(name, [])) for name in DIAGNOSTICS}}


def accuracy_curve(run_dir: Path, before: float | None) -> list[tuple[int, float]]:
    """(optimizer steps done, held-out accuracy). Lightning logs a validation run with the index of the batch that
    triggered it, one less than the steps done."""
    points = read_curves(run_dir / "logs" / "purld" / "metrics.csv", ("eval/accuracy",)).get("eval/accuracy", [])
    return ([(0, before)] if before is not None else []) + [(step + 1, value) for step, value in points]


def tau_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(optimizer steps done, Kendall τ of that step's ranking against the oracle): does the ranker stay consistent as
    the policy moves, or is it gamed?"""
    points = read_curves(run_dir / "logs" / "purld" / "metrics.csv", ("rank/kendall_tau",)).get("rank/kendall_tau", [])
    return [(step + 1, value) for step, value in points]


def seed_result(run_dir: Path, summary: dict[str, Any], warm: dict[str, Any]) -> dict[str, Any]:
    """One run's figures; `warm` (the shared warm start's held-out metrics) stands for a run's own "before"."""
    after, before = summary["eval"]["after"], summary["eval"]["before"] or warm
    result: dict[str, Any] = {name: after.get(name) for name in FINAL_METRICS}
    result["accuracy_before"] = before.get("accuracy")
    result.update(diagnostics(run_dir))
    final_step = summary.get("global_step")
    curve = accuracy_curve(run_dir, before.get("accuracy"))
    if final_step and (not curve or curve[-1][0] != final_step):
        curve.append((final_step, after.get("accuracy")))
    result["accuracy_curve"] = curve
    result["tau_curve"] = tau_curve(run_dir)
    taus = [value for _, value in result["tau_curve"]]
    # Does the ranker stay consistent as the policy moves? τ over the first and the last steps (a few each: one
    # step's τ is over a handful of prompts).
    result["tau_early"] = statistics.mean(taus[:TAU_WINDOW]) if taus else None
    result["tau_late"] = statistics.mean(taus[-TAU_WINDOW:]) if len(taus) >= 2 * TAU_WINDOW else None
    result["seconds"] = summary.get("seconds", {}).get("total")
    return result


def mean_std(values: list[float]) -> dict[str, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None}
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else None}


def summarize(task: str, row: Row, per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    names = [*FINAL_METRICS, *DIAGNOSTICS, "tau_early", "tau_late"]
    return {
        "task": task,
        "row": row.name,
        "method": row.method,
        "ranker": row.ranker,
        "ablation": row.ablation,
        "overrides": list(row.overrides),
        "seeds": {str(seed): result for seed, result in per_seed.items()},
        **{name: mean_std([result.get(name) for result in per_seed.values()]) for name in names},
    }


# ------------------------------------------------------------------------ reporting
def cell(stat: dict[str, float | None], percent: bool = False, digits: int = 2) -> str:
    if stat["mean"] is None:
        return "—"
    scale, unit = (100.0, "") if percent else (1.0, "")
    text = f"{stat['mean'] * scale:.1f}" if percent else f"{stat['mean']:.{digits}f}"
    if stat["std"] is not None:
        text += f" ± {stat['std'] * scale:.1f}" if percent else f" ± {stat['std']:.{digits}f}"
    return text + unit


def markdown_table(entries: list[dict[str, Any]], warm: dict[str, dict[str, Any]]) -> str:
    """The comparison table (mean ± standard deviation over seeds), then the ablation's. `warm`: each task's warm
    start metrics; the length-controlled win rate gets a column where a judge measured one."""
    with_lc = any(e.get("win_rate_lc", {}).get("mean") is not None for e in entries)  # older reports have none
    lc_header, lc_rule = (" LC win rate % |", " --- |") if with_lc else ("", "")
    lines = [
        f"| task | method | ranker | held-out accuracy % | win rate vs anchor % |{lc_header} mean length | Kendall τ | top-1 correct % "
        "| q mass on correct |",
        f"| --- | --- | --- | --- | --- |{lc_rule} --- | --- | --- | --- |",
    ]
    for task in dict.fromkeys(e["task"] for e in entries):
        if warm.get(task):
            w = {name: {"mean": warm[task].get(name), "std": None} for name in FINAL_METRICS}
            lc = f" {cell(w['win_rate_lc'], True)} |" if with_lc else ""
            lines.append(f"| {task} | warm start (shared) | | {cell(w['accuracy'], True)} | {cell(w['win_rate'], True)} |{lc} "
                         f"{cell(w['length'], digits=1)} | | | |")
        for e in (e for e in entries if e["task"] == task and not e["ablation"]):
            lc = f" {cell(e['win_rate_lc'], True)} |" if with_lc else ""
            lines.append(
                f"| {task} | {e['method']} | {e['ranker'] or '—'} | {cell(e['accuracy'], True)} | {cell(e['win_rate'], True)} |{lc} "
                f"{cell(e['length'], digits=1)} | {cell(e['rank/kendall_tau'])} | {cell(e['rank/top1_oracle_accuracy'], True)} "
                f"| {cell(e['rank/q_mass_on_correct'])} |"
            )
    ablations = [e for e in entries if e["ablation"]]
    if ablations:
        lines += ["", "| task | ablation of PU-RLD + GRPO | ranker | held-out accuracy % | Kendall τ | top-1 correct % |",
                  "| --- | --- | --- | --- | --- | --- |"]
        lines += [
            f"| {e['task']} | {e['ablation']} | {e['ranker']} | {cell(e['accuracy'], True)} | {cell(e['rank/kendall_tau'])} "
            f"| {cell(e['rank/top1_oracle_accuracy'], True)} |"
            for e in ablations
        ]
    return "\n".join(lines)


SELF_RANKERS = ("self_judge", "likelihood")  # the paper's self-ranking: the student reads the anchor itself
LEXICAL_JUDGE = "the lexical ranker (ROUGE-L to the anchor, so an answer can at best tie it: ½)"
CRITERION = "PU-RLD with a self-ranker closes at least half of the gap between SFT only and oracle GRPO, with τ ≥ 0.5"


MIN_GAP = 0.01  # oracle GRPO must beat SFT by a point of held-out accuracy for a share of that gap to mean anything


def criterion(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per task and self-ranker PU-RLD row: its held-out accuracy minus SFT's and oracle GRPO's minus SFT's (seed
    means), the share of that gap it closes, its mean τ, and whether both meet the mark. The share is undefined where
    oracle GRPO is not a point above SFT: then there is no gap to close, and the row can at best match SFT."""
    verdicts = []
    for task in dict.fromkeys(e["task"] for e in entries):
        by_row = {e["row"]: e for e in entries if e["task"] == task and not e["ablation"]}
        sft, oracle = (by_row.get(name, {}).get("accuracy", {}).get("mean") for name in ("sft", "grpo-oracle"))
        for e in (e for e in by_row.values() if e["ranker"] in SELF_RANKERS):
            accuracy, tau = e["accuracy"]["mean"], e["rank/kendall_tau"]["mean"]
            over_sft = None if sft is None or accuracy is None else accuracy - sft
            gap = None if sft is None or oracle is None else oracle - sft
            share = over_sft / gap if over_sft is not None and gap is not None and gap >= MIN_GAP else None
            verdicts.append({"task": task, "row": e["row"], "over_sft": over_sft, "oracle_over_sft": gap, "gap_closed": share,
                             "kendall_tau": tau, "met": share is not None and share >= 0.5 and tau is not None and tau >= 0.5})
    return verdicts


def criterion_lines(verdicts: list[dict[str, Any]]) -> str:
    def points(value: float | None) -> str:
        return "—" if value is None else f"{100 * value:+.1f}"

    lines = [f"Criterion: {CRITERION}."]
    for v in verdicts:
        share = "no gap to close" if v["gap_closed"] is None else f"gap closed {v['gap_closed']:+.2f}"
        tau = "—" if v["kendall_tau"] is None else f"{v['kendall_tau']:.2f}"
        lines.append(f"- {v['task']}, {v['row']}: {points(v['over_sft'])} points over SFT, oracle GRPO {points(v['oracle_over_sft'])}; "
                     f"{share}; τ {tau}: **{'met' if v['met'] else 'not met'}**")
    return "\n".join(lines)


def interval(figure: dict[str, float], percent: bool = False) -> str:
    if not figure["n"]:
        return "undefined"
    scale = 100.0 if percent else 1.0
    digits = 1 if percent else 2
    return f"{figure['mean'] * scale:.{digits}f} [{figure['low'] * scale:.{digits}f}, {figure['high'] * scale:.{digits}f}]"


def signal_table(signals: dict[str, dict[str, Any]]) -> str:
    """purld-signal's figures per task (the frozen warm start, no training), best τ first, beside chance."""
    lines = ["| task | ranker | Kendall τ vs oracle | top-1 correct % | q mass on correct | seconds |",
             "| --- | --- | --- | --- | --- | --- |"]
    for task, report in signals.items():
        ordered = sorted(report["rankers"].items(), key=lambda item: -(item[1]["kendall_tau"]["mean"] if item[1]["kendall_tau"]["n"] else -2))
        for name, figures in ordered:
            lines.append(f"| {task} | {name} | {interval(figures['kendall_tau'])} | {interval(figures['top1_oracle_accuracy'], True)} "
                         f"| {interval(figures['q_mass_on_correct'])} | {figures['seconds']:.0f} |")
        lines.append(f"| {task} | chance (the samples' own accuracy) | | {interval(report['chance'], True)} | | |")
    first = next(iter(signals.values()))
    level = round(100 * first["bootstrap"]["confidence"])
    caption = (f"{first['prompts']} train prompts × {first['candidates_per_prompt']} samples of the frozen warm start per task, "
               f"mean [{level} % bootstrap interval over prompts]; q = softmax(s / {first['temperature']:g}).")
    return caption + "\n\n" + "\n".join(lines)


def drift_table(entries: list[dict[str, Any]]) -> str:
    """Kendall τ of each ranked row over its first and its last steps: a ranker the policy games falls as it trains."""
    lines = [f"Does the ranker stay consistent as the policy moves? Kendall τ against the oracle, mean of the first and of the "
             f"last {TAU_WINDOW} steps:", "", "| task | row | τ, first steps | τ, last steps |", "| --- | --- | --- | --- |"]
    lines += [f"| {e['task']} | {e['row']} | {cell(e['tau_early'])} | {cell(e['tau_late'])} |" for e in entries]
    return "\n".join(lines)


def signal_ablation_table(variants: list[dict[str, Any]]) -> str:
    first = variants[0]
    lines = [f"Ranker variants on the frozen warm start ({first['task']}, {first['prompts']} train prompts × {SIGNAL_CANDIDATES} "
             f"samples, the same samples for each; chance {interval(first['chance'], True)} %):", "",
             "| ranker variant | Kendall τ vs oracle | top-1 correct % | q mass on correct |", "| --- | --- | --- | --- |"]
    lines += [f"| {v['ablation']} | {interval(v['kendall_tau'])} | {interval(v['top1_oracle_accuracy'], True)} "
              f"| {interval(v['q_mass_on_correct'])} |" for v in variants]
    return "\n".join(lines)


def render(report: dict[str, Any]) -> str:
    """The tables README.md shows, from an evidence.json alone (so that a test can check README against the JSON):
    the signal tables where there are any, the training table, the signal ablation, the criterion."""
    warm = report.get("warm_start") or {task: {"accuracy": value} for task, value in report["warm_start_accuracy"].items()}
    tables = ""
    if report["rows"]:
        tables = f"Win rate against the anchor judged by {report.get('judge', LEXICAL_JUDGE)}.\n\n{markdown_table(report['rows'], warm)}"
    drift = [e for e in report["rows"] if e.get("tau_late", {}).get("mean") is not None and e["ranker"] not in ("oracle", None)]
    if drift:
        tables += "\n\n" + drift_table(drift)
    if report.get("signal_ablation"):
        tables += "\n\n" + signal_ablation_table(report["signal_ablation"])
    verdicts = criterion(report["rows"])
    if verdicts:
        tables += "\n\n" + criterion_lines(verdicts)
    if report.get("signal"):
        tables = f"**The signal alone** (no training):\n\n{signal_table(report['signal'])}\n\n**Training** from the warm start:\n\n{tables}"
    return tables


def mean_curve(results: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    by_step: dict[int, list[float]] = {}
    for result in results:
        for step, value in result.get(key, []):
            by_step.setdefault(step, []).append(value)
    steps = sorted(by_step)
    return steps, [statistics.mean(by_step[step]) for step in steps]


def plot_curves(entries: list[dict[str, Any]], path: Path) -> None:
    """Per task: held-out accuracy over the steps and, for the ranked rows, the ranker's Kendall τ against the oracle
    at each step (mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(e["task"] for e in entries))
    figure, axes = plt.subplots(2, len(tasks), figsize=(7 * len(tasks), 9), squeeze=False)
    for column, task in enumerate(tasks):
        accuracy_axis, tau_axis = axes[0][column], axes[1][column]
        for e in (e for e in entries if e["task"] == task and not e["ablation"]):
            style = "--" if e["ranker"] in ("oracle", "random") or e["row"] == "sft" else "-"
            label = f"{e['method']} ({e['ranker']})" if e["ranker"] else e["method"]
            steps, accuracy = mean_curve(list(e["seeds"].values()), "accuracy_curve")
            accuracy_axis.plot(steps, [100 * value for value in accuracy], style, label=label, linewidth=1.3)
            steps, tau = mean_curve(list(e["seeds"].values()), "tau_curve")
            if steps and e["ranker"] != "oracle":
                tau_axis.plot(steps, tau, style, label=label, linewidth=1.0)
        accuracy_axis.set_title(f"{task}: held-out accuracy (mean over seeds)")
        accuracy_axis.set_ylabel("accuracy %")
        tau_axis.set_title(f"{task}: the ranker's Kendall τ against the oracle, each step")
        tau_axis.set_ylabel("Kendall τ")
        tau_axis.axhline(0.0, color="grey", linewidth=0.6)
        for axis in (accuracy_axis, tau_axis):
            axis.set_xlabel("optimizer steps after the warm start")
            if axis.get_legend_handles_labels()[0]:
                axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_readme(readme: Path, table: str, command: str, markers: tuple[str, str] = README_MARKERS) -> None:
    text = readme.read_text()
    start, end = markers
    if start not in text or end not in text:
        raise SystemExit(f"{readme}: no {start} … {end} block to replace")
    before, rest = text.split(start, 1)
    after = rest.split(end, 1)[1]
    readme.write_text(f"{before}{start}\n<!-- written by `{command}`; do not edit by hand -->\n\n{table}\n\n{end}{after}")


# ------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", action="store_true", help="the SmolLM2-135M-Instruct suite (default: the toy students)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quick", action="store_true", help="one seed, fewer steps, no ablation: checks the code path")
    parser.add_argument("--seeds")
    parser.add_argument("--steps", type=int, help="optimizer steps of every row after the warm start")
    parser.add_argument("--warmstart-steps", type=int)
    parser.add_argument("--num-candidates", type=int, help="K for every row that samples")
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--eval-prompts", type=int)
    parser.add_argument("--eval-every", type=int, help="held-out accuracy every N steps, for the plot")
    parser.add_argument("--signal-prompts", type=int, help="train prompts of each task's signal table (the real suite)")
    parser.add_argument("--judge-model", default=None, help="a local model directory as the fixed judge of the win rate, both "
                        "orders (judge=hf); default: the lexical ranker (ROUGE-L to the anchor; equal to it = ½)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (each gets cores / jobs threads)")
    parser.add_argument("--tasks", help="comma-separated (default: the suite's)")
    parser.add_argument("--rows", default=None, help="comma-separated row names (default: all)")
    parser.add_argument("--no-ablation", action="store_true")
    parser.add_argument("--readme", type=Path, default=None, help="also write the tables into this README's evidence block")
    parser.add_argument("--render", type=Path, default=None, help="print the tables of this evidence.json (runs nothing); with "
                        "--readme, write them into its block")
    known, _ = parser.parse_known_args(argv)
    suite = REAL if known.real else TOY
    parser.set_defaults(**{"tasks": ",".join(suite.tasks), **suite.defaults, **(suite.quick if known.quick else {})})
    args = parser.parse_args(argv)
    tasks = args.tasks.split(",")
    unknown = [t for t in tasks if t not in suite.tasks]
    if unknown:
        parser.error(f"--tasks: unknown {unknown}; the {suite.name} suite's: {', '.join(suite.tasks)}")
    settings = Settings(
        suite=suite, out=args.out, seeds=[int(s) for s in args.seeds.split(",")], steps=args.steps,
        warmstart_steps=args.warmstart_steps, num_candidates=args.num_candidates, temperature=args.temperature,
        eval_prompts=args.eval_prompts, eval_every=args.eval_every, signal_prompts=args.signal_prompts if suite.signal else 0, judge_model=args.judge_model,
        jobs=args.jobs, tasks=tasks, ablation_task=None if args.no_ablation else tasks[0],
        rows=args.rows.split(",") if args.rows else None,
    )
    return settings, args


RUN_SHAPING = ("steps", "warmstart_steps", "num_candidates", "temperature", "eval_prompts", "eval_every", "signal_prompts", "judge_model")


def check_same_settings(s: Settings) -> None:
    """Finished runs are reused, so an output directory must hold one setting of what shapes a run."""
    path = s.out / "settings.json"
    current = {"suite": s.suite.name, **{key: getattr(s, key) for key in RUN_SHAPING}}
    if path.exists():
        saved = json.loads(path.read_text())
        saved.setdefault("suite", "toy")  # written before there were two suites
        saved.setdefault("signal_prompts", 0)
        saved.setdefault("judge_model", None)
        differing = [f"{key}: {saved.get(key)} there, {value} now" for key, value in current.items() if saved.get(key) != value]
        if differing:
            raise SystemExit(f"{path}: its runs were made with other settings ({'; '.join(differing)}); "
                             "pass another --out, or the same settings to reuse them")
    path.write_text(json.dumps(current, indent=2))


def render_command(path: Path) -> str:
    return f"python scripts/evidence.py --render {path}"


def main(argv: list[str] | None = None) -> int:
    s, args = parse_args(argv)
    if args.render:
        report = json.loads(args.render.read_text())
        tables = render(report)
        if args.readme:
            write_readme(args.readme, tables, render_command(args.render), SUITES[report.get("suite", "toy")].markers)
        print(tables)
        return 0
    s.out.mkdir(parents=True, exist_ok=True)
    check_same_settings(s)
    threads = max(1, (os.cpu_count() or 1) // s.jobs)
    plan: list[tuple[str, Row]] = [(task, row) for task in s.tasks for row in comparison_rows(s.suite.rankers)]
    if s.ablation_task:
        plan += [(s.ablation_task, row) for row in s.suite.ablation(s.num_candidates, s.temperature)]
    if s.rows:
        plan = [(task, row) for task, row in plan if row.name in s.rows]

    students, warm_metrics = {}, {}
    for task in s.tasks:
        print(f"[{time.perf_counter() - s.started:6.0f} s] {task}: warm start ({s.warmstart_steps} SFT steps)", flush=True)
        try:
            students[task] = warm_start(s, task)
        except RuntimeError as error:  # every row starts from it: nothing else of this task can run
            print(f"FAILED {error}\nfix it and run the same command again (finished runs are kept)", file=sys.stderr)
            return 1
        warm_summary = json.loads((students[task].parent / "summary.json").read_text())
        warm_metrics[task] = warm_summary["eval"]["before"]

    jobs = [(task, row, seed) for task, row in plan for seed in s.seeds]
    reused = sum((s.out / "runs" / task / row.name / f"seed{seed}" / "summary.json").exists() for task, row, seed in jobs)
    results: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    signals: dict[str, dict[str, Any]] = {}
    signal_ablation: dict[str, dict[str, Any]] = {}
    variants = s.suite.signal_ablation() if s.ablation_task and s.signal_prompts else []
    failures: list[str] = []

    def elapsed() -> str:
        return f"[{time.perf_counter() - s.started:6.0f} s]"

    def run_signal(task: str) -> None:
        try:
            signals[task] = run_purld_signal(s.out / "signal" / task, signal_overrides(s, task, students[task]), threads)
        except RuntimeError as error:
            failures.append(str(error))
            print(f"FAILED {error}", file=sys.stderr, flush=True)
            return
        best = max(signals[task]["rankers"].items(), key=lambda item: item[1]["kendall_tau"]["mean"] if item[1]["kendall_tau"]["n"] else -2)
        print(f"{elapsed()} {task} signal: best Kendall τ {best[1]['kendall_tau']['mean']:.2f} ({best[0]})", flush=True)

    def run_signal_variant(variant: SignalVariant) -> None:
        task = s.ablation_task
        try:
            report = run_purld_signal(s.out / "signal" / task / "ablation" / variant.name,
                                      signal_variant_overrides(s, task, students[task], variant), threads)
        except RuntimeError as error:
            failures.append(str(error))
            print(f"FAILED {error}", file=sys.stderr, flush=True)
            return
        figures = report["rankers"][variant.ranker]
        signal_ablation[variant.name] = {"task": task, "ranker": variant.ranker, "ablation": variant.ablation,
                                         "overrides": list(variant.overrides), "prompts": report["prompts"],
                                         "chance": report["chance"], **figures}
        print(f"{elapsed()} {task} signal ablation {variant.name}: Kendall τ {figures['kendall_tau']['mean']:.2f}", flush=True)

    def run(job: tuple[str, Row, int]) -> None:
        task, row, seed = job
        run_dir = s.out / "runs" / task / row.name / f"seed{seed}"
        try:
            summary = run_purld_train(run_dir, row_overrides(s, task, row, seed, students[task]), threads)
        except RuntimeError as error:
            failures.append(str(error))
            print(f"FAILED {error}", file=sys.stderr, flush=True)
            return
        results.setdefault((task, row.name), {})[seed] = seed_result(run_dir, summary, warm_metrics[task])
        accuracy = summary["eval"]["after"].get("accuracy")
        print(f"{elapsed()} {task} {row.name} seed {seed}: held-out accuracy {accuracy:.3f}", flush=True)

    def dispatch(job: str | tuple[str, Row, int] | SignalVariant) -> None:
        if isinstance(job, str):
            run_signal(job)
        elif isinstance(job, SignalVariant):
            run_signal_variant(job)
        else:
            run(job)

    with ThreadPoolExecutor(max_workers=s.jobs) as pool:  # the signal tables first: they need no training
        list(pool.map(dispatch, [*(s.tasks if s.signal_prompts else []), *jobs, *variants]))

    entries = [summarize(task, row, results[(task, row.name)]) for task, row in plan if (task, row.name) in results]
    signals = {task: signals[task] for task in s.tasks if task in signals}
    judge = f"`{s.judge_model}` asked which response is better, in both orders (judge=hf)" if s.judge_model else LEXICAL_JUDGE
    report = {
        "command": " ".join(["python", "scripts/evidence.py", *(argv if argv is not None else sys.argv[1:])]),
        "suite": s.suite.name,
        "judge": judge,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(s).items() if k not in ("started", "suite")},
        "warm_start_accuracy": {task: metrics.get("accuracy") for task, metrics in warm_metrics.items()},
        "warm_start": warm_metrics,
        "signal": {task: {key: value for key, value in report.items() if key != "examples"} for task, report in signals.items()},
        "rows": entries,
        "signal_ablation": [signal_ablation[v.name] for v in variants if v.name in signal_ablation],
        "criterion": {"text": CRITERION, "verdicts": criterion(entries)},
        "failed_runs": failures,
        "wall_minutes": round((time.perf_counter() - s.started) / 60, 1),  # this invocation; finished runs were reused
        "runs_reused": reused,
    }
    previous = s.out / "evidence.json"
    earlier = json.loads(previous.read_text()).get("invocations", []) if previous.exists() else []
    report["invocations"] = [*earlier, {"wall_minutes": report["wall_minutes"], "runs": len(jobs), "runs_reused": reused,
                                        "failed": len(failures)}]
    previous.write_text(json.dumps(report, indent=2))
    tables = render(report)
    (s.out / "evidence.md").write_text(tables + "\n")
    if entries:
        plot_curves(entries, s.out / "accuracy_curves.png")
    if args.readme:
        write_readme(args.readme, tables, render_command(previous), s.suite.markers)
    print(tables)
    print(f"{report['wall_minutes']} min · {len(jobs) - len(failures)}/{len(jobs)} runs ({reused} reused) · → {s.out / 'evidence.json'}")
    if failures:
        print(f"{len(failures)} run(s) failed; run the same command again to retry them (finished runs are kept)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
