"""`ranker=oracle`: the task's graded ground truth. Upper-bound baselines only.

PU-RLD never trains on it: the config check refuses it for training unless
`ranker.baseline=true` says the run is a baseline.
"""

from __future__ import annotations

from torch import Tensor

from purld.ranking.base import Ranker, RankingContext, scores_from_lists
from purld.types import Candidates, PromptBatch


class OracleRanker(Ranker):
    name = "oracle"
    uses_ground_truth = True

    def __init__(self, baseline: bool = False) -> None:
        self.baseline = baseline

    def score(self, batch: PromptBatch, candidates: Candidates, context: RankingContext) -> Tensor:
        values = [
            [context.task.oracle_score(example, text) for text in row]
            for example, row in zip(batch.examples, candidates.texts)
        ]
        return scores_from_lists(values, candidates.completion_ids)
