"""What the student sampled and how it was ranked, every N steps: a W&B table and `<run dir>/samples.jsonl`.

One row per candidate: the prompt, the anchor, the candidate, its ranker score
and rank (1 = best), its reward (group step) or pair role (pairwise step), and
whether the task's oracle calls it correct (null when the task has none). A prompt's images (vision-language
tasks) are written once to `<run dir>/sample_images/` and named in the `images` column (paths relative to the run
dir); the W&B table shows the first as a picture.
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

COLUMNS = ["step", "prompt_id", "prompt", "anchor", "candidate", "score", "rank", "reward", "role", "correct", "images"]


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

    def rows(self, step: int, num_prompts: int, image_paths: list[list[str]] | None = None) -> list[list[Any]]:
        """`image_paths`: per prompt, where its images were saved (none: no images column values)."""
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
                images = image_paths[prompt] if image_paths else []
                rows.append([step, example.prompt_id, example.prompt, anchor, text, float(scores[k]), int(ranks[k]), reward, roles[k],
                             correct, images])
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
        image_paths = self.save_images(samples.batch.examples[: self.num_prompts])
        rows = samples.rows(step, self.num_prompts, image_paths)
        with self.path.open("a") as handle:
            for row in rows:
                handle.write(json.dumps(dict(zip(COLUMNS, row)), ensure_ascii=False) + "\n")
        for logger in trainer.loggers:
            if hasattr(logger, "log_table"):  # W&B
                logger.log_table("samples", columns=COLUMNS, data=[self.with_pictures(row) for row in rows], step=step)

    def save_images(self, examples) -> list[list[str]]:
        """Each example's images as PNG files beside samples.jsonl (once per prompt): their paths, relative to it."""
        from purld.data.prompts import as_pil_image

        paths = []
        for example in examples:
            names = []
            for index, image in enumerate(example.images):
                name = Path("sample_images") / f"{safe_name(example.prompt_id)}-{index}.png"
                target = self.path.parent / name
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    as_pil_image(image).save(target)
                names.append(str(name))
            paths.append(names)
        return paths

    def with_pictures(self, row: list[Any]) -> list[Any]:
        """A W&B row: the images column as the prompt's (first) picture, a wandb.Image, which a table cell shows."""
        if not row[-1]:
            return [*row[:-1], None]
        import wandb

        return [*row[:-1], wandb.Image(str(self.path.parent / row[-1][0]))]


def safe_name(prompt_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in prompt_id)
