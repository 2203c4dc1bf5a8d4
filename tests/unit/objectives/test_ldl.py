import math

import pytest
import torch

from purld.objectives.ldl import ldl_loss


def test_uniform_policy_by_hand():
    """π_θ = π_ref ⇒ p = (½, ½); q = (¾, ¼): KL = ¾·log(3/2) + ¼·log(1/2) = 0.130812."""
    zeros = torch.zeros(1, 2)
    out = ldl_loss(zeros, zeros, torch.ones(1, 2), torch.tensor([[0.75, 0.25]]), beta=1.0)
    assert out.loss.item() == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), abs=1e-6)
    assert out.loss.item() == pytest.approx(0.130812, abs=1e-5)


def test_zero_when_distributions_match():
    """β(ℓθ − ℓref)/|y| = (2/2, 0/1) = (1, 0) ⇒ p = (e, 1)/(e + 1); with q = p the KL is 0."""
    p = torch.tensor([[math.e, 1.0]]) / (math.e + 1)
    out = ldl_loss(torch.tensor([[2.0, 0.0]]), torch.zeros(1, 2), torch.tensor([[2, 1]]), p, beta=1.0)
    assert out.loss.item() == pytest.approx(0.0, abs=1e-6)
    assert out.metrics["top1_agreement"].item() == 1.0


def test_gradient_is_p_minus_q_over_length():
    """∂KL/∂ℓθ_k = β (p_k − q_k) / |y_k|: at p = (½, ½), q = (¾, ¼), β = 2, |y| = (1, 4): (−0.5, 0.125)."""
    logps = torch.zeros(1, 2, requires_grad=True)
    ldl_loss(logps, torch.zeros(1, 2), torch.tensor([[1, 4]]), torch.tensor([[0.75, 0.25]]), beta=2.0).loss.backward()
    assert torch.allclose(logps.grad, torch.tensor([[-0.5, 0.125]]))


def test_zero_target_mass_is_finite():
    out = ldl_loss(torch.zeros(1, 3), torch.zeros(1, 3), torch.ones(1, 3), torch.tensor([[1.0, 0.0, 0.0]]), beta=1.0)
    assert out.loss.item() == pytest.approx(math.log(3), abs=1e-6)  # −log(1/3)
