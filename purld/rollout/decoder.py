"""purld's own decoder (`rollout=static`): a preallocated KV cache and one fixed-shape step per new token.

transformers' `generate` spends a GPU decode step on Python and kernel launches, not on the GPU's work
(23 ms per token step measured for a 0.5 B model on an H100, where reading its weights takes 0.3 ms). This
decoder does the same sampling with tensors whose shapes and addresses never change during a rollout, so on
CUDA its step is captured once as a CUDA graph and replayed per token: one launch instead of hundreds.

- Each prompt is read once (transformers' forward over the B prompts); its KV states are copied into the K
  rows that continue it.
- A step samples from the last logits, writes the token and its log-prob into the outputs, then runs the
  token through the student's own modules (norms, projections, rotary embedding, MLP, so LoRA adapters and
  purld's lean layers apply) with attention over the static cache. A row that has emitted EOS emits padding,
  as `generate` pads it.
- Sampling is the Gumbel-max draw `argmax(log π − log E)`, E ~ Exp(1): exactly a draw from π, with no
  host synchronisation (`torch.multinomial` can sync), but a different random stream from `generate`'s.

Students whose layers follow Llama's pattern: Llama, Mistral (without a sliding window shorter than prompt +
completion), Qwen2, Qwen3. On a CPU the step runs eagerly, attending only to the columns written so far; it is
faster than `generate` there too, mostly because a static cache is written in place where transformers'
dynamic cache concatenates every layer's states at every step: on SmolLM2-135M-Instruct (GRPO, 4 prompts ×
K 4 × 64 tokens, 2 cores) the whole step took 0.89 of `rollout=default`'s, where `generate` with
`cache_implementation="static"` took 1.06 (`python scripts/bench_mechanisms.py`). `rollout=default` stays the
default for now: its random stream is the one the README's calibrated runs used. The CUDA graph path is
tested by `tests/unit/test_decoder.py` where a GPU is present; `scripts/gpu_bench.sh` measures it.
"""

from __future__ import annotations

import logging
import sys
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import DynamicCache, PreTrainedModel

from purld.rollout.logprobs import cache_argument_name
from purld.rollout.positions import text_positions

log = logging.getLogger(__name__)

LLAMA_PATTERN_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")  # pre-norm attention + MLP layers, rotary q/k
PROMPT_BUCKET = 64  # prompt widths round up to a multiple of this, so that one captured graph serves many batches
CHECK_FINISHED_EVERY = 8  # on CUDA, steps between the host's checks that every row has ended (each check syncs)


def check_decodable(model: PreTrainedModel, total_length: int | None = None) -> None:
    """Raise, naming the student's model type or the key at fault, where this decoder cannot run the student."""
    config = model.config
    model_type = getattr(config, "model_type", type(model).__name__)
    if config.is_encoder_decoder or model_type not in LLAMA_PATTERN_MODEL_TYPES:
        raise ValueError(
            f"rollout=static: the student's model_type {model_type!r} is not one this decoder runs "
            f"({', '.join(LLAMA_PATTERN_MODEL_TYPES)}); use rollout=default (transformers' generate)"
        )
    window = getattr(config, "sliding_window", None)
    windowed = window is not None and (
        getattr(config, "use_sliding_window", True) and "sliding_attention" in (getattr(config, "layer_types", None) or ["sliding_attention"])
    )
    if windowed and total_length is not None and total_length > window:
        raise ValueError(
            f"rollout=static: prompt + completion ({total_length} tokens) pass the student's sliding_window "
            f"({window}), which this decoder does not apply; use rollout=default"
        )


@dataclass
class _Layout:
    """What a captured step is specialised to: a new one is built when any of these changes."""

    rows: int
    prompt_width: int
    new_tokens: int
    device: torch.device
    autocast_dtype: torch.dtype | None


class StaticCacheDecoder:
    """Samples `new_tokens` tokens for each of B·K rows (row b·K + k continues prompt b).

    `decode(prompt_ids (B, L), prompt_mask (B, L), K)` returns the completion ids (B·K, T) (padding after the
    first EOS, T ≤ new_tokens: it stops once every row has ended, as `generate` does) and the log-prob of
    each sampled token under the sampling distribution softmax(logits / temperature) (B·K, T), 0 after EOS.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        temperature: float,
        eos_token_id: int | list[int],
        pad_token_id: int,
        suppress_token_id: int | list[int] | None = None,
        cuda_graphs: bool = True,
    ) -> None:
        check_decodable(model)
        self.model, self.temperature = model, temperature
        # Several ids end a completion where a checkpoint has several (Llama-3: <|eot_id|> and <|end_of_text|>).
        self.eos_token_ids = torch.tensor(eos_token_id if isinstance(eos_token_id, list) else [eos_token_id])
        self.pad_token_id, self.suppress_token_id = pad_token_id, suppress_token_id
        self.cuda_graphs = cuda_graphs
        self.decoder = model.get_decoder()
        self.output_head = model.get_output_embeddings()
        first_attention = self.decoder.layers[0].self_attn
        self.heads = model.config.num_attention_heads
        self.kv_heads = getattr(model.config, "num_key_value_heads", None) or self.heads
        self.head_dim = first_attention.head_dim
        # The model's own rotary function (Llama's, Qwen2's, ... are the same formula, each in its own module).
        self.apply_rotary = sys.modules[type(first_attention).__module__].apply_rotary_pos_emb
        self._layout: _Layout | None = None
        self._graph = None

    @property
    def graph_captured(self) -> bool:
        """Whether the last rollout replayed a captured CUDA graph (False on a CPU, or after a failed capture)."""
        return self._graph is not None

    # ------------------------------------------------------------------ buffers
    def _allocate(self, layout: _Layout, state_dtype: torch.dtype, logits_dtype: torch.dtype) -> None:
        N, width, device = layout.rows, layout.prompt_width + layout.new_tokens, layout.device
        shape = (N, self.kv_heads, width, self.head_dim)
        # Zeros, not empty memory: a masked column's zero attention weight times NaN would still be NaN.
        self.keys = [torch.zeros(shape, dtype=state_dtype, device=device) for _ in self.decoder.layers]
        self.values = [torch.zeros(shape, dtype=state_dtype, device=device) for _ in self.decoder.layers]
        self.attendable = torch.zeros((N, 1, 1, width), dtype=torch.bool, device=device)
        self.logits = torch.zeros((N, self.output_head.out_features), dtype=logits_dtype, device=device)
        self.positions = torch.zeros((N, 1), dtype=torch.long, device=device)  # the next token's position id
        self.write_index = torch.zeros(1, dtype=torch.long, device=device)  # its column in the cache
        self.step_index = torch.zeros(1, dtype=torch.long, device=device)  # its column in the outputs
        self.finished = torch.zeros(N, dtype=torch.bool, device=device)
        self.eos_token_ids = self.eos_token_ids.to(device)  # before any capture: no copy inside the graph
        self.token_ids = torch.zeros((N, layout.new_tokens), dtype=torch.long, device=device)
        self.token_logps = torch.zeros((N, layout.new_tokens), dtype=torch.float32, device=device)
        self._layout, self._graph = layout, None

    def _read_prompts(self, prompt_ids: Tensor, prompt_mask: Tensor) -> tuple[DynamicCache, Tensor]:
        """One forward over the B prompts (left-padded): their KV cache and the logits of each first new token."""
        mask = prompt_mask.long()
        cache = DynamicCache(config=self.model.config)
        logits = self.model(
            input_ids=prompt_ids, attention_mask=mask, position_ids=text_positions(mask), use_cache=True,
            logits_to_keep=1, **{cache_argument_name(self.model): cache},
        ).logits[:, -1]
        return cache, logits

    def _load_prompts(self, cache: DynamicCache, logits: Tensor, prompt_mask: Tensor, K: int) -> None:
        """Write each prompt's states into its K rows, right-aligned in the prompt columns; reset the step state."""
        (B, L), P = prompt_mask.shape, self._layout.prompt_width
        # Only the prompt columns are written: the others are masked until a step writes them, and hold zeros or an
        # earlier rollout's states, finite either way (`_allocate`).
        for layer, keys, values in zip(cache.layers, self.keys, self.values):
            for states, prompt_states in ((keys, layer.keys), (values, layer.values)):
                states.view(B, K, *states.shape[1:])[:, :, :, P - L : P].copy_(prompt_states[:, None])
        self.attendable.zero_()
        self.attendable[:, 0, 0, P - L : P].copy_(prompt_mask.bool().repeat_interleave(K, 0))
        self.logits.copy_(logits.repeat_interleave(K, 0))
        self.positions.copy_(prompt_mask.long().sum(-1, keepdim=True).repeat_interleave(K, 0))
        self.write_index.fill_(P)
        self.step_index.zero_()
        self.finished.zero_()
        self.token_ids.fill_(self.pad_token_id)
        self.token_logps.zero_()

    def _release(self) -> None:
        """Drop the buffers between eager rollouts: a long prompt's cache for B·K rows is large (GSM8K on the
        harness's small model in float32: 0.5 GB), and it would sit through the update, the step's peak."""
        self.keys = self.values = []
        self.attendable = self.logits = self.positions = self.write_index = self.step_index = None
        self.finished = self.token_ids = self.token_logps = None
        self._layout = self._graph = None

    # ------------------------------------------------------------------ one step
    def _sample(self) -> Tensor:
        """Draw each row's next token from the current logits; record it and its log-prob at `step_index`."""
        scores = self.logits.float() / self.temperature
        if self.suppress_token_id is not None:
            scores[:, self.suppress_token_id] = float("-inf")
        logps = scores.log_softmax(-1)
        drawn = (logps - torch.empty_like(logps).exponential_().log()).argmax(-1)  # Gumbel-max: a draw from exp(logps)
        token = drawn.masked_fill(self.finished, self.pad_token_id)
        token_logp = logps.gather(-1, drawn[:, None]).squeeze(-1).masked_fill(self.finished, 0.0)
        self.finished |= torch.isin(token, self.eos_token_ids)
        self.token_ids.index_copy_(1, self.step_index, token[:, None])
        self.token_logps.index_copy_(1, self.step_index, token_logp[:, None])
        return token

    def _forward(self, token: Tensor, width: int | None) -> None:
        """Run (N,) tokens at `positions` through the student, writing their states at `write_index`; the
        logits of the next token go to `self.logits`. `width`: attend to the first `width` cache columns only
        (eager decoding); None: to all of them (a captured step, whose shapes cannot change)."""
        N = token.shape[0]
        hidden = self.decoder.embed_tokens(token[:, None])  # (N, 1, H)
        cos, sin = self.decoder.rotary_emb(hidden, self.positions)
        self.attendable.index_fill_(-1, self.write_index, True)
        attendable = self.attendable if width is None else self.attendable[..., :width]
        groups = self.heads // self.kv_heads
        for layer, keys, values in zip(self.decoder.layers, self.keys, self.values):
            attention = layer.self_attn
            x = layer.input_layernorm(hidden)
            q = attention.q_proj(x).view(N, 1, self.heads, self.head_dim)
            k = attention.k_proj(x).view(N, 1, self.kv_heads, self.head_dim)
            v = attention.v_proj(x).view(N, 1, self.kv_heads, self.head_dim)
            if hasattr(attention, "q_norm"):  # Qwen3 normalises each head's query and key before the rotation
                q, k = attention.q_norm(q), attention.k_norm(k)
            q, k = self.apply_rotary(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
            keys.index_copy_(2, self.write_index, k.to(keys.dtype))
            values.index_copy_(2, self.write_index, v.transpose(1, 2).to(values.dtype))
            cached_keys, cached_values = (keys, values) if width is None else (keys[:, :, :width], values[:, :, :width])
            # One query per row: a KV head's `groups` query heads go in as `groups` query positions, so grouped-query
            # attention needs no repeated keys and values.
            q = q.reshape(N, self.kv_heads, groups, self.head_dim).to(keys.dtype)
            scores = torch.matmul(q, cached_keys.transpose(2, 3)) * attention.scaling
            scores = scores.float().masked_fill(~attendable, float("-inf")).softmax(-1).to(cached_values.dtype)
            out = torch.matmul(scores, cached_values)
            hidden = hidden + attention.o_proj(out.reshape(N, 1, self.heads * self.head_dim))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        self.logits.copy_(self.output_head(self.decoder.norm(hidden))[:, -1])
        self.positions += 1
        self.write_index += 1
        self.step_index += 1

    def _step(self, width: int | None = None) -> None:
        self._forward(self._sample(), width)

    # ------------------------------------------------------------------ CUDA graph
    def _capture(self) -> None:
        """Record one step as a CUDA graph over the buffers. Its warm-up steps run on garbage state, which
        `_load_prompts` overwrites before every rollout. Autocast's weight cache cannot live in a graph, so the
        step is recorded under the caller's autocast with the cache off. A failure leaves eager decoding."""
        autocast_dtype = self._layout.autocast_dtype
        autocast = (
            torch.autocast("cuda", dtype=autocast_dtype, cache_enabled=False) if autocast_dtype is not None else nullcontext()
        )
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream), autocast:
                for _ in range(2):
                    self.write_index.fill_(self._layout.prompt_width)
                    self.step_index.zero_()
                    self._step()
            torch.cuda.current_stream().wait_stream(stream)
            self.write_index.fill_(self._layout.prompt_width)
            self.step_index.zero_()
            graph = torch.cuda.CUDAGraph()
            # thread_local: only this thread's unsafe calls (an allocation) break the capture, not a logger's or a
            # data loader's thread touching CUDA meanwhile (the default, global, would fail on theirs too).
            with torch.cuda.graph(graph, capture_error_mode="thread_local"), autocast:
                self._step()
            self._graph = graph
        except Exception as error:  # noqa: BLE001 - any capture failure: decode eagerly, say why once
            self.cuda_graphs = False
            log.warning("rollout=static: CUDA graph capture failed (%s: %s); decoding eagerly", type(error).__name__, error)

    # ------------------------------------------------------------------ rollout
    @torch.no_grad()
    def decode(self, prompt_ids: Tensor, prompt_mask: Tensor, K: int, new_tokens: int) -> tuple[Tensor, Tensor]:
        B, L = prompt_ids.shape
        device = prompt_ids.device
        graphed = self.cuda_graphs and device.type == "cuda"
        prompt_width = -(-L // PROMPT_BUCKET) * PROMPT_BUCKET if graphed else L
        check_decodable(self.model, L + new_tokens)  # the bucket's extra columns are masked, never attended
        autocast_dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
        layout = _Layout(B * K, prompt_width, new_tokens, device, autocast_dtype)
        cache, first_logits = self._read_prompts(prompt_ids, prompt_mask)
        if layout != self._layout:
            # Under bf16 autocast a Llama's rotated keys come out in float32 and its values in bf16, and its attention
            # casts both to bf16 before the product: the cache keeps both in the values' dtype, the same numbers in
            # half the memory, without casting the whole cache at every step.
            self._allocate(layout, cache.layers[0].values.dtype, first_logits.dtype)
            if graphed:
                self._capture()
                graphed = self._graph is not None
        self._load_prompts(cache, first_logits, prompt_mask, K)
        del cache, first_logits
        steps = 0
        while steps < new_tokens - 1:  # the last token needs no forward pass
            if graphed:
                self._graph.replay()
            else:
                self._step(width=prompt_width + steps + 1)
            steps += 1
            if (not graphed or steps % CHECK_FINISHED_EVERY == 0) and bool(self.finished.all()):
                break
        else:
            self._sample()
            steps = new_tokens
        completion_ids, token_logps = self.token_ids[:, :steps].clone(), self.token_logps[:, :steps].clone()
        if not graphed:  # a captured graph needs its buffers where they are; eager decoding allocates them again
            self._release()
        return completion_ids, token_logps
