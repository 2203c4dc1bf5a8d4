"""A forward whose output is read at the last position only: its last layer runs there only.

A judge's Yes/No logits, the first sampled token's logits, a prompt cache that `generate` continues: these
forwards read the model's output at one position (`logits_to_keep=1`) or none. Every layer but the last must
still run at every position (their outputs are the next layer's keys and values), but the last layer's output
at the other positions is thrown away. Within `reading_last_position_only(model)` the last layer computes its
keys and values at every position (they go into the KV cache as before) and its query, attention output and
MLP at the last position only: the last layer's work shrinks to its key and value projections. (llama.cpp
drops these positions in its last layer too, "skip computing output for unused tokens", after the attention.)
The logits are the same up to the matmuls' rounding, the cache bit for bit (tested).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor
from transformers import DynamicCache, PreTrainedModel

LLAMA_PATTERN_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")  # pre-norm attention + MLP layers, rotary q/k
_ATTENTION_WITH_A_4D_MASK = ("eager", "sdpa")  # flash attention's mask is (N, S): its rows cannot be sliced


def can_read_last_position_only(model: PreTrainedModel) -> bool:
    """A Llama-pattern decoder whose last layer attends with a (N, 1, T, S) mask (or none), over all positions."""
    config = model.config
    if getattr(config, "is_encoder_decoder", False) or getattr(config, "model_type", None) not in LLAMA_PATTERN_MODEL_TYPES:
        return False
    if getattr(config, "_attn_implementation", None) not in _ATTENTION_WITH_A_4D_MASK:
        return False
    last = model.get_decoder().layers[-1]
    attention = getattr(last, "self_attn", None)
    # A wrapped layer (an FSDP unit, a checkpoint wrapper) gathers or replays in its own forward: left to it.
    if attention is None or type(last).__module__ != type(attention).__module__:
        return False
    return getattr(attention, "sliding_window", None) is None  # a windowed layer's cache keeps its own length


@contextmanager
def reading_last_position_only(model: PreTrainedModel) -> Iterator[None]:
    """Within: the model's last layer returns its hidden state at the last position only, (N, 1, H), after
    writing its keys and values for all T positions into the cache as the layer itself would. A forward of one
    position, and a model this cannot run (`can_read_last_position_only`), run as they are."""
    if not can_read_last_position_only(model):
        yield
        return
    layer = model.get_decoder().layers[-1]
    layer_forward = layer.forward
    attention = layer.self_attn
    attention_module = sys.modules[type(attention).__module__]
    apply_rotary, eager_attention = attention_module.apply_rotary_pos_emb, attention_module.eager_attention_forward
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    def last_position_forward(hidden_states: Tensor, *args, **kwargs) -> Tensor:
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if args or hidden_states.shape[1] == 1 or kwargs.get("position_embeddings") is None or (
            cache is not None and not isinstance(cache, DynamicCache)  # a static cache writes where cache_position says
        ):
            return layer_forward(hidden_states, *args, **kwargs)
        attention_mask = kwargs.pop("attention_mask", None)
        cos, sin = kwargs.pop("position_embeddings")
        for consumed in ("cache", "past_key_values", "position_ids", "use_cache", "cache_position"):
            kwargs.pop(consumed, None)  # the rest goes on to the attention function, as the layer passes it
        N, T, _ = hidden_states.shape
        x = layer.input_layernorm(hidden_states)
        q = attention.q_proj(x[:, -1:]).view(N, 1, -1, attention.head_dim)
        k = attention.k_proj(x).view(N, T, -1, attention.head_dim)
        v = attention.v_proj(x).view(N, T, -1, attention.head_dim).transpose(1, 2)
        if hasattr(attention, "q_norm"):  # Qwen3 normalises each head's query and key before the rotation
            q, k = attention.q_norm(q), attention.k_norm(k)
        q = apply_rotary(q.transpose(1, 2), q.transpose(1, 2), cos[:, -1:], sin[:, -1:])[0]
        k = apply_rotary(k.transpose(1, 2), k.transpose(1, 2), cos, sin)[1]
        if cache is not None:
            k, v = cache.update(k, v, attention.layer_idx)
        if attention_mask is not None:
            attention_mask = attention_mask[:, :, -1:, :]  # the last query's row: every key it may read
        attend = ALL_ATTENTION_FUNCTIONS.get(model.config._attn_implementation, eager_attention)
        dropout = attention.attention_dropout if attention.training else 0.0
        out, _ = attend(attention, q, k, v, attention_mask, dropout=dropout, scaling=attention.scaling, **kwargs)
        hidden = hidden_states[:, -1:] + attention.o_proj(out.reshape(N, 1, -1))
        return hidden + layer.mlp(layer.post_attention_layernorm(hidden))

    own_forward = vars(layer).get("forward")  # an instance's own forward (a hook library's), put back after
    layer.forward = last_position_forward
    try:
        yield
    finally:
        if own_forward is None:
            del layer.forward  # the class's forward again
        else:
            layer.forward = own_forward
