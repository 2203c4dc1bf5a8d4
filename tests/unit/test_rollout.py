import copy
import warnings
from functools import partial

import pytest
import torch

from purld.rollout import Sampler, completion_token_logps
from purld.rollout.sampler import completion_mask_from_ids
from purld.students import build_char_tokenizer


def test_mask_up_to_and_including_first_eos():
    ids = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8]])
    mask, truncated = completion_mask_from_ids(ids, eos_token_id=2)
    assert mask.tolist() == [[True, True, False, False], [True, True, True, True]]
    assert truncated.tolist() == [False, True]


@pytest.mark.parametrize("cache_implementation", [None, "static"])
def test_sample_shapes_and_logps_match_a_forward_pass(student, task, make_batch, tmp_path, cache_implementation):
    """The recorded sampling log-probs are π_old: a training forward pass must reproduce them, whatever the KV cache."""
    model, tokenizer = student
    batch = make_batch(task, tmp_path, size=3)
    torch.manual_seed(0)
    sampler = Sampler(num_candidates=4, max_new_tokens=12, temperature=0.7, cache_implementation=cache_implementation)
    rollout = sampler.sample(model, tokenizer, batch)
    B, K, T = rollout.completion_ids.shape
    assert (B, K) == (3, 4) and T <= 12
    assert len(rollout.texts) == 3 and all(len(row) == 4 for row in rollout.texts)
    assert rollout.sampling_token_logps.shape == (B, K, T) and rollout.is_truncated.shape == (B, K)
    forward = completion_token_logps(
        model,
        batch.prompt_ids.repeat_interleave(K, 0),
        batch.prompt_mask.repeat_interleave(K, 0),
        rollout.completion_ids.reshape(B * K, T),
        rollout.completion_mask.reshape(B * K, T),
        temperature=0.7,
    ).reshape(B, K, T)
    difference = (forward - rollout.sampling_token_logps).masked_fill(~rollout.completion_mask, 0)
    assert difference.abs().max() < 1e-4
    assert (rollout.sampling_token_logps <= 0).all()


def _gpt2_student():
    """Absolute position embeddings: wrong position ids for the left-padded prompts would show at once."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = build_char_tokenizer()
    torch.manual_seed(0)
    config = GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=128, vocab_size=len(tokenizer), pad_token_id=0, bos_token_id=1,
                        eos_token_id=2)
    return GPT2LMHeadModel(config).eval(), tokenizer  # no dropout: a forward pass must reproduce the sampling log-probs


def _record_input_lengths(model) -> list[tuple[int, int]]:
    """(rows, tokens) of every forward call's input_ids."""
    shapes: list[tuple[int, int]] = []
    model.register_forward_pre_hook(lambda module, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    return shapes


def _uneven_prompts(tokenizer):
    """Three prompts of different lengths, left-padded."""
    prompts = tokenizer(["12+5=", "Reference: 3+4=7\n999+1=", "7*8="], padding=True, padding_side="left", add_special_tokens=False,
                        return_tensors="pt")
    return prompts["input_ids"], prompts["attention_mask"].bool()


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_a_prompt_cache_read_once_gives_every_sample_the_full_rows_logits(architecture):
    """The cache of B prompts but their last token, repeated K times, then each row's last prompt token: the
    next-token logits of B·K full prompt rows (`generate` with num_return_sequences), position ids included."""
    from purld.rollout.logprobs import cache_argument_name
    from purld.rollout.sampler import prompt_cache_for_samples

    model, tokenizer = _tiny_llama() if architecture == "llama" else _gpt2_student()
    model.eval()
    prompt_ids, prompt_mask = _uneven_prompts(tokenizer)
    K, mask = 4, prompt_mask.long().repeat_interleave(4, 0)
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    with torch.no_grad():
        full_rows = model(input_ids=prompt_ids.repeat_interleave(K, 0), attention_mask=mask, position_ids=positions).logits[:, -1]
        cache = prompt_cache_for_samples(model, prompt_ids, prompt_mask, K)
        assert cache.get_seq_length() == prompt_ids.shape[1] - 1
        last = model(input_ids=prompt_ids[:, -1:].repeat_interleave(K, 0), attention_mask=mask, position_ids=positions[:, -1:],
                     **{cache_argument_name(model): cache}).logits[:, -1]
    assert torch.allclose(last, full_rows, atol=1e-5)


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_the_rollout_reads_each_prompt_once(architecture, task, make_batch, tmp_path):
    """One forward over the B prompts but their last token, then one token per row and step; the recorded
    sampling log-probs are still those of a training forward over the full rows. EOS allowed: rows finish at
    different steps."""
    import dataclasses

    model, tokenizer = _tiny_llama() if architecture == "llama" else _gpt2_student()
    prompt_ids, prompt_mask = _uneven_prompts(tokenizer)
    batch = dataclasses.replace(make_batch(task, tmp_path, size=3), prompt_ids=prompt_ids, prompt_mask=prompt_mask)
    B, L, K = len(batch), prompt_ids.shape[1], 4
    shapes = _record_input_lengths(model)
    torch.manual_seed(1)
    rollout = Sampler(num_candidates=K, max_new_tokens=10, temperature=0.7).sample(model, tokenizer, batch)
    assert shapes[0] == (B, L - 1) and all(shape == (B * K, 1) for shape in shapes[1:])
    T = rollout.completion_ids.shape[-1]
    mask = rollout.completion_mask.reshape(B * K, T)
    assert 0 < mask.sum() < mask.numel()  # some rows stopped early
    forward = completion_token_logps(
        model, prompt_ids.repeat_interleave(K, 0), prompt_mask.repeat_interleave(K, 0), rollout.completion_ids.reshape(B * K, T), mask,
        temperature=0.7,
    )
    assert torch.allclose(rollout.sampling_token_logps.reshape(B * K, T)[mask], forward[mask], atol=1e-5)


@pytest.mark.parametrize(("prompt_tokens", "cache_implementation"), [(1, None), (None, "static")])
def test_one_token_prompts_and_the_static_cache_read_the_prompt_per_row(prompt_tokens, cache_implementation, task, make_batch, tmp_path):
    """Nothing to share in a one-token prompt (`generate` reads the last prompt token itself); a static cache is
    preallocated for all B·K rows. Both read the prompts per row, as before."""
    import dataclasses

    model, tokenizer = _tiny_llama()
    batch = make_batch(task, tmp_path, size=2)
    if prompt_tokens:  # left padding: the last column holds every prompt's last token
        batch = dataclasses.replace(batch, prompt_ids=batch.prompt_ids[:, -prompt_tokens:], prompt_mask=batch.prompt_mask[:, -prompt_tokens:])
    shapes = _record_input_lengths(model)
    rollout = Sampler(num_candidates=3, max_new_tokens=4, cache_implementation=cache_implementation).sample(model, tokenizer, batch)
    assert rollout.completion_ids.shape[:2] == (2, 3)
    assert shapes[0] == (6, batch.prompt_ids.shape[1])


def test_suppress_eos_gives_full_length(student, task, make_batch, tmp_path):
    model, tokenizer = student
    batch = make_batch(task, tmp_path, size=2)
    rollout = Sampler(num_candidates=3, max_new_tokens=9, suppress_eos=True).sample(model, tokenizer, batch)
    assert rollout.completion_mask.all() and rollout.completion_ids.shape[-1] == 9
    assert rollout.is_truncated.all()


def test_sampling_leaves_training_mode(student, task, make_batch, tmp_path):
    model, tokenizer = student
    model.train()
    Sampler(num_candidates=2, max_new_tokens=4).sample(model, tokenizer, make_batch(task, tmp_path, size=1))
    assert model.training


def _two_prompts_four_completions(tokenizer):
    prompts = tokenizer(["12+5=", "Reference: 3+4=7\n999+1="], padding=True, padding_side="left", add_special_tokens=False, return_tensors="pt")
    completions = tokenizer([t + tokenizer.eos_token for t in ["ab", "hello there", "x", "yyyyyy"]], padding=True,
                            padding_side="right", add_special_tokens=False, return_tensors="pt")
    return prompts["input_ids"], prompts["attention_mask"].bool(), completions["input_ids"], completions["attention_mask"].bool()


def _logps_and_grads(model, inputs, temperature):
    model.zero_grad()
    logps = completion_token_logps(model, *inputs, temperature=temperature)
    (logps * inputs[3]).sum().backward()
    return logps.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]


def _tiny_llama():
    """A fresh tiny student, for tests that change its mode or its checkpointing (the session's `student` stays as is)."""
    from purld.students.tiny import TinyLlamaStudent

    return TinyLlamaStudent(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64).load()


def _assert_same_gradients(gradients, expected_gradients):
    for a, b in zip(gradients, expected_gradients, strict=True):
        assert (a - b).abs().max() <= 1e-5 * max(1.0, b.abs().max().item())


def _assert_same_numbers(got, expected, mask):
    """`_logps_and_grads` results: the same log-probs where `mask` holds, and the same gradients."""
    (logps, gradients), (expected_logps, expected_gradients) = got, expected
    assert torch.allclose(expected_logps[mask], logps[mask], atol=1e-5)
    _assert_same_gradients(gradients, expected_gradients)


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_shared_prompt_log_probs_and_gradients_equal_the_full_forward(monkeypatch, temperature, chunked):
    """Reading each prompt once and sharing its KV cache over K completions changes no number, nor any gradient
    (they flow back through the repeated cache into the prompt's positions)."""
    from purld.rollout import logprobs

    model, tokenizer = _tiny_llama()
    model.train()
    if chunked:
        monkeypatch.setattr(logprobs, "CHUNKED_LOGITS_ABOVE", 0)
        monkeypatch.setattr(logprobs, "CHUNK_ELEMENTS", 3 * model.config.vocab_size)
    prompt_ids, prompt_mask, completion_ids, mask = _two_prompts_four_completions(tokenizer)
    full = _logps_and_grads(model, (prompt_ids.repeat_interleave(2, 0), prompt_mask.repeat_interleave(2, 0), completion_ids, mask), temperature)
    shared = _logps_and_grads(model, (prompt_ids, prompt_mask, completion_ids, mask), temperature)
    _assert_same_numbers(shared, full, mask)


def _tiny_llama_and_its_numbers(lora: bool = False):
    """A fresh tiny student in training mode (optionally under LoRA), the two-prompt inputs, and their log-probs and
    gradients computed without checkpointing."""
    model, tokenizer = _tiny_llama()
    if lora:
        from peft import LoraConfig, get_peft_model

        with warnings.catch_warnings():  # peft reads transformers' deprecated `is_gradient_checkpointing`
            warnings.simplefilter("ignore", FutureWarning)
            model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    inputs = _two_prompts_four_completions(tokenizer)
    model.train()
    return model, inputs, _logps_and_grads(model, inputs, 1.0)


@pytest.mark.parametrize("selective", [False, True])
@pytest.mark.parametrize("lora", [False, True])
def test_gradient_checkpointing_keeps_prompt_sharing_and_the_same_numbers(monkeypatch, lora, selective):
    """Checkpointed (full or selective), the prompts are still read once, and their layers are checkpointed too:
    backward replays each prompt layer once, its cache update returning the forward's states and writing nothing;
    the continuation's layers are replayed over the same read-only prefix cache. Same log-probs, same gradients;
    the layers' own checkpointing settings are back as they were afterwards."""
    from purld.rollout import logprobs
    from purld.students.base import enable_gradient_checkpointing

    model, inputs, plain = _tiny_llama_and_its_numbers(lora)
    enable_gradient_checkpointing(model, selective=selective)
    layers = model.get_decoder().layers
    checkpointed_calls, functions = [], [layer._gradient_checkpointing_func for layer in layers]
    for layer, function in zip(layers, functions):  # still transformers' partial(checkpoint, use_reentrant=False)
        counting = partial(_counting(function.func, checkpointed_calls), **function.keywords)
        monkeypatch.setattr(layer, "_gradient_checkpointing_func", counting)
    counted = [layer._gradient_checkpointing_func for layer in layers]
    monkeypatch.setattr(logprobs, "forward_after_shared_prefix", _counting(logprobs.forward_after_shared_prefix, shared_calls := []))
    caches, updates = _recording_caches(monkeypatch)
    checkpointed = _logps_and_grads(model, inputs, 1.0)
    assert len(shared_calls) == 1 and len(checkpointed_calls) == 2 * len(layers)  # the prompts' layers, the continuation's
    replays = [(layer_idx, rows) for replaying, layer_idx, rows in updates if replaying]
    assert sorted(replays) == [(i, 2) for i in range(len(layers))]  # each prompt layer once, for the 2 prompts
    prompt_length = inputs[0].shape[1]
    assert all(layer.keys.shape[-2] == prompt_length for layer in caches[0].layers)  # nothing written twice
    _assert_same_numbers(checkpointed, plain, inputs[3])
    assert all(layer.gradient_checkpointing and not layer._can_checkpoint_with_cache for layer in layers)
    assert all(layer._gradient_checkpointing_func is function for layer, function in zip(layers, counted, strict=True))


def _recording_caches(monkeypatch):
    """The prefix caches that `forward_after_shared_prefix` makes, and each update's (replaying, layer, rows)."""
    from purld.rollout import logprobs

    caches, updates, cache_class = [], [], logprobs.ReadOnlyPrefixCache
    update = cache_class.update

    def recorded_update(self, key_states, value_states, layer_idx, *args, **kwargs):
        updates.append((self.replaying_prefix, layer_idx, key_states.shape[0]))
        return update(self, key_states, value_states, layer_idx, *args, **kwargs)

    monkeypatch.setattr(cache_class, "update", recorded_update)
    monkeypatch.setattr(logprobs, "ReadOnlyPrefixCache", lambda **kwargs: caches.append(cache_class(**kwargs)) or caches[-1])
    return caches, updates


def test_checkpointing_that_cannot_mark_its_recomputation_leaves_the_prompts_unchecked(monkeypatch):
    """A layer checkpointing function other than torch's non-reentrant `checkpoint` (no recomputation context):
    the prompts' layers run unchecked, the continuation's checkpointed; the same numbers."""
    from purld.students.base import enable_gradient_checkpointing

    model, inputs, plain = _tiny_llama_and_its_numbers()
    enable_gradient_checkpointing(model)
    layers = model.get_decoder().layers
    checkpointed_calls = []
    for layer in layers:
        monkeypatch.setattr(layer, "_gradient_checkpointing_func", _counting(layer._gradient_checkpointing_func, checkpointed_calls))
    _, updates = _recording_caches(monkeypatch)
    checkpointed = _logps_and_grads(model, inputs, 1.0)
    assert len(checkpointed_calls) == len(layers) and not any(replaying for replaying, _, _ in updates)
    _assert_same_numbers(checkpointed, plain, inputs[3])


def test_selective_checkpointing_keeps_the_matmuls_and_runs_under_autocast_with_its_cache(monkeypatch):
    """Selective checkpointing keeps the matmuls' outputs and recomputes the rest. Under a user's own
    `torch.autocast` (weight-cast cache on) the recomputation still runs the forward's ops; the log-probs are the
    same, the gradients within bf16 rounding (autocast's cache changes them at that level)."""
    from torch.utils.checkpoint import CheckpointPolicy

    from purld.students import base

    model, tokenizer = _tiny_llama()
    model.train()
    inputs = _two_prompts_four_completions(tokenizer)
    selective = copy.deepcopy(model)
    base.enable_gradient_checkpointing(selective, selective=True)
    decisions, policy = [], base._save_matmul_outputs
    monkeypatch.setattr(base, "_save_matmul_outputs", lambda ctx, op, *a, **k: decisions.append((op, policy(ctx, op, *a, **k))) or decisions[-1][1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain, checkpointed = _logps_and_grads(model, inputs, 1.0), _logps_and_grads(selective, inputs, 1.0)
    assert torch.equal(plain[0][inputs[3]], checkpointed[0][inputs[3]])
    for a, b in zip(checkpointed[1], plain[1], strict=True):
        assert (a - b).abs().max() <= 1e-2 * max(1e-6, b.abs().max().item())
    saved = {op for op, decision in decisions if decision == CheckpointPolicy.MUST_SAVE}
    assert torch.ops.aten.mm.default in saved and saved <= base.SAVED_BY_SELECTIVE_CHECKPOINTING  # sdpa: its fused kernel
    assert any(decision == CheckpointPolicy.PREFER_RECOMPUTE for _, decision in decisions)


def test_joined_states_read_each_prefix_row_for_its_continuations():
    from purld.rollout.logprobs import joined_states

    prefix, new = torch.randn(2, 3, 5, 4, requires_grad=True), torch.randn(6, 3, 2, 4)
    joined = joined_states(prefix, new, 3)
    assert torch.equal(joined, torch.cat([prefix.repeat_interleave(3, 0), new], dim=-2))
    joined.sum().backward()
    assert torch.equal(prefix.grad, torch.full_like(prefix, 3.0))  # each prefix row serves 3 continuations
    assert torch.equal(joined_states(prefix, new[:2], 1), torch.cat([prefix, new[:2]], dim=-2))


@pytest.mark.parametrize("checkpointing", [False, True])
def test_sliding_window_layers_share_the_prompt_through_their_own_update(monkeypatch, checkpointing):
    """Cache layers other than the plain one (a sliding window) get the prefix repeated and run their own update,
    kept read-only; checkpointed, the prompt layers' replay runs that update again from the state before it: the
    same numbers as the full forward."""
    from transformers import MistralConfig, MistralForCausalLM
    from transformers.cache_utils import DynamicSlidingWindowLayer

    from purld.students.base import enable_gradient_checkpointing

    tokenizer = build_char_tokenizer()
    config = MistralConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, sliding_window=8, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = MistralForCausalLM(config).train()
    prompt_ids, prompt_mask, completion_ids, mask = _two_prompts_four_completions(tokenizer)
    full = _logps_and_grads(model, (prompt_ids.repeat_interleave(2, 0), prompt_mask.repeat_interleave(2, 0), completion_ids, mask), 1.0)
    if checkpointing:
        enable_gradient_checkpointing(model)
    caches, updates = _recording_caches(monkeypatch)
    shared = _logps_and_grads(model, (prompt_ids, prompt_mask, completion_ids, mask), 1.0)
    assert len(caches) == 1 and all(type(layer) is DynamicSlidingWindowLayer for layer in caches[0].layers)
    assert sum(replaying for replaying, _, _ in updates) == (config.num_hidden_layers if checkpointing else 0)
    _assert_same_numbers(shared, full, mask)


def test_older_transformers_checkpointing_repeats_the_prompts(monkeypatch):
    """Where checkpointed layers drop the cache (transformers before `_can_checkpoint_with_cache`), the prompts
    are repeated K times instead: the same numbers."""
    from purld.rollout import logprobs
    from purld.students.base import enable_gradient_checkpointing

    model, inputs, plain = _tiny_llama_and_its_numbers()
    enable_gradient_checkpointing(model)
    monkeypatch.setattr(logprobs, "_CHECKPOINTING_KEEPS_A_READ_ONLY_CACHE", False)
    monkeypatch.setattr(logprobs, "forward_after_shared_prefix", _counting(logprobs.forward_after_shared_prefix, shared_calls := []))
    checkpointed = _logps_and_grads(model, inputs, 1.0)
    assert not shared_calls
    _assert_same_numbers(checkpointed, plain, inputs[3])


def test_torch_checkpoint_wrapper_shares_the_prompts_and_replays_them_without_writing(monkeypatch):
    """Layers wrapped by torch's checkpoint_wrapper (Lightning FSDP's activation_checkpointing_policy) replay the
    prompt's pass in backward as well: its recomputation runs within the cache's `replaying()`, so the prompts are
    still read once, with the same numbers."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    from purld.rollout import logprobs

    model, inputs, plain = _tiny_llama_and_its_numbers()
    headed_inputs = _prompts_with_a_common_head(build_char_tokenizer())
    headed_plain = _logps_and_grads(model, headed_inputs, 1.0)
    apply_activation_checkpointing(model, check_fn=lambda module: isinstance(module, LlamaDecoderLayer))
    monkeypatch.setattr(logprobs, "forward_after_shared_prefix", _counting(logprobs.forward_after_shared_prefix, shared_calls := []))
    caches, updates = _recording_caches(monkeypatch)
    wrapped = _logps_and_grads(model, inputs, 1.0)
    assert len(shared_calls) == 1
    assert sorted((layer_idx, rows) for replaying, layer_idx, rows in updates if replaying) == [(0, 2), (1, 2)]
    _assert_same_numbers(wrapped, plain, inputs[3])
    _assert_same_numbers(_logps_and_grads(model, headed_inputs, 1.0), headed_plain, headed_inputs[3])
    assert all(type(fn := m.checkpoint_fn) is partial and "context_fn" not in fn.keywords for m in logprobs.checkpoint_wrappers(model))


def test_reentrant_torch_checkpoint_wrapper_repeats_the_prompts(monkeypatch):
    """A reentrant checkpoint_wrapper has no recomputation context to mark: the prompts are repeated K times
    instead of shared, with the same numbers."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, apply_activation_checkpointing
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper as wrapper
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    from purld.rollout import logprobs

    model, inputs, plain = _tiny_llama_and_its_numbers()
    apply_activation_checkpointing(model, checkpoint_wrapper_fn=partial(wrapper, checkpoint_impl=CheckpointImpl.REENTRANT),
                                   check_fn=lambda module: isinstance(module, LlamaDecoderLayer))
    monkeypatch.setattr(logprobs, "forward_after_shared_prefix", _counting(logprobs.forward_after_shared_prefix, shared_calls := []))
    wrapped = _logps_and_grads(model, inputs, 1.0)
    assert not shared_calls
    _assert_same_numbers(wrapped, plain, inputs[3])


def _counting(function, calls: list):
    def counted(*args, **kwargs):
        calls.append(1)
        return function(*args, **kwargs)

    return counted


def _prompts_with_a_common_head(tokenizer):
    """Three prompts of different lengths behind one 40-character instruction, two completions each."""
    head = "Answer the following sum, and be quick: "
    prompts = tokenizer([head + p for p in ["12+5=", "3+4=", "999+1="]], padding=True, padding_side="left",
                        add_special_tokens=False, return_tensors="pt")
    completions = tokenizer([t + tokenizer.eos_token for t in ["17", "x", "7", "yyyy", "1000", "z"]], padding=True,
                            padding_side="right", add_special_tokens=False, return_tensors="pt")
    return prompts["input_ids"], prompts["attention_mask"].bool(), completions["input_ids"], completions["attention_mask"].bool()


def test_completions_must_split_evenly_over_the_prompts(student):
    model, tokenizer = student
    prompt_ids, prompt_mask, completion_ids, mask = _two_prompts_four_completions(tokenizer)
    with pytest.raises(ValueError, match="3 completions do not split evenly over 2 prompts"):
        completion_token_logps(model, prompt_ids, prompt_mask, completion_ids[:3], mask[:3])


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_output_head_matches_full_logits(student, monkeypatch, temperature):
    """Above the size threshold the head runs chunk by chunk: same log-probs, same gradients."""
    from purld.rollout import logprobs

    model, _ = student
    torch.manual_seed(0)
    prompt_ids, completion_ids = torch.randint(4, 90, (3, 5)), torch.randint(4, 90, (3, 6))
    prompt_mask = torch.ones_like(prompt_ids, dtype=torch.bool)
    prompt_mask[0, :2] = False  # left padding
    completion_mask = torch.ones_like(completion_ids, dtype=torch.bool)
    completion_mask[1, 4:] = False  # right padding
    inputs = (prompt_ids, prompt_mask, completion_ids, completion_mask)
    full, full_grads = _logps_and_grads(model, inputs, temperature)
    monkeypatch.setattr(logprobs, "CHUNKED_LOGITS_ABOVE", 0)
    monkeypatch.setattr(logprobs, "CHUNK_ELEMENTS", 7 * model.config.vocab_size)  # 7 rows a chunk: several chunks
    chunked, chunked_grads = _logps_and_grads(model, inputs, temperature)
    assert ((chunked - full) * completion_mask).abs().max() < 1e-5
    _assert_same_gradients(chunked_grads, full_grads)


def test_output_head_with_scaled_logits_keeps_the_full_path(student, monkeypatch):
    from purld.rollout.logprobs import plain_output_head

    model, _ = student
    assert plain_output_head(model) is model.get_output_embeddings()
    monkeypatch.setattr(model.config, "final_logit_softcapping", 30.0, raising=False)
    assert plain_output_head(model) is None
