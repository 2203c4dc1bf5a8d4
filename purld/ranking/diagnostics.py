"""How good is the induced signal? Measured against the oracle, never trained on.

All inputs (B, K); functions return scalars averaged over prompts.
"""

from __future__ import annotations

import torch
from torch import Tensor


def kendall_tau_b(scores: Tensor, oracle: Tensor) -> Tensor:
    """Mean over prompts of Kendall's τ_b between ranker scores and oracle scores.

    τ_b = (C − D) / sqrt((n0 − n_s)(n0 − n_o)), over the K(K−1)/2 pairs of a
    prompt; n_s, n_o count pairs tied in scores / in oracle. Prompts where
    either side is all ties have no τ and are left out; NaN if none is left.
    """
    sign_scores = torch.sign(scores[:, :, None] - scores[:, None, :])  # (B, K, K)
    sign_oracle = torch.sign(oracle[:, :, None] - oracle[:, None, :])
    upper = torch.triu(torch.ones_like(sign_scores[0], dtype=torch.bool), diagonal=1)
    concordance = (sign_scores * sign_oracle)[:, upper].sum(-1)  # C − D
    untied_scores = (sign_scores != 0)[:, upper].sum(-1).float()
    untied_oracle = (sign_oracle != 0)[:, upper].sum(-1).float()
    denominator = torch.sqrt(untied_scores * untied_oracle)
    valid = denominator > 0
    if not valid.any():
        return torch.tensor(float("nan"))
    return (concordance[valid] / denominator[valid]).mean()


def top1_oracle_accuracy(scores: Tensor, oracle_correct: Tensor) -> Tensor:
    """Fraction of prompts whose top-scored candidate is oracle-correct."""
    top = scores.argmax(dim=1, keepdim=True)
    return oracle_correct.gather(1, top).float().mean()


def mass_on_correct(label_distribution: Tensor, oracle_correct: Tensor) -> Tensor:
    """Mean over prompts of Σ_k q_k·[y_k correct]: how much of q sits on correct candidates."""
    return (label_distribution * oracle_correct.float()).sum(-1).mean()
