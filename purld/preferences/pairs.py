"""Pairwise preferences for DPO, as indices into each prompt's pool [y_1 … y_K, anchor].

- `best_vs_worst`: one pair per prompt, (argmax s, argmin s); dropped when
  s_max − s_min ≤ `min_margin` (all candidates tied).
- `all_ordered`: every (i, j) with s_i − s_j ≥ `margin` (and > 0): ties and
  near-ties |s_i − s_j| < margin are dropped.
- `anchor_vs_worst`: the anchor is the labelled positive of PU learning,
  paired with the worst-scored candidate of each prompt.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from purld.types import Pairs


class PairBuilder(ABC):
    name: str = "pairs"

    @abstractmethod
    def __call__(self, scores: Tensor) -> Pairs:
        """scores (B, K) → Pairs with indices in [0, K] (K = the anchor)."""


class BestVsWorst(PairBuilder):
    name = "best_vs_worst"

    def __init__(self, min_margin: float = 0.0) -> None:
        self.min_margin = min_margin

    def __call__(self, scores: Tensor) -> Pairs:
        best_scores, best = scores.max(dim=1)
        worst_scores, worst = scores.min(dim=1)
        margin = best_scores - worst_scores
        keep = (margin > 0) & (margin >= self.min_margin)
        prompt_index = torch.arange(scores.shape[0], device=scores.device)[keep]
        return Pairs(prompt_index, best[keep], worst[keep], margin[keep])


class AllOrdered(PairBuilder):
    name = "all_ordered"

    def __init__(self, margin: float = 0.0) -> None:
        self.margin = margin

    def __call__(self, scores: Tensor) -> Pairs:
        difference = scores[:, :, None] - scores[:, None, :]  # (B, K, K): s_i − s_j
        keep = (difference > 0) & (difference >= self.margin)
        prompt_index, chosen, rejected = keep.nonzero(as_tuple=True)
        return Pairs(prompt_index, chosen, rejected, difference[keep])


class AnchorVsWorst(PairBuilder):
    name = "anchor_vs_worst"

    def __call__(self, scores: Tensor) -> Pairs:
        B, K = scores.shape
        prompt_index = torch.arange(B, device=scores.device)
        anchor = torch.full((B,), K, dtype=torch.long, device=scores.device)
        return Pairs(prompt_index, anchor, scores.argmin(dim=1), torch.full((B,), float("nan"), device=scores.device))
