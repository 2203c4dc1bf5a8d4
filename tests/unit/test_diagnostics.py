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


def test_means_over_steps_count_only_the_steps_where_a_figure_was_defined(tmp_path):
    """Kendall τ is NaN on a step where no group mixes right and wrong: that step must not enter the mean, nor
    repeat the previous step's value."""
    from purld.cli.compare import read_curves
    from purld.modules.base import StepMeans

    means = StepMeans()
    for tau in (0.5, float("nan"), float("nan"), 0.1):
        means.add({"rank/kendall_tau": torch.tensor(tau), "train/loss": 1.0})
    assert means.summary("rank/") == {"rank/kendall_tau": {"mean": pytest.approx(0.3), "steps_defined": 2, "steps": 4}}
    assert StepMeans().summary() == {}
    csv = tmp_path / "metrics.csv"
    csv.write_text("step,rank/kendall_tau\n0,0.5\n1,nan\n2,\n3,0.1\n")
    assert read_curves(csv, ("rank/kendall_tau",))["rank/kendall_tau"] == [(0, 0.5), (3, 0.1)]


def test_oracle_diagnostics_log_the_same_keys_every_step(task, make_batch, tmp_path, student):
    """Under DDP, ranks that log different keys issue different numbers of all-reduces: a hang."""
    from purld.ranking.diagnostics import oracle_diagnostics, oracle_scores
    from purld.rollout.sampler import candidates_from_texts

    _, tokenizer = student
    batch = make_batch(task, tmp_path, size=2)
    all_wrong = candidates_from_texts(tokenizer, [["no", "answer"], ["none", "here"]], "cpu")  # oracle 0 for all: tied
    mixed = candidates_from_texts(tokenizer, [[batch.anchors[0], "ans=2"], ["ans=3", batch.anchors[1]]], "cpu")
    scores = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    undefined = oracle_diagnostics(oracle_scores(task, batch, all_wrong), scores, torch.full((2, 2), 0.5))
    defined = oracle_diagnostics(oracle_scores(task, batch, mixed), scores, torch.full((2, 2), 0.5))
    assert set(undefined) == set(defined)
    assert math.isnan(undefined["rank/kendall_tau"]) and defined["rank/kendall_tau"] == 1.0


def test_under_ddp_a_step_metric_is_the_mean_over_the_ranks_where_it_is_defined():
    """Before: each value was all-reduced as a plain mean, so one rank without a Kendall τ made the global one NaN."""
    from purld.modules.base import mean_over_ranks

    nan = float("nan")
    this_rank = torch.tensor([0.5, nan, nan, 2.0], dtype=torch.float64)
    other_rank = torch.tensor([[0.3, 1.0], [0.7, 1.0], [0.0, 0.0], [4.0, 1.0]], dtype=torch.float64)  # (sum, count): τ, τ, NaN, …
    means = mean_over_ranks(this_rank, lambda totals: totals + other_rank).tolist()
    assert means[0] == pytest.approx(0.4) and means[1] == pytest.approx(0.7) and means[2] != means[2] and means[3] == 3.0
