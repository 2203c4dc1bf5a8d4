"""purld.ranking.signal: the figures purld-signal reports, by hand."""

from __future__ import annotations

import math

import pytest
import torch

from purld.ranking.diagnostics import kendall_tau_b, kendall_tau_b_per_prompt
from purld.ranking.signal import bootstrap_mean, chance, signal_quality


def test_bootstrap_mean_leaves_undefined_prompts_out_and_brackets_the_mean():
    values = torch.tensor([0.0, 1.0, float("nan"), 1.0, 0.0, 1.0])
    figure = bootstrap_mean(values, num_resamples=2000, seed=1)
    assert figure["n"] == 5 and figure["mean"] == pytest.approx(0.6)
    assert 0.0 <= figure["low"] < 0.6 < figure["high"] <= 1.0
    constant = bootstrap_mean(torch.full((7,), 0.25))
    assert (constant["low"], constant["mean"], constant["high"]) == pytest.approx((0.25, 0.25, 0.25))
    nothing = bootstrap_mean(torch.tensor([float("nan")]))
    assert nothing["n"] == 0 and math.isnan(nothing["mean"])


def test_the_interval_narrows_with_more_prompts():
    few = bootstrap_mean(torch.tensor([0.0, 1.0] * 5), seed=0)
    many = bootstrap_mean(torch.tensor([0.0, 1.0] * 500), seed=0)
    assert many["high"] - many["low"] < (few["high"] - few["low"]) / 5


def test_signal_quality_by_hand():
    """q = softmax((2, 0, 0)) = (e², 1, 1)/(e² + 2) on prompts 0 and 1.
    Prompt 0: the scores order the oracle (τ 1), top-1 right, q mass e²/(e² + 2) on the one correct candidate.
    Prompt 1: the reverse (τ −1), top-1 wrong, q mass 2/(e² + 2) on its two correct ones.
    Prompt 2: every candidate wrong: τ undefined, top-1 wrong, q mass 0."""
    scores = torch.tensor([[2.0, 0.0, 0.0], [2.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    oracle = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    taus = kendall_tau_b_per_prompt(scores, oracle)
    assert taus[:2].tolist() == pytest.approx([1.0, -1.0]) and math.isnan(taus[2])
    assert kendall_tau_b(scores, oracle).item() == pytest.approx(0.0)
    figures = signal_quality(scores, oracle, temperature=1.0, num_resamples=200)
    assert figures["kendall_tau"]["n"] == 2 and figures["kendall_tau"]["mean"] == pytest.approx(0.0)
    assert figures["top1_oracle_accuracy"]["mean"] == pytest.approx(1 / 3)
    e2 = math.exp(2)
    assert figures["q_mass_on_correct"]["mean"] == pytest.approx((e2 / (e2 + 2) + 2 / (e2 + 2) + 0.0) / 3)
    assert chance(oracle)["mean"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)


def test_a_lower_temperature_concentrates_q_on_the_top_candidate():
    scores, oracle = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]])
    warm = signal_quality(scores, oracle, temperature=1.0, num_resamples=10)["q_mass_on_correct"]["mean"]
    cold = signal_quality(scores, oracle, temperature=0.1, num_resamples=10)["q_mass_on_correct"]["mean"]
    assert warm == pytest.approx(math.e / (math.e + 1)) and cold > 0.99
