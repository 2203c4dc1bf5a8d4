"""Listwise targets for GRPO / LDL: the group label distribution and its advantages.

    q_k = softmax_k(s_k / τ)                 (B, K); τ = `temperature`
    r_k = q_k
    A_k = (r_k − mean_k r) / (std + ε)      std per `scale_rewards`:
          group → std over the K of the prompt; batch → std over all B·K of the global batch (every DDP
          rank's rewards, through `gather`, as TRL gathers them); none → no division.

Small τ concentrates q (and the advantages) on the best-scored candidates —
the concentration property the paper's analysis rests on. `scale_rewards`
follows TRL's GRPOConfig (std is the unbiased estimate, as in TRL).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from purld.types import GroupTargets

SCALE_REWARDS = ("group", "batch", "none")


def group_targets(
    scores: Tensor,
    temperature: float = 1.0,
    scale_rewards: str = "group",
    eps: float = 1e-4,
    gather: Callable[[Tensor], Tensor] | None = None,
) -> GroupTargets:
    """`gather`: (B, K) local rewards → (B_global, K), every rank's (None: this process holds the whole batch)."""
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards={scale_rewards!r}: allowed values are {', '.join(SCALE_REWARDS)}")
    label_distribution = (scores / temperature).softmax(dim=1)
    rewards = label_distribution
    advantages = rewards - rewards.mean(dim=1, keepdim=True)
    if scale_rewards == "group":
        advantages = advantages / (rewards.std(dim=1, keepdim=True) + eps)
    elif scale_rewards == "batch":
        advantages = advantages / ((gather(rewards) if gather else rewards).std() + eps)
    return GroupTargets(label_distribution=label_distribution, rewards=rewards, advantages=advantages)


class GroupTargetBuilder:
    """`loss/preferences=group`: holds τ and `scale_rewards` for `group_targets`."""

    name = "group"

    def __init__(self, temperature: float = 1.0, scale_rewards: str = "group", eps: float = 1e-4) -> None:
        if scale_rewards not in SCALE_REWARDS:
            raise ValueError(f"loss.preferences.scale_rewards={scale_rewards!r}: allowed values are {', '.join(SCALE_REWARDS)}")
        self.temperature, self.scale_rewards, self.eps = temperature, scale_rewards, eps

    def __call__(self, scores: Tensor, gather: Callable[[Tensor], Tensor] | None = None) -> GroupTargets:
        return group_targets(scores, self.temperature, self.scale_rewards, self.eps, gather)
