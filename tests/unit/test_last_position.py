"""`reading_last_position_only`: the last layer runs at the last position only, and the last position's logits,
the KV cache and the gradients are those of the whole forward."""

from __future__ import annotations

import pytest
import torch
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from transformers import DynamicCache

from purld.rollout.last_position import can_read_last_position_only, reading_last_position_only

from .test_decoder import _student, _uneven_prompts


def _forward(model, ids, mask, cache=None):
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    return model(input_ids=ids, attention_mask=mask.long(), position_ids=positions, use_cache=cache is not None,
                 past_key_values=cache, logits_to_keep=1).logits[:, -1]


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("architecture", ["llama", "mistral", "qwen2", "qwen3"])
def test_the_last_logits_and_the_cache_are_the_whole_forwards(architecture, attention):
    model, tokenizer = _student(architecture)
    model.config._attn_implementation = attention
    ids, mask = _uneven_prompts(tokenizer)  # left padding: the last query's mask row matters
    whole_cache, trimmed_cache = DynamicCache(config=model.config), DynamicCache(config=model.config)
    mlp_inputs = []
    last_layer = model.get_decoder().layers[-1]
    hook = last_layer.mlp.register_forward_hook(lambda module, args, output: mlp_inputs.append(args[0].shape))
    with torch.no_grad():
        whole = _forward(model, ids, mask, whole_cache)
        with reading_last_position_only(model):
            trimmed = _forward(model, ids, mask, trimmed_cache)
            # A cached decode step (one position) runs the layer as it is, on top of the trimmed forward's cache.
            next_ids, next_mask = ids[:, -1:], torch.cat([mask, mask[:, -1:]], dim=1)
            positions = next_mask.long().sum(-1, keepdim=True) - 1
            step = model(input_ids=next_ids, attention_mask=next_mask.long(), position_ids=positions,
                         past_key_values=trimmed_cache, use_cache=True).logits[:, -1]
        whole_step = model(input_ids=next_ids, attention_mask=next_mask.long(), position_ids=positions,
                           past_key_values=whole_cache, use_cache=True).logits[:, -1]
    hook.remove()
    assert can_read_last_position_only(model)
    assert mlp_inputs[0] == (3, ids.shape[1], 32) and mlp_inputs[1] == (3, 1, 32)  # the work is gone, not only the output
    assert torch.allclose(trimmed, whole, atol=1e-5)
    for whole_layer, trimmed_layer in zip(whole_cache.layers, trimmed_cache.layers):  # the same ops on the same inputs
        assert torch.equal(trimmed_layer.keys, whole_layer.keys) and torch.equal(trimmed_layer.values, whole_layer.values)
    assert torch.allclose(step, whole_step, atol=1e-5)
    assert "forward" not in vars(last_layer)  # the class's forward again


def test_gradients_through_the_last_position_are_the_whole_forwards():
    model, tokenizer = _student("qwen2")
    ids, mask = _uneven_prompts(tokenizer)
    gradients = []
    for trimmed in (False, True):
        model.zero_grad()
        with reading_last_position_only(model) if trimmed else torch.enable_grad():
            _forward(model, ids, mask).log_softmax(-1)[:, 5].sum().backward()
        gradients.append([p.grad.clone() for p in model.parameters()])
    for whole, trimmed in zip(*gradients):
        assert torch.allclose(trimmed, whole, atol=1e-5)


def test_a_model_it_cannot_run_runs_as_it_is_and_the_layer_is_restored_after_an_error():
    gpt2, tokenizer = _student("gpt2")
    ids, mask = _uneven_prompts(tokenizer)
    assert not can_read_last_position_only(gpt2)
    with torch.no_grad(), reading_last_position_only(gpt2):
        assert torch.isfinite(_forward(gpt2, ids, mask)).all()
    llama, _ = _student("llama")
    llama.config._attn_implementation = "flash_attention_2"  # a (N, S) mask: no rows to slice
    assert not can_read_last_position_only(llama)
    llama.config._attn_implementation = "sdpa"
    layers = llama.get_decoder().layers
    plain_last = layers[-1]
    layers[-1] = checkpoint_wrapper(plain_last)  # as Lightning's FSDP wraps layers: its forward is its own
    assert not can_read_last_position_only(llama)
    layers[-1] = plain_last
    with pytest.raises(RuntimeError, match="inside"), reading_last_position_only(llama):
        raise RuntimeError("inside")
    assert "forward" not in vars(llama.get_decoder().layers[-1])


def test_lora_adapters_apply():
    from peft import LoraConfig, get_peft_model

    model, tokenizer = _student("llama")
    model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)).eval()
    ids, mask = _uneven_prompts(tokenizer)
    with torch.no_grad():
        whole = _forward(model, ids, mask)
        with reading_last_position_only(model):
            trimmed = _forward(model, ids, mask)
        with model.disable_adapter():
            base = _forward(model, ids, mask)
    assert torch.allclose(trimmed, whole, atol=1e-5) and not torch.allclose(base, whole, atol=1e-3)


def test_a_static_cache_runs_the_layer_as_it_is():
    """transformers' StaticCache writes at `cache_position`, which this layer does not pass on: left alone."""
    from transformers import StaticCache

    model, tokenizer = _student("llama")
    ids, mask = _uneven_prompts(tokenizer)
    calls = []
    hook = model.get_decoder().layers[-1].mlp.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[1]))
    with torch.no_grad():
        whole = _forward(model, ids, mask, StaticCache(config=model.config, max_cache_len=32))
        with reading_last_position_only(model):
            kept = _forward(model, ids, mask, StaticCache(config=model.config, max_cache_len=32))
    hook.remove()
    assert calls == [ids.shape[1], ids.shape[1]] and torch.allclose(kept, whole, atol=1e-6)
