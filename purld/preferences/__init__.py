"""Scores (B, K) → DPO pairs or GRPO / LDL group targets. The only place ties, margins and τ live."""

from purld.preferences.group import GroupTargetBuilder, group_targets
from purld.preferences.pairs import AllOrdered, AnchorVsWorst, BestVsWorst, PairBuilder

__all__ = ["AllOrdered", "AnchorVsWorst", "BestVsWorst", "GroupTargetBuilder", "PairBuilder", "group_targets"]
