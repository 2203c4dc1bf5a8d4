"""Greedy answers on held-out prompts, scored three ways.

- `accuracy`: oracle correctness (tasks with an oracle only); `oracle_score` its graded mean; `accuracy/<kind>`
  over the examples of each kind of question, for a task that mixes kinds (`Task.question_kind`).
- `win_rate`: against the anchor under `eval.judge` (else the training ranker): the
  answer and the anchor are scored together as two candidates; a higher score
  wins, a tie counts ½ (as in AlpacaEval). An answer identical to the anchor
  therefore scores ½ under similarity rankers. A pairwise judge (`judge=llm`)
  gives its preference itself: the mean of its verdicts in both orders.
- `win_rate_lc`: the length-controlled win rate, AlpacaEval 2's regression on the
  length difference read at zero (`purld.eval.win_rate`); whole held-out sets only.
- `length`: completion tokens of the answer, EOS included; `length_difference`:
  minus the anchor's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from purld.eval.win_rate import length_controlled_win_rate
from purld.ranking.base import Ranker, RankingContext
from purld.rollout.sampler import (
    candidates_from_texts,
    completion_mask_from_ids,
    decode_completions,
    generate_completions,
    stop_token_ids,
)
from purld.tasks.base import Task
from purld.types import PromptBatch


def greedy_answers(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch: PromptBatch, max_new_tokens: int
) -> tuple[list[str], torch.Tensor]:
    """Greedy completions of a batch: texts (B) and lengths (B,) in tokens."""
    completion_ids = generate_completions(model, tokenizer, batch, do_sample=False, max_new_tokens=max_new_tokens)
    completion_mask, _ = completion_mask_from_ids(completion_ids, stop_token_ids(model, tokenizer))
    texts = decode_completions(tokenizer, completion_ids[:, None], completion_mask[:, None])
    return [row[0] for row in texts], completion_mask.sum(-1)


def evaluate_batch(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    batch: PromptBatch,
    task: Task,
    ranker: Ranker,
    max_new_tokens: int,
    render: Callable[..., str] = str,
    processor=None,
) -> dict[str, list[float]]:
    """Per-example metrics of one batch (lists, so batches can be pooled exactly). `render`: how a user turn
    reaches the student (`AnchorDataModule.render_message`), for a judge that reads one; `processor`: a
    vision-language student's, for a judge that reads the prompt's images."""
    answers, lengths = greedy_answers(model, tokenizer, batch, max_new_tokens)
    pair = candidates_from_texts(tokenizer, [[answer, anchor] for answer, anchor in zip(answers, batch.anchors)], batch.prompt_ids.device)
    scores = ranker(batch, pair, RankingContext(task=task, model=model, tokenizer=tokenizer, render=render, processor=processor))  # (B, 2)
    if ranker.scores_are_preferences:
        wins = scores[:, 0]
    else:
        wins = (scores[:, 0] > scores[:, 1]).float() + 0.5 * (scores[:, 0] == scores[:, 1]).float()
    anchor_lengths = pair.lengths[:, 1].to(lengths.device)
    metrics: dict[str, list[float]] = {
        "win_rate": wins.tolist(),
        "length": lengths.float().tolist(),
        "length_difference": (lengths - anchor_lengths).float().tolist(),
    }
    if task.has_oracle:
        oracle = [task.oracle_score(example, answer) for example, answer in zip(batch.examples, answers)]
        metrics["oracle_score"] = oracle
        metrics["accuracy"] = [float(score >= 1.0) for score in oracle]
        kinds = [task.question_kind(example) for example in batch.examples]
        for kind in task.question_kinds:  # every kind, empty or not: each rank pools the same names
            metrics[f"accuracy/{kind}"] = [correct for of, correct in zip(kinds, metrics["accuracy"]) if of == kind]
    return metrics


class EvalAccumulator:
    """Pools per-example metrics over batches; `means()` gives one number per metric."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = defaultdict(list)

    def add(self, metrics: dict[str, list[float]]) -> None:
        for name, values in metrics.items():
            self.values[name].extend(values)

    def means(self) -> dict[str, float]:
        return {name: sum(values) / len(values) for name, values in self.values.items() if values}


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    batches: Iterable[PromptBatch],
    task: Task,
    ranker: Ranker,
    max_new_tokens: int,
    device: torch.device | str = "cpu",
    render: Callable[..., str] = str,
    description: str = "held-out eval",
    processor=None,
) -> dict[str, float]:
    """Pooled means over `batches`, on `device` (the model is moved there: Lightning leaves a fitted module on
    the CPU, wherever it trained)."""
    accumulator = EvalAccumulator()
    model.to(device)
    # A bar on a terminal only (disable=None): logs of batch jobs stay clean.
    for batch in tqdm(batches, desc=description, unit="batch", disable=None, leave=False):
        accumulator.add(evaluate_batch(model, tokenizer, batch.to(device), task, ranker, max_new_tokens, render, processor))
    means = accumulator.means()
    if accumulator.values["win_rate"]:
        means["win_rate_lc"] = length_controlled_win_rate(
            torch.tensor(accumulator.values["win_rate"]), torch.tensor(accumulator.values["length_difference"])
        )
    return means


def evaluation_device(accelerator: str | None) -> torch.device:
    """The device of `trainer.accelerator`, where held-out evaluation runs (rank 0, so the first GPU)."""
    accelerator = str(accelerator or "auto")
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError(f"trainer.accelerator={accelerator}: no CUDA device is available (trainer=cpu runs on the CPU)")
        return torch.device("cuda", torch.cuda.current_device())
    if accelerator == "mps" or (accelerator == "auto" and torch.backends.mps.is_available()):
        return torch.device("mps")
    return torch.device("cpu")
