import math

import pytest
import torch

from purld.ranking.diagnostics import kendall_tau_b, mass_on_correct, top1_oracle_accuracy


def test_kendall_tau_extremes():
    scores = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    assert kendall_tau_b(scores, torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])).item() == pytest.approx(0.0)
    assert kendall_tau_b(scores[:1], scores[:1]).item() == pytest.approx(1.0)


def test_kendall_tau_b_with_ties_by_hand():
    """scores (1, 2, 3), oracle (0, 0, 1): pairs (0,1) tied in oracle, (0,2), (1,2) concordant.

    τ_b = 2 / sqrt(3 · 2) = 0.816497.
    """
    value = kendall_tau_b(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[0.0, 0.0, 1.0]]))
    assert value.item() == pytest.approx(2 / math.sqrt(6), abs=1e-6)


def test_kendall_tau_skips_all_tied_groups():
    assert math.isnan(kendall_tau_b(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 1.0]])).item())


def test_top1_and_mass():
    scores = torch.tensor([[0.1, 0.9], [0.8, 0.2]])
    correct = torch.tensor([[False, True], [False, True]])
    assert top1_oracle_accuracy(scores, correct).item() == 0.5
    assert mass_on_correct(torch.tensor([[0.25, 0.75], [0.5, 0.5]]), correct).item() == pytest.approx(0.625)
