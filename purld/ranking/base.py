"""The ranker interface.

A ranker sees prompts, anchors and candidates — never the loss, the optimizer
or (except `oracle`) the ground truth — and returns one float score per
candidate, higher is better, computed without grad in O(K) batched work per
prompt. Self-rankers (`likelihood`, `self_judge`) use the model in the context:
the current student (`judge_model: policy`, the paper's self-ranking), or the
frozen reference (`judge_model: reference`), a judge that does not move with the
policy it judges.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from purld.tasks.base import Task
from purld.types import Candidates, PromptBatch


JUDGE_MODELS = ("policy", "reference")


@dataclass(frozen=True)
class RankingContext:
    task: Task
    model: PreTrainedModel | None = None  # for self-rankers: the current student, or the frozen reference
    tokenizer: PreTrainedTokenizerBase | None = None
    model_is_sampler: bool = True  # the model is the one that sampled the candidates (its recorded log-probs apply)
    # A user turn as the student reads it: through its chat template, with the assistant's cue, when the student's
    # prompts are (`AnchorDataModule.render_message`). Every text a self-ranker feeds the model goes through it.
    # With the prompt's images (`render(content, images)`), it places their placeholders in the turn.
    render: Callable[..., str] = str
    processor: Any = None  # a vision-language student's processor: encodes texts with images (`purld.data.prompts`)


class Ranker(ABC):
    name: str = "ranker"
    uses_ground_truth: bool = False  # True only for `oracle`: refused as a PU-RLD training signal
    judge_model: str = "policy"  # self-rankers: which model reads the candidates (JUDGE_MODELS)
    scores_are_preferences: bool = False  # True for a pairwise judge: of two candidates, the first's score is its
    # preference over the second, in [0, 1] (win_rate reads it as is)

    def identity(self) -> dict[str, object]:
        """What the run's summary records as its judge."""
        return {"name": self.name}

    @abstractmethod
    def score(self, batch: PromptBatch, candidates: Candidates, context: RankingContext) -> Tensor:
        """Scores (B, K) float32 on the candidates' device."""

    def __call__(self, batch: PromptBatch, candidates: Candidates, context: RankingContext) -> Tensor:
        with torch.no_grad():
            scores = self.score(batch, candidates, context)
        expected = tuple(candidates.completion_ids.shape[:2])
        if tuple(scores.shape) != expected:
            raise RuntimeError(f"ranker {self.name!r} returned scores of shape {tuple(scores.shape)}, expected {expected}")
        return scores.float()


def render_with_images(context: RankingContext, content: str, example) -> str:
    """`content` as one user turn the student reads, with the placeholders of `example`'s images (if any)."""
    return context.render(content, example.images) if example.images else context.render(content)


def checked_judge_model(name: str, judge_model: str) -> str:
    if judge_model not in JUDGE_MODELS:
        raise ValueError(f"ranker.judge_model={judge_model!r} ({name}): allowed values are {', '.join(JUDGE_MODELS)}")
    return judge_model


def scores_from_lists(values: list[list[float]], like: Tensor) -> Tensor:
    return torch.tensor(values, dtype=torch.float32, device=like.device)
