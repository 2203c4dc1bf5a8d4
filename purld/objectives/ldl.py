"""LDL (label-distribution GRPO): match the policy's group distribution to the ranking's.

    p_θ(k) = softmax_k( β·(ℓθ(y_k) − ℓref(y_k)) / |y_k| )
    L = mean_b KL(q_b ‖ p_θ,b) = mean_b Σ_k q_bk (log q_bk − log p_θ,bk)

A listwise objective that uses the whole ranking, not only its extremes; at
π_θ = π_ref, p is uniform and ∂L/∂ℓθ(y_k) = β (p_k − q_k) / |y_k|.
"""

from __future__ import annotations

import torch
from torch import Tensor

from purld.objectives.base import LossOutput, Objective
from purld.preferences.group import GroupTargetBuilder


def ldl_loss(
    policy_logps: Tensor,
    ref_logps: Tensor,
    lengths: Tensor,
    target_distribution: Tensor,
    beta: float,
) -> LossOutput:
    """Inputs (B, K): sequence log-probs in nats summed over completion tokens,
    completion lengths in tokens, and the target q (rows sum to 1).

    Returns the mean over prompts of KL(q ‖ p_θ) in nats, and detached
    metrics: `entropy` of p_θ, `top1_agreement` (argmax p_θ = argmax q).
    """
    implicit_rewards = beta * (policy_logps - ref_logps) / lengths.clamp(min=1)
    log_p = torch.log_softmax(implicit_rewards, dim=-1)
    kl = (torch.xlogy(target_distribution, target_distribution) - target_distribution * log_p).sum(-1)
    with torch.no_grad():
        metrics = {
            "entropy": -(log_p.exp() * log_p).sum(-1).mean(),
            "top1_agreement": (log_p.argmax(-1) == target_distribution.argmax(-1)).float().mean(),
        }
    return LossOutput(kl.mean(), metrics)


class LDLObjective(Objective):
    name = "ldl"
    shape = "group"
    needs_reference = True

    def __init__(self, beta: float = 1.0, preferences: GroupTargetBuilder | None = None) -> None:
        self.beta = beta
        self.preferences = preferences or GroupTargetBuilder()

    def __call__(self, policy_logps, ref_logps, lengths, target_distribution) -> LossOutput:
        return ldl_loss(policy_logps, ref_logps, lengths, target_distribution, self.beta)
