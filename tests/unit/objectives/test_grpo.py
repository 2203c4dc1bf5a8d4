import math

import pytest
import torch

from purld.objectives.grpo import GRPOObjective, grpo_loss

# Two completions of two tokens; the second has one active token.
MASK = torch.tensor([[True, True], [True, False]])
ADVANTAGES = torch.tensor([1.0, -1.0])


def on_policy_loss(loss_type, **kwargs):
    logps = torch.full((2, 2), math.log(0.5))
    return grpo_loss(logps, logps, ADVANTAGES, MASK, beta=0.0, loss_type=loss_type, **kwargs).loss.item()


def test_normalisations_by_hand():
    """On-policy (ρ = 1), β = 0: per-token loss = −A ⇒ [[−1, −1], [+1, ·]].

    grpo:    mean of per-sequence means = mean(−1, +1) = 0
    bnpo:    (−1 − 1 + 1) / 3 active tokens = −1/3
    dapo:    same sum over a given global count of 6 tokens = −1/6
    dr_grpo: −1 / (2 sequences · max_completion_length 4) = −1/8
    """
    assert on_policy_loss("grpo") == pytest.approx(0.0, abs=1e-7)
    assert on_policy_loss("bnpo") == pytest.approx(-1 / 3)
    assert on_policy_loss("dapo") == pytest.approx(-1 / 3)
    assert on_policy_loss("dapo", num_active_tokens=6.0) == pytest.approx(-1 / 6)
    assert on_policy_loss("dr_grpo", max_completion_length=4) == pytest.approx(-1 / 8)


def test_k3_kl_by_hand():
    """π = 0.5, π_ref = 0.25 on every token: KL = e^{log 0.5} − log 0.5 − 1 = 0.5 + 0.693147 − 1 = 0.193147.

    With A = 0 the loss is β·KL averaged over active tokens (bnpo): 0.1 · 0.193147.
    """
    logps = torch.full((2, 2), math.log(0.5))
    ref = torch.full((2, 2), math.log(0.25))
    out = grpo_loss(logps, logps, torch.zeros(2), MASK, ref, beta=0.1, loss_type="bnpo")
    assert out.metrics["kl"].item() == pytest.approx(0.193147, abs=1e-6)
    assert out.loss.item() == pytest.approx(0.0193147, abs=1e-6)


def test_clipping_by_hand():
    """ρ = 1.5 everywhere, ε = 0.2: A = +1 ⇒ −min(1.5, 1.2) = −1.2 (clipped); A = −1 ⇒ −min(−1.5, −1.2) = 1.5.

    bnpo: (−1.2 − 1.2 + 1.5) / 3 = −0.3; clipped tokens: the two of the first completion = 2/3.
    """
    old = torch.zeros(2, 2)
    logps = torch.full((2, 2), math.log(1.5))
    out = grpo_loss(logps, old, ADVANTAGES, MASK, beta=0.0, loss_type="bnpo")
    assert out.loss.item() == pytest.approx(-0.3, abs=1e-6)
    assert out.metrics["clip_ratio/high_mean"].item() == pytest.approx(2 / 3)
    assert out.metrics["clip_ratio/low_mean"].item() == 0.0


def test_sampling_logp_gap_by_hand():
    """ℓθ − ℓold = [[0.1, −0.3], [0.2, 5.0]]; the last token is masked: mean (0.1 + 0.3 + 0.2) / 3, max 0.3."""
    old = torch.zeros(2, 2)
    logps = torch.tensor([[0.1, -0.3], [0.2, 5.0]])
    out = grpo_loss(logps, old, ADVANTAGES, MASK, beta=0.0, loss_type="bnpo")
    assert out.metrics["sampling_logp_gap/mean"].item() == pytest.approx(0.2, abs=1e-6)
    assert out.metrics["sampling_logp_gap/max"].item() == pytest.approx(0.3, abs=1e-6)


def test_on_policy_gradient_is_policy_gradient():
    """ρ = 1 in value, so ∂L/∂ℓθ_t = −A_i / (number of active tokens) under bnpo."""
    logps = torch.full((2, 2), -0.7, requires_grad=True)
    grpo_loss(logps, logps.detach(), ADVANTAGES, MASK, beta=0.0, loss_type="bnpo").loss.backward()
    assert torch.allclose(logps.grad, torch.tensor([[-1 / 3, -1 / 3], [1 / 3, 0.0]]))


def test_mask_truncated_completions_drops_them():
    logps = torch.zeros(2, 2)
    objective = GRPOObjective(beta=0.0, loss_type="bnpo", mask_truncated_completions=True)
    out = objective(logps, logps, ADVANTAGES, MASK, torch.tensor([False, True]), None)
    assert out.loss.item() == pytest.approx(-1.0)  # only the first completion's two tokens, A = +1


def test_beta_needs_reference():
    with pytest.raises(ValueError, match="ref_per_token_logps"):
        grpo_loss(torch.zeros(2, 2), torch.zeros(2, 2), ADVANTAGES, MASK, None, beta=0.1)
    assert not GRPOObjective(beta=0.0).needs_reference


def test_unknown_loss_type():
    with pytest.raises(ValueError, match="grpo, bnpo, dapo, dr_grpo"):
        GRPOObjective(loss_type="ppo")
