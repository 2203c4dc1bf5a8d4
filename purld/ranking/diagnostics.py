"""How good is the induced signal? Measured against the oracle, never trained on.

All inputs (B, K); the `*_per_prompt` functions return (B,), the others their means over prompts.
"""

from __future__ import annotations

import torch
from torch import Tensor

from purld.tasks.base import Task
from purld.types import Candidates, PromptBatch


def kendall_tau_b_per_prompt(scores: Tensor, oracle: Tensor) -> Tensor:
    """(B,) Kendall's τ_b between ranker scores and oracle scores, per prompt.

    τ_b = (C − D) / sqrt((n0 − n_s)(n0 − n_o)), over the K(K−1)/2 pairs of a
    prompt; n_s, n_o count pairs tied in scores / in oracle. NaN for a prompt
    where either side is all ties (no τ is defined there).
    """
    sign_scores = torch.sign(scores[:, :, None] - scores[:, None, :])  # (B, K, K)
    sign_oracle = torch.sign(oracle[:, :, None] - oracle[:, None, :])
    upper = torch.triu(torch.ones_like(sign_scores[0], dtype=torch.bool), diagonal=1)
    concordance = (sign_scores * sign_oracle)[:, upper].sum(-1).float()  # C − D
    untied_scores = (sign_scores != 0)[:, upper].sum(-1).float()
    untied_oracle = (sign_oracle != 0)[:, upper].sum(-1).float()
    denominator = torch.sqrt(untied_scores * untied_oracle)
    return torch.where(denominator > 0, concordance / denominator, torch.full_like(denominator, float("nan")))


def kendall_tau_b(scores: Tensor, oracle: Tensor) -> Tensor:
    """Mean over the prompts where τ_b is defined (`kendall_tau_b_per_prompt`); NaN if it is defined on none."""
    taus = kendall_tau_b_per_prompt(scores, oracle)
    defined = ~taus.isnan()
    return taus[defined].mean() if defined.any() else torch.tensor(float("nan"))


def top1_correct_per_prompt(scores: Tensor, oracle_correct: Tensor) -> Tensor:
    """(B,) 1.0 where the top-scored candidate (the first, among tied ones) is oracle-correct."""
    return oracle_correct.gather(1, scores.argmax(dim=1, keepdim=True)).squeeze(1).float()


def top1_oracle_accuracy(scores: Tensor, oracle_correct: Tensor) -> Tensor:
    """Fraction of prompts whose top-scored candidate is oracle-correct."""
    return top1_correct_per_prompt(scores, oracle_correct).mean()


def mass_on_correct_per_prompt(label_distribution: Tensor, oracle_correct: Tensor) -> Tensor:
    """(B,) Σ_k q_k·[y_k correct]: how much of a prompt's q sits on its correct candidates."""
    return (label_distribution * oracle_correct.float()).sum(-1)


def mass_on_correct(label_distribution: Tensor, oracle_correct: Tensor) -> Tensor:
    """Mean over prompts of Σ_k q_k·[y_k correct]."""
    return mass_on_correct_per_prompt(label_distribution, oracle_correct).mean()


def oracle_scores(task: Task, batch: PromptBatch, candidates: Candidates) -> Tensor | None:
    """(B, K) the task's oracle score of every candidate (≥ 1 is correct); None when the task has no oracle."""
    if not task.has_oracle:
        return None
    return torch.tensor([[task.oracle_score(example, text) for text in row] for example, row in zip(batch.examples, candidates.texts)])


def oracle_diagnostics(oracle: Tensor | None, scores: Tensor, label_distribution: Tensor | None) -> dict[str, Tensor]:
    """`rank/*` signal-quality metrics of a step's (B, K) scores against its (B, K) `oracle_scores` (empty when the
    task has none); `label_distribution`: the step's q (B, K), where the objective makes one.

    The same keys every step, NaN where a figure is undefined (Kendall τ on a step where no prompt's candidates mix
    right and wrong): under DDP every rank then logs the same keys, and a mean over steps can leave out, and count,
    the steps where it was undefined (`StepMeans`, `read_curves`)."""
    if oracle is None:
        return {}
    oracle = oracle.to(scores.device)
    correct = oracle >= 1.0
    metrics = {
        "rollout/oracle_accuracy": correct.float().mean(),
        "rank/kendall_tau": kendall_tau_b(scores, oracle),
        "rank/top1_oracle_accuracy": top1_oracle_accuracy(scores, correct),
    }
    if label_distribution is not None:
        metrics["rank/q_mass_on_correct"] = mass_on_correct(label_distribution, correct)
    return metrics
