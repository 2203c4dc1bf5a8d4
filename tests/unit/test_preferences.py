import pytest
import torch

from purld.preferences import AllOrdered, AnchorVsWorst, BestVsWorst, GroupTargetBuilder, group_targets


def test_best_vs_worst_drops_all_tied_groups():
    pairs = BestVsWorst()(torch.tensor([[0.2, 0.9, 0.1], [0.5, 0.5, 0.5]]))
    assert pairs.prompt_index.tolist() == [0]
    assert pairs.chosen_index.tolist() == [1] and pairs.rejected_index.tolist() == [2]
    assert pairs.score_margin.tolist() == pytest.approx([0.8])


def test_best_vs_worst_min_margin():
    assert len(BestVsWorst(min_margin=0.5)(torch.tensor([[0.2, 0.6]]))) == 0


def test_all_ordered_drops_near_ties():
    """Scores (1.0, 0.98, 0.0) with δ = 0.05: (0 ≻ 2) and (1 ≻ 2) kept; (0, 1) differ by 0.02 < δ."""
    pairs = AllOrdered(margin=0.05)(torch.tensor([[1.0, 0.98, 0.0]]))
    assert sorted(zip(pairs.chosen_index.tolist(), pairs.rejected_index.tolist())) == [(0, 2), (1, 2)]


def test_all_ordered_every_strict_pair_without_margin():
    pairs = AllOrdered(margin=0.0)(torch.tensor([[3.0, 2.0, 1.0, 1.0]]))
    assert len(pairs) == 5  # 3>2, 3>1, 3>1, 2>1, 2>1; the tie (1, 1) is dropped


def test_anchor_vs_worst_uses_index_k_for_the_anchor():
    pairs = AnchorVsWorst()(torch.tensor([[0.3, 0.1, 0.2], [0.0, 0.5, 0.4]]))
    assert pairs.chosen_index.tolist() == [3, 3]
    assert pairs.rejected_index.tolist() == [1, 0]


def test_group_targets_by_hand():
    """s = (0, ln 3), τ = 1 ⇒ q = (¼, ¾); A = (q − ½) / std, std = 0.353553 ⇒ A ≈ (−0.7071, 0.7071)."""
    targets = group_targets(torch.tensor([[0.0, torch.log(torch.tensor(3.0)).item()]]), temperature=1.0, eps=0.0)
    assert targets.label_distribution.tolist()[0] == pytest.approx([0.25, 0.75])
    assert targets.advantages.tolist()[0] == pytest.approx([-0.70710678, 0.70710678], abs=1e-5)


def test_advantages_sum_to_zero_per_group():
    scores = torch.randn(4, 8)
    for scale in ("group", "batch", "none"):
        assert torch.allclose(group_targets(scores, 0.5, scale).advantages.sum(1), torch.zeros(4), atol=1e-5)


def test_smaller_temperature_concentrates_q():
    scores = torch.tensor([[1.0, 0.9, 0.2, 0.0]])
    sharp = group_targets(scores, temperature=0.05).label_distribution
    flat = group_targets(scores, temperature=5.0).label_distribution
    assert sharp[0, 0] > 0.85 > flat[0, 0]


def test_scale_rewards_by_hand():
    """s = ((0, ln 3), (ln 3, ln 3)), τ = 1 ⇒ q = ((¼, ¾), (½, ½)), centred ((−¼, ¼), (0, 0)).
    none: as centred. group: row 0's std = ½/√2 ⇒ ±0.70711; row 1's is 0 ⇒ 0. batch: std of (¼, ¾, ½, ½) =
    √(0.125 / 3) = 0.204124 ⇒ ±1.224745. A rank's other rewards (½, ½) under DDP: std of the six = √(0.125 / 5)
    = 0.158114 ⇒ ±1.581139."""
    ln3 = torch.log(torch.tensor(3.0)).item()
    scores = torch.tensor([[0.0, ln3], [ln3, ln3]])

    def advantages(scale, **kwargs):
        return group_targets(scores, 1.0, scale, **kwargs).advantages.tolist()

    assert advantages("none") == [pytest.approx([-0.25, 0.25]), pytest.approx([0.0, 0.0])]
    assert advantages("group") == [pytest.approx([-0.70711, 0.70711], abs=1e-3), pytest.approx([0.0, 0.0])]
    assert advantages("batch") == [pytest.approx([-1.224745, 1.224745], abs=1e-3), pytest.approx([0.0, 0.0])]
    other_rank = torch.tensor([[0.5, 0.5]])
    gathered = advantages("batch", gather=lambda rewards: torch.cat([rewards, other_rank]))
    assert gathered == [pytest.approx([-1.581139, 1.581139], abs=1e-3), pytest.approx([0.0, 0.0])]


def test_unknown_scale_rewards():
    with pytest.raises(ValueError, match="group, batch, none"):
        GroupTargetBuilder(scale_rewards="max")
