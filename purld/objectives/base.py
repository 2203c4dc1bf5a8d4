"""What every objective returns, and the step shape it needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from torch import Tensor

StepShape = Literal["pairwise", "group", "sft"]


@dataclass(frozen=True)
class LossOutput:
    loss: Tensor  # scalar, with grad
    metrics: dict[str, Tensor] = field(default_factory=dict)  # detached scalars

    def prefixed(self, prefix: str) -> dict[str, Tensor]:
        return {f"{prefix}loss": self.loss.detach(), **{f"{prefix}{k}": v for k, v in self.metrics.items()}}


class Objective:
    """A configured loss: its hyper-parameters, its preference builder, its step shape.

    `shape` tells which Lightning module runs it: `pairwise` (DPO), `group`
    (GRPO, LDL) or `sft`; rollout and ranking code exists once per shape.
    """

    name: ClassVar[str] = "objective"
    shape: ClassVar[StepShape]
    needs_reference: bool = False
