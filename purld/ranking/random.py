"""`ranker=random`: i.i.d. uniform scores — the lower bound that shows whether a ranking carries signal."""

from __future__ import annotations

import torch
from torch import Tensor

from purld.ranking.base import Ranker, RankingContext
from purld.types import Candidates, PromptBatch


class RandomRanker(Ranker):
    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def score(self, batch: PromptBatch, candidates: Candidates, context: RankingContext) -> Tensor:
        B, K = candidates.completion_ids.shape[:2]
        return torch.rand((B, K), generator=self.generator).to(candidates.completion_ids.device)
