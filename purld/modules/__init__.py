"""Lightning modules: one per step shape (pairwise, group, sft), never one per loss variant."""

from purld.modules.base import PolicyModule
from purld.modules.group import GroupModule
from purld.modules.pairwise import PairwiseModule
from purld.modules.sft import SFTModule

MODULE_FOR_SHAPE: dict[str, type[PolicyModule]] = {"pairwise": PairwiseModule, "group": GroupModule, "sft": SFTModule}


def module_for(objective, **kwargs) -> PolicyModule:
    """The module that runs `objective` (chosen by its step shape)."""
    return MODULE_FOR_SHAPE[objective.shape](objective=objective, **kwargs)


__all__ = ["GroupModule", "MODULE_FOR_SHAPE", "PairwiseModule", "PolicyModule", "SFTModule", "module_for"]
