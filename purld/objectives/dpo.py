"""DPO on pairs induced by the anchor-conditioned ranking.

Option names follow TRL's DPOConfig (`beta`, `loss_type`, `label_smoothing`,
`reference_free`). The pairs come from `loss/preferences` (best_vs_worst,
all_ordered, anchor_vs_worst).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from purld.objectives.base import LossOutput, Objective
from purld.preferences.pairs import BestVsWorst, PairBuilder

LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust")


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> LossOutput:
    """Mean over pairs of a loss of h = (ℓθ(y_w) − ℓref(y_w)) − (ℓθ(y_l) − ℓref(y_l)).

        sigmoid: −(1−ε)·log σ(βh) − ε·log σ(−βh)            (ε = label_smoothing, cDPO)
        robust:  (−(1−ε)·log σ(βh) + ε·log σ(−βh)) / (1 − 2ε)
        hinge:   max(0, 1 − βh)
        ipo:     (h − 1/(2β))²

    Inputs (P,): sequence log-probs in nats summed over completion tokens (for
    `ipo`, averaged per token, as in TRL). Reference-free DPO passes zeros.
    Metrics: implicit rewards β(ℓθ − ℓref) of chosen / rejected, their margin,
    and the fraction of pairs whose chosen reward is higher.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss.loss_type={loss_type!r}: allowed values are {', '.join(LOSS_TYPES)}")
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    if loss_type == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif loss_type == "robust":
        losses = (-(1 - label_smoothing) * F.logsigmoid(beta * h) + label_smoothing * F.logsigmoid(-beta * h)) / (
            1 - 2 * label_smoothing
        )
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * h)
    else:
        losses = (h - 1 / (2 * beta)) ** 2
    metrics = {
        "rewards/chosen": chosen_rewards.detach().mean(),
        "rewards/rejected": rejected_rewards.detach().mean(),
        "rewards/margins": (chosen_rewards - rejected_rewards).detach().mean(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
        "logps/chosen": policy_chosen_logps.detach().mean(),
        "logps/rejected": policy_rejected_logps.detach().mean(),
    }
    return LossOutput(losses.mean(), metrics)


class DPOObjective(Objective):
    name = "dpo"
    shape = "pairwise"

    def __init__(
        self,
        beta: float = 0.1,
        loss_type: str = "sigmoid",
        label_smoothing: float = 0.0,
        reference_free: bool = False,
        preferences: PairBuilder | None = None,
    ) -> None:
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"loss.loss_type={loss_type!r}: allowed values are {', '.join(LOSS_TYPES)}")
        self.beta, self.loss_type, self.label_smoothing = beta, loss_type, label_smoothing
        self.reference_free = reference_free
        self.needs_reference = not reference_free
        self.preferences = preferences or BestVsWorst()
        self.average_log_prob = loss_type == "ipo"

    def __call__(self, policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps) -> LossOutput:
        if self.reference_free:
            ref_chosen_logps = torch.zeros_like(policy_chosen_logps)
            ref_rejected_logps = torch.zeros_like(policy_rejected_logps)
        return dpo_loss(
            policy_chosen_logps,
            policy_rejected_logps,
            ref_chosen_logps,
            ref_rejected_logps,
            self.beta,
            self.loss_type,
            self.label_smoothing,
        )
