"""`data.micro_batch_size`: the update run a few sequences at a time gives the same loss, metrics and gradients."""

import copy

import pytest
import torch

from purld.modules import module_for
from purld.objectives import DPOObjective, GRPOObjective, LDLObjective, LossOutput, SFTObjective
from purld.rollout import Sampler
from purld.students import TinyLlamaStudent

K = 3


@pytest.fixture
def setup(task, make_batch, tmp_path):
    model, tokenizer = TinyLlamaStudent(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64).load()
    reference = copy.deepcopy(model).requires_grad_(False)
    batch = make_batch(task, tmp_path, size=4)
    sampler = Sampler(num_candidates=K, max_new_tokens=6, temperature=0.7)
    torch.manual_seed(0)
    rollout = sampler.sample(model, tokenizer, batch)
    with torch.no_grad():  # the policy moves away from the sampler and the reference: ratios ≠ 1, KL > 0, clipping
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    scores = torch.randn(len(batch), K, generator=torch.Generator().manual_seed(1))
    return model, tokenizer, reference, sampler, batch, rollout, scores


def loss_and_gradients(module, step, micro_batch_size):
    module.micro_batch_size = micro_batch_size
    module.policy.zero_grad()
    out = step()
    (0.5 * out.loss).backward()  # an incoming gradient ≠ 1, as Lightning's loss scaling or accumulation gives
    return out, [p.grad.clone() for p in module.policy.parameters()]


def assert_same(full, micro):
    (out_full, grads_full), (out_micro, grads_micro) = full, micro
    assert torch.allclose(out_full.loss, out_micro.loss, atol=1e-6)
    assert out_full.metrics.keys() == out_micro.metrics.keys()
    for name in out_full.metrics:
        assert torch.allclose(out_full.metrics[name], out_micro.metrics[name], atol=1e-6), name
    assert any(g.abs().max() > 0 for g in grads_full)
    for a, b in zip(grads_micro, grads_full):
        assert (a - b).abs().max() <= 1e-5 * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dapo", "dr_grpo"])
@pytest.mark.parametrize("micro_batch_size", [1, K, 2 * K + 1])
def test_grpo_step(setup, loss_type, micro_batch_size):
    model, tokenizer, reference, sampler, batch, rollout, scores = setup
    objective = GRPOObjective(beta=0.1, loss_type=loss_type, max_completion_length=6)
    module = module_for(objective, model=model, tokenizer=tokenizer, optimizer=None, sampler=sampler, reference_model=reference)
    advantages = objective.preferences(scores).advantages

    def step():
        return module.grpo_step(batch, rollout, advantages)

    full = loss_and_gradients(module, step, None)
    assert full[0].metrics["clip_ratio/region_mean"] > 0  # the clipped branch is exercised too
    assert_same(full, loss_and_gradients(module, step, micro_batch_size))


def test_ldl_step(setup):
    model, tokenizer, reference, sampler, batch, rollout, scores = setup
    objective = LDLObjective(beta=1.0)
    module = module_for(objective, model=model, tokenizer=tokenizer, optimizer=None, sampler=sampler, reference_model=reference)
    targets = objective.preferences(scores).label_distribution

    def step():
        return module.ldl_step(batch, rollout, targets)

    assert_same(loss_and_gradients(module, step, None), loss_and_gradients(module, step, K))


@pytest.mark.parametrize("micro_batch_size", [1, 2, 5])
def test_dpo_step(setup, micro_batch_size):
    model, tokenizer, reference, sampler, batch, rollout, scores = setup
    objective = DPOObjective(beta=0.1)
    module = module_for(objective, model=model, tokenizer=tokenizer, optimizer=None, sampler=sampler, reference_model=reference)
    pairs = objective.preferences(scores)
    assert len(pairs) >= 2

    def step():
        return module.dpo_step(batch, rollout, pairs)

    assert_same(loss_and_gradients(module, step, None), loss_and_gradients(module, step, micro_batch_size))


def test_sft_step(setup):
    model, tokenizer, _, _, batch, _, _ = setup
    module = module_for(SFTObjective(), model=model, tokenizer=tokenizer, optimizer=None)
    module.log_metrics = lambda *args, **kwargs: None  # no Trainer to log to

    def step():
        return LossOutput(module.training_step(batch, 0))

    assert_same(loss_and_gradients(module, step, None), loss_and_gradients(module, step, 3))


@pytest.mark.parametrize("bad", [0, -2, True])
def test_bad_micro_batch_size_names_the_key(student, bad):
    model, tokenizer = student
    with pytest.raises(ValueError, match="data.micro_batch_size"):
        module_for(SFTObjective(), model=model, tokenizer=tokenizer, optimizer=None, micro_batch_size=bad)


@pytest.mark.parametrize("micro_batch_size", [None, K])
def test_dpo_all_ordered_reads_each_distinct_sequence_once(setup, micro_batch_size):
    """K = 3, all_ordered: 3 pairs a prompt over 3 distinct sequences, so 3 rows a prompt instead of 6; the loss
    is the one computed pair by pair."""
    from purld.modules.pairwise import candidate_pool
    from purld.preferences import AllOrdered
    from purld.rollout import completion_token_logps

    model, tokenizer, reference, sampler, batch, rollout, scores = setup
    objective = DPOObjective(beta=0.1, preferences=AllOrdered(margin=0.0))
    module = module_for(objective, model=model, tokenizer=tokenizer, optimizer=None, sampler=sampler, reference_model=reference,
                        micro_batch_size=micro_batch_size)
    pairs = objective.preferences(scores)
    assert len(pairs) == 3 * len(batch)
    rows_read: list[int] = []
    policy_token_logps = module.policy_token_logps
    module.policy_token_logps = lambda *inputs, **kwargs: (rows_read.append(inputs[2].shape[0]), policy_token_logps(*inputs, **kwargs))[1]
    out = module.dpo_step(batch, rollout, pairs)
    assert sum(rows_read) == len(batch) * K

    pool_ids, pool_mask = candidate_pool(batch, rollout, tokenizer.pad_token_id)

    def logp(net, prompt: int, index: int):
        mask = pool_mask[prompt, index][None]
        token_logps = completion_token_logps(net, batch.prompt_ids[prompt : prompt + 1], batch.prompt_mask[prompt : prompt + 1],
                                             pool_ids[prompt, index][None], mask)
        return (token_logps * mask).sum()

    triples = list(zip(pairs.prompt_index.tolist(), pairs.chosen_index.tolist(), pairs.rejected_index.tolist()))
    with torch.no_grad():
        policy_chosen, policy_rejected, ref_chosen, ref_rejected = (
            torch.stack([logp(net, p, c if side == "chosen" else r) for p, c, r in triples])
            for net in (model, reference) for side in ("chosen", "rejected")
        )
        expected = objective(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    assert torch.allclose(out.loss, expected.loss, atol=1e-5)
