"""Length-controlled win rate, in the manner of AlpacaEval 2 (Dubois et al., 2024).

A judge that prefers longer answers rewards a policy for growing them. The
length-controlled win rate asks what the win rate would be at no length
difference: a logistic regression of each example's preference on the length
difference, read at zero,

    logit P(answer beats anchor) = θ + φ · tanh(Δ / σ_Δ),    Δ = |answer| − |anchor| (tokens),
    win_rate_lc = sigmoid(θ),

fitted on the soft preferences (1, ½, 0) by Newton's method, with a small L2
penalty so that a set the lengths separate (every longer answer won) still gives
a finite fit. AlpacaEval's own model also has a per-instruction difficulty term,
which needs many models judged on the same instructions; with one policy against
one anchor it is this two-parameter model.
"""

from __future__ import annotations

import torch
from torch import Tensor

L2 = 1e-3  # on θ and φ, per example


def length_controlled_win_rate(preferences: Tensor, length_differences: Tensor, iterations: int = 50) -> float:
    """preferences (N,) in [0, 1], length_differences (N,) → the fitted win rate at Δ = 0, a float in (0, 1)."""
    y = preferences.double().flatten()
    delta = length_differences.double().flatten()
    if y.numel() != delta.numel() or y.numel() == 0:
        raise ValueError(f"need as many preferences as length differences, at least one (got {y.numel()}, {delta.numel()})")
    scale = delta.std(correction=0)
    x = torch.tanh(delta / scale) if scale > 0 else torch.zeros_like(delta)
    features = torch.stack([torch.ones_like(x), x], dim=1)  # (N, 2)
    weights = torch.zeros(2, dtype=torch.float64)
    penalty = L2 * y.numel() * torch.eye(2, dtype=torch.float64)
    for _ in range(iterations):
        p = torch.sigmoid(features @ weights)
        gradient = features.T @ (p - y) + penalty @ weights
        hessian = features.T @ (features * (p * (1 - p))[:, None]) + penalty
        step = torch.linalg.solve(hessian, gradient)
        weights -= step
        if step.abs().max() < 1e-10:
            break
    return float(torch.sigmoid(weights[0]))
