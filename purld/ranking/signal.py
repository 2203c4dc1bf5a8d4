"""The signal alone: how well a ranker orders a frozen student's samples, against the oracle, before any training.

For N prompts with K candidates each, scores s (N, K) of one ranker and oracle scores o (N, K):

    Kendall τ_b(s_i, o_i)                    order consistency, per prompt (undefined where either side is all ties)
    [y_i,argmax s_i correct]                 top-1 oracle accuracy, per prompt
    Σ_k q_ik [y_ik correct],  q_i = softmax(s_i / τ)    concentration: the label distribution's mass on correct answers

Each is reported as its mean over the prompts where it is defined, with a percentile bootstrap interval over
prompts (the prompts are the unit that was sampled). Chance is the samples' own oracle accuracy: a ranker without
signal has top-1 accuracy and q mass equal to it, and τ near 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from purld.ranking.diagnostics import kendall_tau_b_per_prompt, mass_on_correct_per_prompt, top1_correct_per_prompt


def bootstrap_mean(values: Tensor, num_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Mean of `values` (N,) over its defined (non-NaN) entries and the percentile bootstrap interval of that mean.

    Returns {mean, low, high, n}; NaN figures when no entry is defined."""
    defined = values[~values.isnan()].double()
    n = defined.numel()
    if n == 0:
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    generator = torch.Generator().manual_seed(seed)
    resampled = defined[torch.randint(n, (num_resamples, n), generator=generator)].mean(dim=1)  # (R,)
    tail = (1 - confidence) / 2
    low, high = torch.quantile(resampled, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    return {"mean": defined.mean().item(), "low": low, "high": high, "n": n}


def signal_quality(
    scores: Tensor, oracle: Tensor, temperature: float = 1.0, num_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> dict[str, dict[str, float]]:
    """One ranker's figures on (N, K) `scores` against (N, K) `oracle` scores (correct: oracle ≥ 1)."""
    correct = oracle >= 1.0
    per_prompt = {
        "kendall_tau": kendall_tau_b_per_prompt(scores, oracle),
        "top1_oracle_accuracy": top1_correct_per_prompt(scores, correct),
        "q_mass_on_correct": mass_on_correct_per_prompt((scores / temperature).softmax(dim=1), correct),
    }
    return {name: bootstrap_mean(values, num_resamples, confidence, seed) for name, values in per_prompt.items()}


def chance(oracle: Tensor, num_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict[str, float]:
    """The samples' oracle accuracy, per prompt then pooled: a ranker without signal picks a correct one this often."""
    return bootstrap_mean((oracle >= 1.0).float().mean(dim=1), num_resamples, confidence, seed)
