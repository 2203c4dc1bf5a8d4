"""`ranker=lexical`: ROUGE-L F-measure between each candidate and the anchor.

Units are characters (`unit: char`, right for short formal answers such as
arithmetic) or words (`unit: word`, split on whitespace and punctuation).
"""

from __future__ import annotations

import re

from torch import Tensor

from purld.ranking.base import Ranker, RankingContext, scores_from_lists
from purld.types import Candidates, PromptBatch

_WORD = re.compile(r"\w+|[^\w\s]")


def longest_common_subsequence(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(candidate: list[str], reference: list[str], beta: float = 1.0) -> float:
    """F_β of LCS precision |LCS|/|candidate| and recall |LCS|/|reference|; 0 when either is empty."""
    if not candidate or not reference:
        return 0.0
    lcs = longest_common_subsequence(candidate, reference)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(candidate), lcs / len(reference)
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


class LexicalRanker(Ranker):
    name = "lexical"

    def __init__(self, unit: str = "char", beta: float = 1.0) -> None:
        if unit not in ("char", "word"):
            raise ValueError(f"ranker.unit={unit!r}: allowed values are 'char', 'word'")
        self.unit, self.beta = unit, beta

    def units(self, text: str) -> list[str]:
        return list(text.strip()) if self.unit == "char" else _WORD.findall(text.lower())

    def score(self, batch: PromptBatch, candidates: Candidates, context: RankingContext) -> Tensor:
        values = []
        for anchor, row in zip(batch.anchors, candidates.texts):
            reference = self.units(anchor)
            values.append([rouge_l(self.units(text), reference, self.beta) for text in row])
        return scores_from_lists(values, candidates.completion_ids)
