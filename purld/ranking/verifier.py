"""`ranker=verifier`: 1 when a candidate's final answer equals the anchor's, else 0.

Uses the task's answer extraction (e.g. the number after `ans=`); it compares
with the anchor, not with ground truth, so it is a legitimate PU-RLD signal.
"""

from __future__ import annotations

from torch import Tensor

from purld.ranking.base import Ranker, RankingContext, scores_from_lists
from purld.types import Candidates, PromptBatch


class VerifierRanker(Ranker):
    name = "verifier"

    def score(self, batch: PromptBatch, candidates: Candidates, context: RankingContext) -> Tensor:
        extract = context.task.extract_answer
        values = []
        for anchor, row in zip(batch.anchors, candidates.texts):
            target = extract(anchor)
            values.append([float(target is not None and extract(text) == target) for text in row])
        return scores_from_lists(values, candidates.completion_ids)
