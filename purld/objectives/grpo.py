"""GRPO: clipped policy-gradient surrogate over the K candidates of each prompt.

Per token t of completion i, with A_i from `preferences/group.py`:

    ρ_it = exp(ℓθ_it − ℓold_it)                              (ℓold = sampling log-probs)
    L_it = −min(ρ_it·A_i, clip(ρ_it, 1−ε_low, 1+ε_high)·A_i) + β·KL_it
    KL_it = exp(ℓref_it − ℓθ_it) − (ℓref_it − ℓθ_it) − 1      (k3 estimator, ≥ 0)

Aggregation (`loss_type`, TRL's names):
    grpo:    mean_i [ Σ_t m_it L_it / Σ_t m_it ]             per-sequence normalisation
    bnpo:    Σ_it m_it L_it / Σ_it m_it                      per active token, this process
    dapo:    Σ_it m_it L_it / num_active_tokens              per active token, whole global batch
    dr_grpo: Σ_it m_it L_it / (N · max_completion_length)    by a constant

`mask_truncated_completions` drops completions without EOS from the loss
(DAPO). With one optimisation step per rollout the ratio is 1 in value and
the surrogate's gradient is the plain policy gradient, as in TRL.
"""

from __future__ import annotations

import torch
from torch import Tensor

from purld.objectives.base import LossOutput, Objective
from purld.preferences.group import GroupTargetBuilder

LOSS_TYPES = ("grpo", "bnpo", "dapo", "dr_grpo")


def grpo_loss(
    per_token_logps: Tensor,
    old_per_token_logps: Tensor,
    advantages: Tensor,
    completion_mask: Tensor,
    ref_per_token_logps: Tensor | None = None,
    beta: float = 0.04,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    loss_type: str = "dapo",
    max_completion_length: int | None = None,
    num_active_tokens: Tensor | float | None = None,
) -> LossOutput:
    """Inputs: per-token log-probs (N, T) in nats, advantages (N,), completion_mask (N, T) bool.

    N = B·K completions; `num_active_tokens` is the global token count for
    `dapo` (defaults to this batch's). Returns the scalar loss and detached
    metrics: `kl` (masked token mean), `clip_ratio/low_mean`,
    `clip_ratio/high_mean`, `clip_ratio/region_mean` (fraction of active
    tokens where clipping removed the gradient), and `sampling_logp_gap/mean`,
    `sampling_logp_gap/max`: |ℓθ_it − ℓold_it| over active tokens. With one
    step per rollout ℓθ = ℓold up to numerics, so this is how far the rollout
    engine's log-probs (vLLM's kernels, a static cache, bf16) are from the
    training forward's.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss.loss_type={loss_type!r}: allowed values are {', '.join(LOSS_TYPES)}")
    mask = completion_mask.to(per_token_logps.dtype)
    advantages = advantages[:, None]  # (N, 1)
    ratio = torch.exp(per_token_logps - old_per_token_logps)
    clipped_ratio = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    per_token_loss = -torch.min(ratio * advantages, clipped_ratio * advantages)
    metrics: dict[str, Tensor] = {}
    active = mask.sum().clamp(min=1.0)
    if beta != 0.0:
        if ref_per_token_logps is None:
            raise ValueError("grpo_loss: beta > 0 needs ref_per_token_logps")
        log_ratio_ref = ref_per_token_logps - per_token_logps
        per_token_kl = torch.exp(log_ratio_ref) - log_ratio_ref - 1
        per_token_loss = per_token_loss + beta * per_token_kl
        metrics["kl"] = (per_token_kl.detach() * mask).sum() / active

    masked_loss = per_token_loss * mask
    if loss_type == "grpo":
        loss = (masked_loss.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = masked_loss.sum() / active
    elif loss_type == "dapo":
        loss = masked_loss.sum() / (active if num_active_tokens is None else num_active_tokens)
    else:
        if max_completion_length is None:
            raise ValueError("loss_type=dr_grpo needs max_completion_length")
        loss = masked_loss.sum() / (per_token_logps.shape[0] * max_completion_length)

    with torch.no_grad():
        is_low_clipped = (ratio < 1 - epsilon_low) & (advantages < 0)
        is_high_clipped = (ratio > 1 + epsilon_high) & (advantages > 0)
        metrics["clip_ratio/low_mean"] = (is_low_clipped * mask).sum() / active
        metrics["clip_ratio/high_mean"] = (is_high_clipped * mask).sum() / active
        metrics["clip_ratio/region_mean"] = ((is_low_clipped | is_high_clipped) * mask).sum() / active
        gap = (per_token_logps - old_per_token_logps).abs() * mask
        metrics["sampling_logp_gap/mean"] = gap.sum() / active
        metrics["sampling_logp_gap/max"] = gap.max()
    return LossOutput(loss, metrics)


class GRPOObjective(Objective):
    name = "grpo"
    shape = "group"

    def __init__(
        self,
        beta: float = 0.04,
        epsilon: float = 0.2,
        epsilon_high: float | None = None,
        loss_type: str = "dapo",
        mask_truncated_completions: bool = False,
        max_completion_length: int | None = None,
        preferences: GroupTargetBuilder | None = None,
    ) -> None:
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"loss.loss_type={loss_type!r}: allowed values are {', '.join(LOSS_TYPES)}")
        self.beta, self.epsilon_low = beta, epsilon
        self.epsilon_high = epsilon if epsilon_high is None else epsilon_high
        self.loss_type, self.mask_truncated_completions = loss_type, mask_truncated_completions
        self.max_completion_length = max_completion_length
        self.preferences = preferences or GroupTargetBuilder()
        self.needs_reference = beta != 0.0

    def __call__(
        self,
        per_token_logps: Tensor,
        old_per_token_logps: Tensor,
        advantages: Tensor,
        completion_mask: Tensor,
        is_truncated: Tensor,
        ref_per_token_logps: Tensor | None,
        num_active_tokens: Tensor | float | None = None,
    ) -> LossOutput:
        """`num_active_tokens`: for `dapo` across several processes, the mean over ranks of their
        active-token counts (under `loss_mask`), so that the averaged gradients equal one process's."""
        return grpo_loss(
            per_token_logps,
            old_per_token_logps,
            advantages,
            self.loss_mask(completion_mask, is_truncated),
            ref_per_token_logps,
            beta=self.beta,
            epsilon_low=self.epsilon_low,
            epsilon_high=self.epsilon_high,
            loss_type=self.loss_type,
            max_completion_length=self.max_completion_length,
            num_active_tokens=num_active_tokens,
        )

    def loss_mask(self, completion_mask: Tensor, is_truncated: Tensor) -> Tensor:
        """The tokens the loss counts: all completion tokens, or (mask_truncated_completions) those of finished ones."""
        return completion_mask & ~is_truncated[:, None] if self.mask_truncated_completions else completion_mask
