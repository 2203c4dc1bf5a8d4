import math

import pytest
import torch

from purld.objectives.dpo import DPOObjective, dpo_loss

# One pair: ℓθ(y_w) = −1, ℓθ(y_l) = −3, ℓref(y_w) = ℓref(y_l) = −2  ⇒  h = (−1+2) − (−3+2) = 2.
CHOSEN, REJECTED, REF_CHOSEN, REF_REJECTED = (torch.tensor([v]) for v in (-1.0, -3.0, -2.0, -2.0))


def loss_of(beta, loss_type, label_smoothing=0.0):
    return dpo_loss(CHOSEN, REJECTED, REF_CHOSEN, REF_REJECTED, beta, loss_type, label_smoothing).loss.item()


def test_sigmoid_by_hand():
    """β = 0.5 ⇒ βh = 1 ⇒ −log σ(1) = log(1 + e^−1) = 0.313262."""
    assert loss_of(0.5, "sigmoid") == pytest.approx(math.log1p(math.exp(-1)), abs=1e-6)


def test_ipo_by_hand():
    """(h − 1/(2β))² with β = 0.5: (2 − 1)² = 1."""
    assert loss_of(0.5, "ipo") == pytest.approx(1.0, abs=1e-6)


def test_hinge_by_hand():
    """β = 0.25 ⇒ max(0, 1 − 0.5) = 0.5; β = 0.5 ⇒ max(0, 1 − 1) = 0."""
    assert loss_of(0.25, "hinge") == pytest.approx(0.5, abs=1e-6)
    assert loss_of(0.5, "hinge") == pytest.approx(0.0, abs=1e-6)


def test_robust_by_hand():
    """ε = 0.1, βh = 1: (0.9·0.313262 + 0.1·(−1.313262)) / 0.8 = 0.188262."""
    expected = (0.9 * math.log1p(math.exp(-1)) - 0.1 * math.log1p(math.exp(1))) / 0.8
    assert loss_of(0.5, "robust", 0.1) == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.188262, abs=1e-5)


def test_equals_log2_when_policy_is_reference():
    logps = torch.randn(5)
    out = dpo_loss(logps, logps - 1, logps, logps - 1, beta=0.1)
    assert out.loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert out.metrics["rewards/margins"].item() == pytest.approx(0.0, abs=1e-6)


def test_metrics_are_implicit_rewards():
    out = dpo_loss(CHOSEN, REJECTED, REF_CHOSEN, REF_REJECTED, beta=0.5)
    assert out.metrics["rewards/chosen"].item() == pytest.approx(0.5)  # 0.5·(−1 + 2)
    assert out.metrics["rewards/rejected"].item() == pytest.approx(-0.5)  # 0.5·(−3 + 2)
    assert out.metrics["rewards/accuracies"].item() == 1.0


def test_reference_free_uses_zero_reference():
    """h = ℓθ(y_w) − ℓθ(y_l) = 2 ⇒ with β = 0.5 the same 0.313262 as above, whatever the ref."""
    objective = DPOObjective(beta=0.5, reference_free=True)
    out = objective(CHOSEN, REJECTED, torch.tensor([5.0]), torch.tensor([-9.0]))
    assert out.loss.item() == pytest.approx(math.log1p(math.exp(-1)), abs=1e-6)
    assert not objective.needs_reference


def test_gradient_pushes_chosen_up():
    chosen = torch.tensor([-2.0], requires_grad=True)
    rejected = torch.tensor([-2.0], requires_grad=True)
    dpo_loss(chosen, rejected, torch.tensor([-2.0]), torch.tensor([-2.0]), beta=0.1).loss.backward()
    assert chosen.grad.item() == pytest.approx(-0.05)  # −β·σ(0) = −0.05
    assert rejected.grad.item() == pytest.approx(0.05)


def test_unknown_loss_type_names_allowed_values():
    with pytest.raises(ValueError, match="sigmoid, ipo, hinge, robust"):
        DPOObjective(loss_type="kto")
