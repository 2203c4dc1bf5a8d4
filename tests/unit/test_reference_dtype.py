"""Under mixed precision the frozen reference keeps its Linear weights in the autocast dtype: the same log-probs in
half the memory."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.plugins.precision import FSDPPrecision, MixedPrecision, Precision

from purld.modules.base import PolicyModule, store_linear_weights_in
from purld.objectives.grpo import GRPOObjective
from purld.rollout import completion_token_logps
from purld.students.tiny import TinyLlamaStudent


def _module(precision):
    model, tokenizer = TinyLlamaStudent(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64).load()
    module = PolicyModule(model, tokenizer, GRPOObjective(), optimizer=torch.optim.AdamW, reference_model=copy.deepcopy(model))
    module._trainer = SimpleNamespace(precision_plugin=precision)
    return module, tokenizer


def _inputs(tokenizer):
    prompts = tokenizer(["12+5=", "999+1="], padding=True, padding_side="left", add_special_tokens=False, return_tensors="pt")
    completions = tokenizer(["17", "1000", "3", "99"], padding=True, padding_side="right", add_special_tokens=False, return_tensors="pt")
    return prompts["input_ids"], prompts["attention_mask"].bool(), completions["input_ids"], completions["attention_mask"].bool()


@pytest.mark.parametrize(("precision", "dtype"), [("bf16-mixed", torch.bfloat16), ("16-mixed", torch.float16)])
def test_mixed_precision_keeps_the_reference_linears_in_the_autocast_dtype_with_the_same_log_probs(precision, dtype):
    module, tokenizer = _module(MixedPrecision(precision, "cpu"))
    inputs = _inputs(tokenizer)
    with torch.autocast("cpu", dtype=dtype, cache_enabled=False):
        before = completion_token_logps(module.reference, *inputs)
    module.setup("fit")
    with torch.autocast("cpu", dtype=dtype, cache_enabled=False):
        after = completion_token_logps(module.reference, *inputs)
    assert torch.equal(before, after)
    reference = module.reference
    assert reference.model.layers[0].mlp.gate_proj.weight.dtype == dtype
    assert reference.model.layers[0].self_attn.q_proj.weight.dtype == dtype
    # The embedding, its tied output head, and the norms keep float32; the policy is untouched.
    assert reference.lm_head.weight is reference.model.embed_tokens.weight
    assert reference.lm_head.weight.dtype == reference.model.norm.weight.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in module.policy.parameters())


@pytest.mark.parametrize("precision", [Precision(), FSDPPrecision("bf16-mixed")], ids=["32-true", "fsdp-bf16-mixed"])
def test_other_precisions_leave_the_reference_as_it_is(precision):
    module, _ = _module(precision)
    module.setup("fit")
    assert all(p.dtype == torch.float32 for p in module.reference.parameters())


def test_an_untied_output_head_is_converted_with_the_other_linears():
    model, _ = TinyLlamaStudent(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).load()
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())  # untie
    assert store_linear_weights_in(model, torch.bfloat16) == 7 + 1
    assert model.lm_head.weight.dtype == torch.bfloat16 and model.model.embed_tokens.weight.dtype == torch.float32
