"""SFT: negative log-likelihood of the anchor (the warm start, and the distillation baseline)."""

from __future__ import annotations

from torch import Tensor

from purld.objectives.base import LossOutput, Objective


def sft_loss(token_logps: Tensor, mask: Tensor) -> LossOutput:
    """−Σ_t m_t log π(a_t | x, a_<t) / Σ_t m_t: mean NLL per anchor token, nats.

    Inputs (N, T): per-token log-probs of the anchor and its bool mask.
    """
    mask = mask.to(token_logps.dtype)
    loss = -(token_logps * mask).sum() / mask.sum().clamp(min=1.0)
    return LossOutput(loss, {"tokens": mask.sum().detach()})


class SFTObjective(Objective):
    name = "sft"
    shape = "sft"

    def __call__(self, token_logps: Tensor, mask: Tensor) -> LossOutput:
        return sft_loss(token_logps, mask)
