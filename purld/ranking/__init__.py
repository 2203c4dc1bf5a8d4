"""Anchor-conditioned rankers: (prompts, anchors, K candidates) → scores (B, K), higher is better."""

from purld.ranking.base import Ranker, RankingContext
from purld.ranking.embedding import EmbeddingRanker
from purld.ranking.lexical import LexicalRanker
from purld.ranking.likelihood import LikelihoodRanker
from purld.ranking.llm_judge import LLMJudge
from purld.ranking.oracle import OracleRanker
from purld.ranking.random import RandomRanker
from purld.ranking.self_judge import SelfJudgeRanker
from purld.ranking.verifier import VerifierRanker

__all__ = [
    "EmbeddingRanker",
    "LexicalRanker",
    "LLMJudge",
    "LikelihoodRanker",
    "OracleRanker",
    "RandomRanker",
    "Ranker",
    "RankingContext",
    "SelfJudgeRanker",
    "VerifierRanker",
]
