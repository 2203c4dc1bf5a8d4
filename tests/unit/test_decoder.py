"""`rollout=static`: purld's static-KV-cache decoder samples what `generate` samples (the distribution, the
recorded log-probs, padding after EOS), reads each prompt once, and refuses students it cannot run."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from purld.rollout import StaticDecoderSampler, completion_token_logps
from purld.rollout.decoder import StaticCacheDecoder, check_decodable
from purld.students import build_char_tokenizer


def _student(architecture: str):
    """A random-init student of that architecture on the character tokenizer, in eval mode (no dropout)."""
    from transformers import (
        GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config,
        Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM,
    )

    tokenizer = build_char_tokenizer()
    shape = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    if architecture == "gpt2":
        config = GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=len(tokenizer), pad_token_id=0, eos_token_id=2)
        return GPT2LMHeadModel(config).eval(), tokenizer
    classes = {
        "llama": (LlamaConfig, LlamaForCausalLM, {}),
        "mistral": (MistralConfig, MistralForCausalLM, {"num_key_value_heads": 2, "sliding_window": None}),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM, {"num_key_value_heads": 2}),  # grouped-query attention, q/k/v biases
        "qwen3": (Qwen3Config, Qwen3ForCausalLM, {"num_key_value_heads": 1, "head_dim": 16}),  # per-head query/key norms
    }
    config_class, model_class, extra = classes[architecture]
    model = model_class(config_class(**shape, **extra)).eval()
    if architecture == "qwen2":  # random-init biases are zero: make them count
        for layer in model.model.layers:
            torch.nn.init.normal_(layer.self_attn.q_proj.bias, std=0.5)
            torch.nn.init.normal_(layer.self_attn.k_proj.bias, std=0.5)
    return model, tokenizer


def _uneven_prompts(tokenizer):
    prompts = tokenizer(["12+5=", "Reference: 3+4=7\n999+1=", "7*8="], padding=True, padding_side="left",
                        add_special_tokens=False, return_tensors="pt")
    return prompts["input_ids"], prompts["attention_mask"].bool()


def _teacher_forced(model, prompt_ids, prompt_mask, completion_ids, K, temperature, eos_token_id):
    from purld.rollout.sampler import completion_mask_from_ids

    mask, _ = completion_mask_from_ids(completion_ids, eos_token_id)
    with torch.no_grad():
        logps = completion_token_logps(
            model, prompt_ids.repeat_interleave(K, 0), prompt_mask.repeat_interleave(K, 0), completion_ids, mask, temperature
        )
    return logps, mask


@pytest.mark.parametrize("architecture", ["llama", "mistral", "qwen2", "qwen3"])
def test_recorded_logps_are_a_training_forwards(architecture):
    """Each sampled token's recorded log-prob is what a full forward over prompt + completion gives it: the
    positions of left-padded prompts, the rotation, grouped-query attention and the cache are all right."""
    model, tokenizer = _student(architecture)
    prompt_ids, prompt_mask = _uneven_prompts(tokenizer)
    K, temperature = 4, 0.7
    decoder = StaticCacheDecoder(model, temperature, tokenizer.eos_token_id, tokenizer.pad_token_id)
    torch.manual_seed(0)
    completion_ids, token_logps = decoder.decode(prompt_ids, prompt_mask, K, new_tokens=24)
    assert completion_ids.shape[0] == 3 * K and completion_ids.shape == token_logps.shape
    expected, mask = _teacher_forced(model, prompt_ids, prompt_mask, completion_ids, K, temperature, tokenizer.eos_token_id)
    assert mask.sum() > 3 * K  # more than one token per row was checked
    assert torch.allclose(token_logps[mask], expected[mask], atol=1e-5)
    assert (token_logps[~mask] == 0).all()


def test_rows_end_at_eos_with_padding_and_the_rollout_stops_when_all_have():
    model, tokenizer = _student("llama")
    with torch.no_grad():  # make EOS likely, so that every row ends within the budget
        model.lm_head.weight[tokenizer.eos_token_id] = model.lm_head.weight.mean(0) + 0.0
        model.lm_head.weight[tokenizer.eos_token_id] += 3 * model.model.norm.weight / model.model.norm.weight.norm()
    prompt_ids, prompt_mask = _uneven_prompts(tokenizer)
    decoder = StaticCacheDecoder(model, 1.0, tokenizer.eos_token_id, tokenizer.pad_token_id)
    torch.manual_seed(0)
    completion_ids, token_logps = decoder.decode(prompt_ids, prompt_mask, 4, new_tokens=200)
    is_eos = completion_ids == tokenizer.eos_token_id
    assert is_eos.any(-1).all() and completion_ids.shape[1] < 200  # all ended, so it stopped early
    after_eos = is_eos.long().cumsum(-1) - is_eos.long() > 0
    assert (completion_ids[after_eos] == tokenizer.pad_token_id).all() and (token_logps[after_eos] == 0).all()
    assert is_eos.sum(-1).eq(1).all()


def test_suppressed_eos_gives_every_row_the_full_length():
    model, tokenizer = _student("llama")
    prompt_ids, prompt_mask = _uneven_prompts(tokenizer)
    decoder = StaticCacheDecoder(model, 1.0, tokenizer.eos_token_id, tokenizer.pad_token_id, suppress_token_id=tokenizer.eos_token_id)
    completion_ids, _ = decoder.decode(prompt_ids, prompt_mask, 2, new_tokens=30)
    assert completion_ids.shape == (6, 30) and not (completion_ids == tokenizer.eos_token_id).any()


def test_the_draws_follow_the_softmax_at_the_temperature():
    """Gumbel-max over the recorded log-probs is a draw from them: 40,000 rows of one distribution."""
    model, tokenizer = _student("llama")
    decoder = StaticCacheDecoder(model, 0.5, tokenizer.eos_token_id, tokenizer.pad_token_id)
    layout = dataclasses.replace(_layout(rows=40_000), new_tokens=1)
    decoder._allocate(layout, torch.float32, torch.float32)
    logits = torch.tensor([0.0, 0.5, 1.0, -1.0])
    decoder.logits.fill_(-1e9)
    decoder.logits[:, 10:14] = logits
    decoder.finished.zero_()
    torch.manual_seed(0)
    token = decoder._sample()
    frequencies = torch.bincount(token - 10, minlength=4)[:4].float() / len(token)
    assert torch.allclose(frequencies, torch.softmax(logits / 0.5, -1), atol=0.01)
    assert torch.allclose(decoder.token_logps[:, 0], torch.log_softmax(logits / 0.5, -1)[token - 10], atol=1e-5)


def _layout(rows: int):
    from purld.rollout.decoder import _Layout

    return _Layout(rows=rows, prompt_width=4, new_tokens=8, device=torch.device("cpu"), autocast_dtype=None)


def test_each_prompt_is_read_once_by_the_model_and_nothing_is_held_between_eager_rollouts():
    model, tokenizer = _student("llama")
    calls: list[tuple[int, int]] = []
    model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    prompt_ids, prompt_mask = _uneven_prompts(tokenizer)
    decoder = StaticCacheDecoder(model, 1.0, tokenizer.eos_token_id, tokenizer.pad_token_id)
    completion_ids, _ = decoder.decode(prompt_ids, prompt_mask, 4, new_tokens=10)
    assert calls == [tuple(prompt_ids.shape)]  # the B prompts, once; each new token runs through the layers directly
    assert completion_ids.shape == (12, 10)
    assert decoder._layout is None and decoder.keys == []  # the cache does not sit through the update (on CUDA it stays, graphed)
    assert not decoder.graph_captured
    completion_ids, _ = decoder.decode(prompt_ids[:2], prompt_mask[:2], 4, new_tokens=10)
    assert completion_ids.shape == (8, 10)


def test_bf16_autocast_matches_a_training_forward_to_bf16_rounding():
    model, tokenizer = _student("qwen2")
    prompt_ids, prompt_mask = _uneven_prompts(tokenizer)
    decoder = StaticCacheDecoder(model, 1.0, tokenizer.eos_token_id, tokenizer.pad_token_id)
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        completion_ids, token_logps = decoder.decode(prompt_ids, prompt_mask, 4, new_tokens=16)
        expected, mask = _teacher_forced(model, prompt_ids, prompt_mask, completion_ids, 4, 1.0, tokenizer.eos_token_id)
    assert (token_logps[mask] - expected[mask]).abs().max() < 0.05


def test_lora_adapters_apply():
    """The decoder calls the layers' own projections, so a LoRA student samples from its adapted weights."""
    from peft import LoraConfig, get_peft_model

    model, tokenizer = _student("llama")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)).eval()
    prompt_ids, prompt_mask = _uneven_prompts(tokenizer)
    decoder = StaticCacheDecoder(model, 1.0, tokenizer.eos_token_id, tokenizer.pad_token_id)
    completion_ids, token_logps = decoder.decode(prompt_ids, prompt_mask, 2, new_tokens=12)
    expected, mask = _teacher_forced(model, prompt_ids, prompt_mask, completion_ids, 2, 1.0, tokenizer.eos_token_id)
    assert torch.allclose(token_logps[mask], expected[mask], atol=1e-5)
    with model.disable_adapter():
        without, _ = _teacher_forced(model, prompt_ids, prompt_mask, completion_ids, 2, 1.0, tokenizer.eos_token_id)
    assert not torch.allclose(token_logps[mask], without[mask], atol=1e-3)


def test_unsupported_students_and_windows_are_refused_by_name():
    model, _ = _student("gpt2")
    with pytest.raises(ValueError, match="model_type 'gpt2' is not one this decoder runs.*use rollout=default"):
        check_decodable(model)
    mistral, _ = _student("mistral")
    mistral.config.sliding_window = 16
    check_decodable(mistral, total_length=16)
    with pytest.raises(ValueError, match=r"prompt \+ completion \(17 tokens\) pass the student's sliding_window \(16\)"):
        check_decodable(mistral, total_length=17)


def test_the_sampler_gives_a_rollout_whose_logps_a_training_forward_reproduces(task, make_batch, tmp_path):
    model, tokenizer = _student("llama")
    batch = make_batch(task, tmp_path, size=3)
    sampler = StaticDecoderSampler(num_candidates=4, max_new_tokens=12, temperature=0.7)
    sampler.check(model)
    model.train()
    rollout = sampler.sample(model, tokenizer, batch)
    assert model.training  # restored after decoding in eval mode
    B, K, T = rollout.completion_ids.shape
    assert (B, K) == (3, 4) and T <= 12 and len(rollout.texts) == 3
    forward = completion_token_logps(
        model.eval(), batch.prompt_ids.repeat_interleave(K, 0), batch.prompt_mask.repeat_interleave(K, 0),
        rollout.completion_ids.reshape(B * K, T), rollout.completion_mask.reshape(B * K, T), temperature=0.7,
    ).reshape(B, K, T)
    assert torch.allclose(forward[rollout.completion_mask], rollout.sampling_token_logps[rollout.completion_mask], atol=1e-5)
    with pytest.raises(ValueError, match="model_type 'gpt2'"):
        sampler.check(_student("gpt2")[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize(
    ("autocast_dtype", "temperature", "matches"),
    [
        (None, 0.7, lambda got, expected: torch.allclose(got, expected, atol=1e-4)),
        # The GPU benchmark's setting: captured under the caller's bf16 autocast (its weight cache off).
        (torch.bfloat16, 1.0, lambda got, expected: (got - expected).abs().max() < 0.05),
    ],
    ids=["float32", "bf16-autocast"],
)
def test_a_captured_step_samples_what_the_eager_one_does(autocast_dtype, temperature, matches):
    """On CUDA the step is captured once and replayed; its recorded log-probs are still a training forward's
    (to bf16 rounding under autocast)."""
    model, tokenizer = _student("qwen2")
    model = model.cuda()
    prompt_ids, prompt_mask = (t.cuda() for t in _uneven_prompts(tokenizer))
    decoder = StaticCacheDecoder(model, temperature, tokenizer.eos_token_id, tokenizer.pad_token_id)
    with torch.autocast("cuda", dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        for _ in range(2):  # the second rollout replays the graph captured for the first
            completion_ids, token_logps = decoder.decode(prompt_ids, prompt_mask, 4, new_tokens=24)
            assert decoder.graph_captured
            expected, mask = _teacher_forced(model, prompt_ids, prompt_mask, completion_ids, 4, temperature, tokenizer.eos_token_id)
            assert matches(token_logps[mask], expected[mask])
