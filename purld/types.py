"""Stage contracts: the typed hand-offs between pipeline stages.

Shape letters: B prompts, K candidates per prompt, T completion tokens,
L prompt tokens, P preference pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    # Per prompt, the student's processor outputs beside its ids (pixel_values, image_sizes, …); {} for a text
    # prompt, () for a batch without images. Kept per prompt so that any subset of prompts can be stacked again
    # (`stack_vision_inputs`), repeated for the K candidates where a prompt cannot be read once.
    vision_inputs: tuple[dict[str, Tensor], ...] = ()

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
            vision_inputs=tuple({k: v.to(device) for k, v in inputs.items()} for inputs in self.vision_inputs),
        )

    def vision_of(self, prompts: Sequence[int] | Tensor) -> tuple[dict[str, Tensor], ...]:
        """The vision inputs of these prompts (indices into the batch), () for a batch without images."""
        if not self.vision_inputs:
            return ()
        indices = prompts.tolist() if isinstance(prompts, Tensor) else list(prompts)
        return tuple(self.vision_inputs[i] for i in indices)


def stack_vision_inputs(per_prompt: Sequence[dict[str, Tensor]], repeats: int = 1) -> dict[str, Tensor]:
    """One forward's vision keyword arguments: each key's per-prompt tensors concatenated along dim 0 (images, or
    a processor's per-prompt rows), each prompt's `repeats` times in a row (row b·R + r continues prompt b).
    Text prompts ({}) add nothing; no images at all gives {}."""
    keys = list(dict.fromkeys(key for inputs in per_prompt for key in inputs))
    if any(inputs and set(inputs) != set(keys) for inputs in per_prompt):
        raise ValueError(f"vision inputs with different keys in one batch: {[sorted(inputs) for inputs in per_prompt]}")
    return {key: torch.cat([inputs[key] for inputs in per_prompt if inputs for _ in range(repeats)]) for key in keys}


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
