"""The anchor cache: fill once, read everywhere."""

from purld.anchors.cache import AnchorCache, FillStats, MissingAnchorError

__all__ = ["AnchorCache", "FillStats", "MissingAnchorError"]
