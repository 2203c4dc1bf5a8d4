"""What the student sampled and how it was ranked, every N steps: a W&B table and `<run dir>/samples.jsonl`.

One row per candidate: the prompt, the anchor, the candidate, its ranker score
and rank (1 = best), its reward (group step) or pair role (pairwise step), and
whether the task's oracle calls it correct (null when the task has none).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from purld.types import Pairs, PromptBatch, Rollout

COLUMNS = ["step", "prompt_id", "prompt", "anchor", "candidate", "score", "rank", "reward", "role", "correct"]


@dataclass
class StepSamples:
    """A training step's rollout and ranking: what `training_step` returns beside its loss, for `SampleLogger`."""

    batch: PromptBatch
    rollout: Rollout
    scores: Tensor  # (B, K)
    oracle: Tensor | None  # (B, K) the task's oracle scores (≥ 1 is correct); None when it has none
    rewards: Tensor | None = None  # (B, K), group step
    pairs: Pairs | None = None  # pairwise step

    def roles(self, prompt: int) -> list[str]:
        """'chosen', 'rejected', 'both' or '' for each candidate of one prompt."""
        K = self.rollout.num_candidates
        chosen, rejected = [False] * K, [False] * K
        if self.pairs is not None:
            for p, c, r in zip(self.pairs.prompt_index.tolist(), self.pairs.chosen_index.tolist(), self.pairs.rejected_index.tolist()):
                if p == prompt:
                    if c < K:
                        chosen[c] = True
                    if r < K:
                        rejected[r] = True
        return ["both" if c and r else "chosen" if c else "rejected" if r else "" for c, r in zip(chosen, rejected)]

    def rows(self, step: int, num_prompts: int) -> list[list[Any]]:
        rows = []
        for prompt in range(min(num_prompts, len(self.batch))):
            example, anchor = self.batch.examples[prompt], self.batch.anchors[prompt]
            scores = self.scores[prompt].float().cpu()
            ranks = torch.empty_like(scores, dtype=torch.long)
            ranks[scores.argsort(descending=True, stable=True)] = torch.arange(1, len(scores) + 1)
            roles = self.roles(prompt)
            for k, text in enumerate(self.rollout.texts[prompt]):
                correct = bool(self.oracle[prompt, k] >= 1.0) if self.oracle is not None else None
                reward = float(self.rewards[prompt, k]) if self.rewards is not None else None
                rows.append([step, example.prompt_id, example.prompt, anchor, text, float(scores[k]), int(ranks[k]), reward, roles[k], correct])
        return rows


class SampleLogger(L.Callback):
    """Every `every_n_steps` optimizer steps (and at the first), log `num_prompts` prompts' candidates."""

    def __init__(self, path: Path, every_n_steps: int = 25, num_prompts: int = 2) -> None:
        self.path, self.every_n_steps, self.num_prompts = Path(path), every_n_steps, num_prompts

    def on_train_batch_end(self, trainer: L.Trainer, module, outputs, batch, batch_idx: int) -> None:
        samples: StepSamples | None = outputs.get("samples") if isinstance(outputs, dict) else None  # none from SFT
        step = trainer.global_step
        if samples is None or self.every_n_steps <= 0 or not trainer.is_global_zero or (step - 1) % self.every_n_steps:
            return
        rows = samples.rows(step, self.num_prompts)
        with self.path.open("a") as handle:
            for row in rows:
                handle.write(json.dumps(dict(zip(COLUMNS, row)), ensure_ascii=False) + "\n")
        for logger in trainer.loggers:
            if hasattr(logger, "log_table"):  # W&B
                logger.log_table("samples", columns=COLUMNS, data=rows, step=step)
