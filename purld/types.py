"""Stage contracts: the typed hand-offs between pipeline stages.

Shape letters: B prompts, K candidates per prompt, T completion tokens,
L prompt tokens, P preference pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class Example:
    """One prompt of a task. `answer` is ground truth for the oracle (may be None)."""

    prompt_id: str
    prompt: str
    reference: str | None = None  # the task's own reference answer (used by teacher=reference)
    answer: Any = None  # what the oracle checks against; never shown to rankers other than `oracle`
    messages: tuple[dict[str, str], ...] | None = None  # chat prompts: the conversation `prompt` renders
    images: tuple[Any, ...] = ()  # PIL images shown with the prompt (vision-language tasks: `purld.tasks.shapes`)


@dataclass(frozen=True)
class PromptBatch:
    """A batch of prompts with their cached anchors, tokenized for the student."""

    examples: list[Example]
    anchors: list[str]
    prompt_ids: Tensor  # (B, L) long, left-padded
    prompt_mask: Tensor  # (B, L) bool
    anchor_ids: Tensor  # (B, Ta) long, right-padded, ends with EOS
    anchor_mask: Tensor  # (B, Ta) bool

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def prompts(self) -> list[str]:
        return [example.prompt for example in self.examples]

    def to(self, device: torch.device | str) -> PromptBatch:
        return PromptBatch(
            examples=self.examples,
            anchors=self.anchors,
            prompt_ids=self.prompt_ids.to(device),
            prompt_mask=self.prompt_mask.to(device),
            anchor_ids=self.anchor_ids.to(device),
            anchor_mask=self.anchor_mask.to(device),
        )


@dataclass(frozen=True)
class Candidates:
    """K completions per prompt, as text and as the student's tokens."""

    texts: list[list[str]]  # B lists of K decoded completions
    completion_ids: Tensor  # (B, K, T) long, right-padded
    completion_mask: Tensor  # (B, K, T) bool, True on generated tokens up to and including EOS

    @property
    def num_candidates(self) -> int:
        return self.completion_ids.shape[1]

    @property
    def lengths(self) -> Tensor:  # (B, K) long
        return self.completion_mask.sum(-1)


@dataclass(frozen=True)
class Rollout(Candidates):
    """Candidates sampled from the current policy, with what the objective needs."""

    sampling_token_logps: Tensor  # (B, K, T) float, log π_old(y_t | x, y_<t) at the sampling temperature
    is_truncated: Tensor  # (B, K) bool, no EOS within max_new_tokens
    sampling_temperature: float = 1.0  # at 1.0, sampling_token_logps are the policy's own log-probs


@dataclass(frozen=True)
class Pairs:
    """DPO pairs as indices into each prompt's pool of K candidates + the anchor (index K)."""

    prompt_index: Tensor  # (P,) long into the batch
    chosen_index: Tensor  # (P,) long in [0, K]; K means the anchor
    rejected_index: Tensor  # (P,) long in [0, K]
    score_margin: Tensor  # (P,) float, s_chosen − s_rejected (anchor pairs: NaN)

    def __len__(self) -> int:
        return int(self.prompt_index.numel())


@dataclass(frozen=True)
class GroupTargets:
    """Listwise targets for GRPO / LDL."""

    label_distribution: Tensor  # (B, K) float, q_k = softmax_k(s_k / τ)
    rewards: Tensor  # (B, K) float, r_k = q_k
    advantages: Tensor  # (B, K) float, (r_k − mean r) / (std r + ε) per `scale_rewards`
