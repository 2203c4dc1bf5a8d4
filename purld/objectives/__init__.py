"""Objectives: pure tensor functions (one module each) and the small config objects around them."""

from purld.objectives.base import LossOutput, Objective
from purld.objectives.dpo import DPOObjective, dpo_loss
from purld.objectives.grpo import GRPOObjective, grpo_loss
from purld.objectives.ldl import LDLObjective, ldl_loss
from purld.objectives.sft import SFTObjective, sft_loss

__all__ = [
    "DPOObjective",
    "GRPOObjective",
    "LDLObjective",
    "LossOutput",
    "Objective",
    "SFTObjective",
    "dpo_loss",
    "grpo_loss",
    "ldl_loss",
    "sft_loss",
]
