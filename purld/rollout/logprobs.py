"""Per-token log-probabilities of completions under a causal LM.

Used by the objectives (policy and reference) and by the self-rankers, so that
all of them see exactly the numbers the sampler saw: left-padded prompts get
position ids from the attention mask, as `generate` gives them (`purld.rollout.positions`: multimodal RoPE too).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from functools import partial

import torch
from torch import Tensor
from torch.utils.checkpoint import noop_context_fn
from transformers import DynamicCache, PreTrainedModel
from transformers.cache_utils import DynamicLayer

from purld.rollout.positions import position_ids, text_positions
from purld.students.base import activation_checkpointing_enabled
from purld.types import stack_vision_inputs

try:  # transformers ≥ 5.2x: a checkpointed layer may keep a cache that it only reads
    from transformers.modeling_layers import GradientCheckpointingLayer

    _CHECKPOINTING_KEEPS_A_READ_ONLY_CACHE = hasattr(GradientCheckpointingLayer, "_can_checkpoint_with_cache")
except ImportError:
    GradientCheckpointingLayer, _CHECKPOINTING_KEEPS_A_READ_ONLY_CACHE = None, False


def stack_prompt_and_completion(
    prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor, completion_mask: Tensor
) -> tuple[Tensor, Tensor]:
    """Concatenate (N, L) left-padded prompts and (N, T) right-padded completions."""
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
    return input_ids, attention_mask


def completion_token_logps(
    model: PreTrainedModel,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    completion_ids: Tensor,
    completion_mask: Tensor,
    temperature: float = 1.0,
    vision: tuple[dict[str, Tensor], ...] = (),
) -> Tensor:
    """log softmax(logits / temperature)[y_t] for each completion token.

    Inputs: B prompts (B, L) left-padded; B·K completions (B·K, T) right-padded, K ≥ 1 per prompt in order
    (row b·K + k continues prompt b). With K > 1 each prompt is read once and its KV cache serves its K rows
    (`forward_after_shared_prefix`): K·T token positions instead of K·(L + T), in the forward and in backward,
    with or without transformers' activation checkpointing. Each prompt is repeated K times instead where
    checkpointed layers would drop or rewrite the cache: older transformers, torch's `checkpoint_wrapper`.
    `vision`: the B prompts' vision inputs (`PromptBatch.vision_inputs`), read with the prompts: once per prompt
    where it is shared, else repeated for its K rows.
    Returns (B·K, T) float32 log-probs in nats; padded positions hold garbage that callers mask with
    `completion_mask`.
    """
    B, N = prompt_ids.shape[0], completion_ids.shape[0]
    if N % B:
        raise ValueError(f"completion_token_logps: {N} completions do not split evenly over {B} prompts")
    K, T = N // B, completion_ids.shape[1]
    head = plain_output_head(model)
    chunked = head is not None and N * T * head.out_features > CHUNKED_LOGITS_ABOVE
    if K > 1 and prompts_can_be_shared(model):
        first, rest = forward_after_shared_prefix(
            model, prompt_ids, prompt_mask, completion_ids, completion_mask, T, chunked, prefix_inputs=stack_vision_inputs(vision)
        )
        outputs = torch.cat([first[:, None], rest[:, :-1]], dim=1)  # position t predicts token t
    else:
        prompt_ids, prompt_mask = prompt_ids.repeat_interleave(K, 0), prompt_mask.repeat_interleave(K, 0)
        input_ids, attention_mask = stack_prompt_and_completion(prompt_ids, prompt_mask, completion_ids, completion_mask)
        vision_inputs = stack_vision_inputs(vision, repeats=K)
        positions, _ = position_ids(model, input_ids, attention_mask, vision_inputs, prompt_width=prompt_ids.shape[1])
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask.long(), "position_ids": positions, "use_cache": False,
                  **vision_inputs}
        if chunked:
            outputs = model(**inputs, output_hidden_states=True, logits_to_keep=1).hidden_states[-1][:, -(T + 1) : -1]
        else:
            outputs = model(**inputs, logits_to_keep=T + 1).logits[:, :-1]  # (N, T, V): logits at t predict token t + 1
    if chunked:
        # The (N, T, V) logits would dominate memory (a 150 k vocabulary: 10 GB at N·T = 16 k): the model computed
        # the last hidden states instead (logits_to_keep=1: one position's logits), projected here chunk by chunk.
        return chunked_token_logps(outputs, head.weight, completion_ids, temperature)
    return token_logps_from_logits(outputs, completion_ids, temperature)


CHUNKED_LOGITS_ABOVE = 2**26  # logits (64 M: 256 MB in float32) above which the output head runs chunk by chunk
CHUNK_ELEMENTS = 2**27  # logits per chunk (512 MB in float32)


def plain_output_head(model: PreTrainedModel) -> torch.nn.Linear | None:
    """The output projection when logits are exactly `hidden @ weight.T` (no bias, scale or soft-capping), else None."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    config = getattr(model, "config", None)
    scaled = any(getattr(config, name, None) not in (None, 1.0) for name in ("final_logit_softcapping", "logit_scale", "logits_scaling"))
    if type(head) is not torch.nn.Linear or head.bias is not None or scaled:
        return None
    return head


def chunked_token_logps(hidden: Tensor, weight: Tensor, token_ids: Tensor, temperature: float = 1.0) -> Tensor:
    """log softmax(hidden @ weightᵀ / temperature)[token_ids] without keeping the logits.

    hidden (N, T, H), weight (V, H), token_ids (N, T) → (N, T) float32. Forward and backward run over row chunks of
    `CHUNK_ELEMENTS` logits; backward recomputes each chunk's logits (one extra output-head matmul) instead of
    storing all of them. Under autocast the matmuls run in the autocast dtype, as the model's own head would.
    """
    N, T, H = hidden.shape
    return _ChunkedTokenLogps.apply(hidden.reshape(N * T, H), weight, token_ids.reshape(N * T), temperature).reshape(N, T)


class _ChunkedTokenLogps(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, token_ids: Tensor, temperature: float) -> Tensor:
        device_type = hidden.device.type
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else hidden.dtype
        h, w = hidden.to(dtype), weight.to(dtype)
        rows = max(1, CHUNK_ELEMENTS // w.shape[0])
        token_logps = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
        logsumexp = torch.empty_like(token_logps)
        with torch.autocast(device_type, enabled=False):
            for start in range(0, h.shape[0], rows):
                chunk = slice(start, start + rows)
                logits = (h[chunk] @ w.T).float() / temperature
                logsumexp[chunk] = torch.logsumexp(logits, dim=-1)
                token_logps[chunk] = logits.gather(-1, token_ids[chunk, None]).squeeze(-1) - logsumexp[chunk]
        ctx.save_for_backward(h, w, token_ids, logsumexp)
        ctx.temperature, ctx.rows, ctx.dtypes = temperature, rows, (hidden.dtype, weight.dtype)
        return token_logps

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        h, w, token_ids, logsumexp = ctx.saved_tensors
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(h) if need_hidden else None
        grad_weight = torch.zeros(w.shape, dtype=torch.float32, device=w.device) if need_weight else None
        with torch.autocast(h.device.type, enabled=False):
            for start in range(0, h.shape[0], ctx.rows):
                chunk = slice(start, start + ctx.rows)
                logits = (h[chunk] @ w.T).float() / ctx.temperature
                # d/dlogits of (logit_y − logsumexp) / τ-scaled logits: (onehot(y) − softmax) / τ, times the incoming grad.
                g = grad_output[chunk, None].float()
                grad_logits = (logits - logsumexp[chunk, None]).exp_().mul_(-g)
                grad_logits.scatter_add_(-1, token_ids[chunk, None], g)
                grad_logits = (grad_logits / ctx.temperature).to(h.dtype)
                if need_hidden:
                    grad_hidden[chunk] = grad_logits @ w
                if need_weight:
                    grad_weight += (grad_logits.T @ h[chunk]).float()
        hidden_dtype, weight_dtype = ctx.dtypes
        return (
            grad_hidden.to(hidden_dtype) if need_hidden else None,
            grad_weight.to(weight_dtype) if need_weight else None,
            None,
            None,
        )


def token_logps_from_logits(logits: Tensor, token_ids: Tensor, temperature: float = 1.0) -> Tensor:
    """log softmax(logits / temperature) at `token_ids`: (N, T, V) and (N, T) → (N, T) float32."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    token_logits = logits.gather(-1, token_ids.unsqueeze(-1)).squeeze(-1)
    return token_logits - torch.logsumexp(logits, dim=-1)


def checkpointed(model: PreTrainedModel) -> bool:
    """Whether this forward would run with transformers' activation checkpointing (training mode, gradients on)."""
    return model.training and torch.is_grad_enabled() and activation_checkpointing_enabled(model)


def prompts_can_be_shared(model: PreTrainedModel) -> bool:
    """Whether `forward_after_shared_prefix` may run this model: not where checkpointed layers would drop the
    cache (transformers before `_can_checkpoint_with_cache`), nor while gradients are on through torch's
    `checkpoint_wrapper` (e.g. Lightning FSDP's `activation_checkpointing_policy`) with a checkpointing function
    whose recomputation cannot be marked (the reentrant one, a user's own): it replays the prompt's pass too and
    would write the shared cache again."""
    if checkpointed(model) and not _CHECKPOINTING_KEEPS_A_READ_ONLY_CACHE:
        return False
    return not torch.is_grad_enabled() or all(marks_its_recomputation(w.checkpoint_fn) for w in checkpoint_wrappers(model))


def checkpoint_wrappers(model: PreTrainedModel) -> list[torch.nn.Module]:
    """The modules wrapped by torch's `checkpoint_wrapper`, matched by name: the class sits in a private torch module."""
    return [m for m in model.modules() if type(m).__name__ == "CheckpointWrapper"]


class ReadOnlyPrefixCache(DynamicCache):
    """A DynamicCache that, once `read_only`, returns the stored prefix joined with each new key and value
    states (as DynamicCache does) but keeps nothing.

    Activation checkpointing replays a layer in backward; a cache that stored the continuation's states would
    then hold them twice. Read-only, a replay reads exactly the prefix that the forward read.
    `read_only_for(K)`: each prefix row is continued by K consecutive rows of the new states. Plain layers join
    the prefix, broadcast K times, in the one copy that joining makes anyway (no K-times repeated prefix is
    stored); other layer kinds (sliding window) get the prefix repeated and their own update.
    Within `replaying()` (the recomputation of a checkpointed prefix layer in backward) an update returns what
    the prefix's own update returned in the forward, from the layer's state before it, and again keeps nothing.
    """

    read_only = False
    repeats = 1
    replaying_prefix = False
    records_for_replay = False  # set while checkpointed prefix layers write the cache

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.states_before_prefix: dict[int, dict] = {}  # layer → its attributes before the prefix's update

    def read_only_for(self, repeats: int) -> None:
        if all(type(layer) is DynamicLayer for layer in self.layers):
            self.repeats = repeats
        elif repeats > 1:
            self.batch_repeat_interleave(repeats)
        self.read_only = True

    @contextmanager
    def replaying(self) -> Iterator[None]:
        self.replaying_prefix = True
        try:
            yield
        finally:
            self.replaying_prefix = False

    def update(self, key_states: Tensor, value_states: Tensor, layer_idx: int, *args, **kwargs):
        if self.replaying_prefix:
            return self._update_from(self.states_before_prefix[layer_idx], key_states, value_states, layer_idx, *args, **kwargs)
        layer = self.layers[layer_idx]
        if not self.read_only:
            if not self.records_for_replay:
                return super().update(key_states, value_states, layer_idx, *args, **kwargs)
            # References, not copies: the layer's update rebinds its tensors rather than writing into them.
            before = self.states_before_prefix[layer_idx] = dict(vars(layer))
            keys, values = super().update(key_states, value_states, layer_idx, *args, **kwargs)
            if type(layer) is DynamicLayer and before["is_initialized"]:  # views of the joined states: the old ones go
                length = before["keys"].shape[-2]
                before.update(keys=keys[..., :length, :], values=values[..., :length, :])
            return keys, values
        if type(layer) is DynamicLayer:
            return joined_states(layer.keys, key_states, self.repeats), joined_states(layer.values, value_states, self.repeats)
        return self._update_from(dict(vars(layer)), key_states, value_states, layer_idx, *args, **kwargs)

    def _update_from(self, state: dict, key_states: Tensor, value_states: Tensor, layer_idx: int, *args, **kwargs):
        """The layer's own update run from `state` (its attributes at some point); the layer is left as it is."""
        layer = self.layers[layer_idx]
        current = dict(vars(layer))
        vars(layer).clear()
        vars(layer).update(state)
        try:
            return super().update(key_states, value_states, layer_idx, *args, **kwargs)
        finally:
            vars(layer).clear()
            vars(layer).update(current)


def joined_states(prefix: Tensor, new: Tensor, repeats: int) -> Tensor:
    """prefix (B, H, L, d) and new (B·R, H, T, d), R rows per prefix row → (B·R, H, L + T, d), written once."""
    B, H, L, D = prefix.shape
    if repeats == 1:
        return torch.cat([prefix, new], dim=-2)
    T = new.shape[-2]
    both = torch.cat([prefix[:, None].expand(B, repeats, H, L, D), new.view(B, repeats, H, T, D)], dim=3)
    return both.view(B * repeats, H, L + T, D)


@contextmanager
def checkpointed_layers(
    model: PreTrainedModel, *, checkpoint: bool, keep_cache: bool, replayed_cache: ReadOnlyPrefixCache | None = None
) -> Iterator[None]:
    """Within: the model's checkpointable layers checkpoint (or not), and keep a passed cache (or drop it, the
    transformers default under checkpointing). Layers whose checkpointing is off are left alone.
    `replayed_cache`: the layers write that cache, and their recomputation in backward runs within its
    `replaying()`, so that it returns the forward's states again and writes nothing. Where a layer's
    checkpointing cannot say when it recomputes (not torch's non-reentrant `checkpoint`), the layers run
    unchecked instead."""
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing]
    replayed = []
    if replayed_cache is not None:
        if checkpoint and all(marks_its_recomputation(layer._gradient_checkpointing_func) for layer in layers):
            replayed = [(layer, "_gradient_checkpointing_func") for layer in layers]
        else:
            checkpoint = False
    for layer in layers:
        layer.gradient_checkpointing, layer._can_checkpoint_with_cache = checkpoint, keep_cache
    try:
        with replaying_in_backward(replayed, replayed_cache):
            yield
    finally:
        for layer in layers:
            layer.gradient_checkpointing = True
            del layer._can_checkpoint_with_cache  # back to the class's default


def marks_its_recomputation(function) -> bool:
    """Whether a checkpointing function is torch's non-reentrant `checkpoint` with its keywords bound (as
    transformers and `checkpoint_wrapper` bind them): the only kind whose recomputation takes a context."""
    return isinstance(function, partial) and function.keywords.get("use_reentrant") is False


def replaying_checkpoint(function: partial, cache: ReadOnlyPrefixCache) -> partial:
    """A checkpointing function that `marks_its_recomputation`, whose recomputation also runs within
    `cache.replaying()`, next to the layer's own `context_fn` (selective checkpointing's)."""
    own_contexts = function.keywords.get("context_fn", noop_context_fn)

    def contexts():
        forward, recompute = own_contexts()
        return forward, _both(recompute, cache.replaying())

    return partial(function, context_fn=contexts)


@contextmanager
def replaying_in_backward(holders: list[tuple[torch.nn.Module, str]], cache: ReadOnlyPrefixCache | None) -> Iterator[None]:
    """Within: the checkpointing function held at each (module, attribute) — transformers' layers'
    `_gradient_checkpointing_func`, torch's `checkpoint_wrapper`'s `checkpoint_fn`, each one that
    `marks_its_recomputation` — also runs its recomputation within `cache.replaying()`, and the cache records the
    states those replays need. No holders: nothing changes."""
    functions = [getattr(module, attribute) for module, attribute in holders]
    for (module, attribute), function in zip(holders, functions, strict=True):
        setattr(module, attribute, replaying_checkpoint(function, cache))
    if holders:
        cache.records_for_replay = True
    try:
        yield
    finally:
        for (module, attribute), function in zip(holders, functions, strict=True):
            setattr(module, attribute, function)
        if holders:
            cache.records_for_replay = False


@contextmanager
def _both(first, second) -> Iterator[None]:
    with first, second:
        yield


def cache_argument_name(model: PreTrainedModel) -> str:
    """The keyword that takes a KV cache in this model's forward (and `generate`): transformers 5 renames
    `past_key_values` to `cache`, model by model."""
    base_model = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT wrapper takes **kwargs
    return "cache" if "cache" in inspect.signature(base_model.forward).parameters else "past_key_values"


def forward_after_shared_prefix(
    model: PreTrainedModel,
    prefix_ids: Tensor,
    prefix_mask: Tensor,
    continuation_ids: Tensor,
    continuation_mask: Tensor,
    logits_to_keep: int,
    hidden_states: bool = False,
    prefix_inputs: dict[str, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Logits of B·K continuations that share B prefixes, reading each prefix once.

    prefix (B, L) left-padded; continuation (B·K, T), K per prefix, padded either side (the
    attention mask and position ids skip the holes). The prefix runs once per prompt, its KV
    cache serves its K continuations (`ReadOnlyPrefixCache.read_only_for`): the cost grows
    with K·T, not K·(L + T). Gradients flow through the shared cache into the prefixes.
    Under activation checkpointing the prefixes' layers are checkpointed too: their recomputation in backward
    returns the cache's states as the forward did and writes nothing (`ReadOnlyPrefixCache.replaying`); the
    continuation's layers are checkpointed with the prefix cache, read-only, kept. On SmolLM2-135M-Instruct
    under `student.gradient_checkpointing=full` this sharing takes 8 % off a GRPO step and 26 % off its peak
    RSS against repeating each prompt K times (`python scripts/bench_mechanisms.py`,
    outputs/bench/mechanisms_smollm2.json: `checkpointed` against `checkpointed_prompts_repeated`).
    `prefix_inputs`: more keyword arguments of the prefix's forward (a vision-language student's pixel inputs for
    the images in the prefixes); the continuations then read the images through the cache alone.
    Returns the prefix's last-position logits (B·K, V) — what predicts the first
    continuation token — and the continuation's last `logits_to_keep` positions (B·K, n, V);
    with `hidden_states`, the last hidden states there instead ((B·K, H) and (B·K, n, H)).
    """
    cache_argument = cache_argument_name(model)
    K = continuation_ids.shape[0] // prefix_ids.shape[0]
    cache = ReadOnlyPrefixCache(config=model.config)
    if not prompts_can_be_shared(model):
        raise RuntimeError("forward_after_shared_prefix: this model's checkpointed layers would drop or rewrite the cache")
    with_checkpointing = checkpointed(model)

    def run(input_ids: Tensor, attention_mask: Tensor, positions: Tensor, keep: int, **more):
        """One forward on top of the cache; the mask covers the cached tokens and these."""
        return model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=positions,
            # Under checkpointing transformers turns use_cache off itself, with a warning that would read as if
            # the prefix were not shared; the cache passed here is read and written either way.
            use_cache=not with_checkpointing,
            logits_to_keep=1 if hidden_states else keep,  # hidden states: no (N, n, V) logits
            output_hidden_states=hidden_states,
            **{cache_argument: cache},
            **more,
        )

    def last_positions(output, count: int) -> Tensor:
        return output.hidden_states[-1][:, -count:] if hidden_states else output.logits[:, -count:]

    wrappers = checkpoint_wrappers(model) if torch.is_grad_enabled() else []
    prefix_mask = prefix_mask.long()
    with (
        checkpointed_layers(model, checkpoint=True, keep_cache=True, replayed_cache=cache) if with_checkpointing else nullcontext(),
        replaying_in_backward([(wrapper, "checkpoint_fn") for wrapper in wrappers], cache),  # checked by prompts_can_be_shared
    ):
        prefix_positions, rope_deltas = position_ids(model, prefix_ids, prefix_mask, prefix_inputs)
        prefix = run(prefix_ids, prefix_mask, prefix_positions, keep=1, **(prefix_inputs or {}))
    cache.read_only_for(K)
    attention_mask = torch.cat([prefix_mask.repeat_interleave(K, 0), continuation_mask.long()], dim=1)
    # Positions skip the holes; after a multimodal-RoPE prefix they continue from its rope delta.
    continuation_positions = text_positions(attention_mask)[:, -continuation_ids.shape[1] :] + rope_deltas.repeat_interleave(K, 0)
    with checkpointed_layers(model, checkpoint=True, keep_cache=True) if with_checkpointing else nullcontext():
        continuation = run(continuation_ids, attention_mask, continuation_positions, keep=logits_to_keep)
    return last_positions(prefix, 1)[:, -1].repeat_interleave(K, 0), last_positions(continuation, logits_to_keep)
