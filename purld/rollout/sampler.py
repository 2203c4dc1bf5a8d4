"""Sample K candidates per prompt in one batched `generate` call (KV cache, no grad), each prompt read once.

The sampling log-probs are recorded while sampling, from the very logits the
sampler draws from, so the GRPO objective can use them as π_old without a
second forward pass. Only temperature is applied (no top-k / top-p): the
recorded log-probs are then exactly those of the full policy at that
temperature, the quantity the training forward pass recomputes (as TRL does).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor
from transformers import (
    DynamicCache,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from purld.rollout.decoder import StaticCacheDecoder, check_decodable
from purld.rollout.logprobs import cache_argument_name
from purld.rollout.positions import multimodal_rope_index, multimodal_token_types, text_positions
from purld.students.base import in_eval_mode
from purld.types import Candidates, PromptBatch, Rollout, stack_vision_inputs


class _RecordSamplingLogps(LogitsProcessor):
    """Applies the temperature and keeps log π(y_t) of each sampled token.

    The token sampled at step t is only known at step t + 1 (as the last input
    id), so each call gathers the previous step's log-probs; the final step is
    gathered after `generate` returns. Memory: one (N, V) slice at a time.
    """

    def __init__(self, temperature: float, suppress_token_id: int | list[int] | None) -> None:
        self.temperature = temperature
        self.suppress_token_id = suppress_token_id
        self.previous_logps: Tensor | None = None
        self.token_logps: list[Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.float() / self.temperature
        if self.suppress_token_id is not None:
            scores[:, self.suppress_token_id] = float("-inf")
        if self.previous_logps is not None:
            self.token_logps.append(self.previous_logps.gather(-1, input_ids[:, -1:]).squeeze(-1))
        self.previous_logps = scores.log_softmax(-1)
        return scores

    def finish(self, last_token_ids: Tensor) -> Tensor:
        self.token_logps.append(self.previous_logps.gather(-1, last_token_ids[:, None]).squeeze(-1))
        return torch.stack(self.token_logps, dim=1)


def stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every id that ends a completion: the tokenizer's EOS and the checkpoint's generation EOS ids (Llama-3
    Instruct ends a turn with <|eot_id|> and the text with <|end_of_text|>), the tokenizer's first."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    configured = configured if isinstance(configured, list) else [] if configured is None else [configured]
    return list(dict.fromkeys([tokenizer.eos_token_id, *configured]))


def sampling_config(stop_ids: list[int], pad_token_id: int, **settings) -> GenerationConfig:
    """The generation config purld samples with: `settings` (max_new_tokens, do_sample, top_k, …) and the stop
    ids, over transformers' defaults. Used with `without_checkpoint_generation_config`, so that nothing of the
    checkpoint's config is merged in."""
    return GenerationConfig(**settings, eos_token_id=stop_ids, pad_token_id=pad_token_id)


@contextmanager
def without_checkpoint_generation_config(model: PreTrainedModel) -> Iterator[None]:
    """Set the checkpoint's `generation_config` aside for the block (token ids kept).

    `generate` fills every field that the config it is given leaves None from the model's own, and builds logits
    processors from them (Qwen2.5-Instruct ships `repetition_penalty: 1.05`; others `no_repeat_ngram_size`,
    `suppress_tokens`, `min_p`, …). They would change the distribution that is sampled, and the recorded log-probs
    would no longer be the policy's. The checkpoint's config is put back afterwards: the saved student keeps it."""
    target = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft: the transformers model
    checkpoint_config = target.generation_config
    ids = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")
    target.generation_config = GenerationConfig(**{name: getattr(checkpoint_config, name, None) for name in ids})
    try:
        yield
    finally:
        target.generation_config = checkpoint_config


def completion_mask_from_ids(completion_ids: Tensor, eos_token_id: int | list[int]) -> tuple[Tensor, Tensor]:
    """(…, T) mask of tokens up to and including the first EOS (any of the ids), and (…) `is_truncated` (no EOS)."""
    eos_ids = torch.tensor(eos_token_id if isinstance(eos_token_id, list) else [eos_token_id], device=completion_ids.device)
    is_eos = torch.isin(completion_ids, eos_ids)
    seen_eos_before = (is_eos.long().cumsum(-1) - is_eos.long()) > 0
    return ~seen_eos_before, ~is_eos.any(-1)


def decode_completions(tokenizer: PreTrainedTokenizerBase, completion_ids: Tensor, completion_mask: Tensor) -> list[list[str]]:
    """(B, K, T) ids → B lists of K strings, special tokens dropped."""
    B, K, T = completion_ids.shape
    flat_ids = completion_ids.reshape(B * K, T).masked_fill(~completion_mask.reshape(B * K, T), tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(flat_ids, skip_special_tokens=True)
    return [texts[b * K : (b + 1) * K] for b in range(B)]


def candidates_from_texts(tokenizer: PreTrainedTokenizerBase, texts: list[list[str]], device: torch.device | str) -> Candidates:
    """Tokenize given completions (e.g. the anchor, a greedy answer) as Candidates, EOS appended."""
    B, K = len(texts), len(texts[0])
    encoded = [tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for row in texts for text in row]
    T = max(len(ids) for ids in encoded)
    completion_ids = torch.full((B * K, T), tokenizer.pad_token_id, dtype=torch.long)
    completion_mask = torch.zeros((B * K, T), dtype=torch.bool)
    for row, ids in enumerate(encoded):
        completion_ids[row, : len(ids)] = torch.tensor(ids)
        completion_mask[row, : len(ids)] = True
    return Candidates(
        texts=[list(row) for row in texts],
        completion_ids=completion_ids.reshape(B, K, T).to(device),
        completion_mask=completion_mask.reshape(B, K, T).to(device),
    )


@torch.no_grad()
def generate_completions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    batch: PromptBatch,
    num_samples: int = 1,
    **generate_kwargs,
) -> Tensor:
    """One batched `generate` (KV cache, eval mode, no grad) of `num_samples` completions per prompt, row b·K + k
    sampling prompt b; returns only the new tokens (B·K, T). `generate_kwargs` are generation settings
    (`sampling_config`, never the checkpoint's) or `generate` arguments (logits_processor, a cache).

    With num_samples > 1 each prompt is read once (`prompt_cache_for_samples`) where `generate` would read it
    once per sample (`num_return_sequences` repeats the prompts first). A vision-language student reads the
    prompts' images with them: in that shared prompt cache, or else as pixel inputs repeated for each sample
    (a multimodal-RoPE student, whose `generate` also gets the image tokens' places: `mm_token_type_ids`)."""
    with in_eval_mode(model):
        prompt_ids, prompt_mask = batch.prompt_ids, batch.prompt_mask.long()
        if num_samples > 1 and can_share_prompt_cache(model, prompt_ids, generate_kwargs):
            prompt_cache = prompt_cache_for_samples(model, prompt_ids, prompt_mask, num_samples, stack_vision_inputs(batch.vision_inputs))
            generate_kwargs[cache_argument_name(model)] = prompt_cache
        else:
            generate_kwargs.update(stack_vision_inputs(batch.vision_inputs, repeats=num_samples))
            if multimodal_rope_index(model) is not None:  # `generate` places the image tokens from these
                generate_kwargs["mm_token_type_ids"] = multimodal_token_types(model, prompt_ids).repeat_interleave(num_samples, 0)
        settings = {k: generate_kwargs.pop(k) for k in list(generate_kwargs) if hasattr(GenerationConfig(), k)}
        config = sampling_config(stop_token_ids(model, tokenizer), tokenizer.pad_token_id, use_cache=True, **settings)
        with without_checkpoint_generation_config(model):
            sequences = model.generate(
                input_ids=prompt_ids.repeat_interleave(num_samples, 0),
                attention_mask=prompt_mask.repeat_interleave(num_samples, 0),
                generation_config=config,
                **generate_kwargs,
            )
    return sequences[:, prompt_ids.shape[1] :]


def can_share_prompt_cache(model: PreTrainedModel, prompt_ids: Tensor, generate_kwargs: dict) -> bool:
    """A decoder-only model on transformers' dynamic cache (a static cache is preallocated for all B·K rows),
    prompts of more than one token (the last one is read by `generate` itself), 1-D positions: `generate`
    continues a multimodal-RoPE model's (Qwen2-VL's) cached prompt from rope deltas it keeps on the model from its
    own last prefill, which a cache filled here would leave stale."""
    return (
        prompt_ids.shape[1] > 1
        and multimodal_rope_index(model) is None
        and not model.config.is_encoder_decoder
        and generate_kwargs.get("cache_implementation") is None
        and generate_kwargs.get("past_key_values") is None
        and generate_kwargs.get("cache") is None
    )


def prompt_cache_for_samples(
    model: PreTrainedModel, prompt_ids: Tensor, prompt_mask: Tensor, num_samples: int, vision_inputs: dict[str, Tensor] | None = None
) -> DynamicCache:
    """The KV cache of each prompt (B, L) but its last token, computed once and repeated for its `num_samples`
    rows (B·K): B·(L − 1) prompt positions instead of B·K·(L − 1). Given a cache, `generate` reads only the
    tokens it does not hold (transformers' documented prompt-cache re-use): here each row's last prompt token,
    which gives the logits of the first sample. Position ids are those `generate` computes from the mask. The
    random draws are the same; the next-token logits equal the full rows' up to the matmuls' rounding (tested).
    `vision_inputs`: the prompts' pixel inputs, read here once; a prompt's last token is text (the chat
    template's assistant cue, or the question after the image), so `generate` needs no pixels after it."""
    cache = DynamicCache(config=model.config)
    head_ids, head_mask = prompt_ids[:, :-1], prompt_mask[:, :-1].long()
    model(
        input_ids=head_ids, attention_mask=head_mask, position_ids=text_positions(head_mask), use_cache=True, logits_to_keep=1,
        **{cache_argument_name(model): cache}, **(vision_inputs or {}),
    )
    cache.batch_repeat_interleave(num_samples)
    return cache


class Sampler:
    """`rollout.*`: K = `num_candidates` samples per prompt at `temperature`."""

    def __init__(
        self,
        num_candidates: int = 8,
        max_new_tokens: int = 32,
        temperature: float = 1.0,
        suppress_eos: bool = False,
        cache_implementation: str | None = None,
    ) -> None:
        self.num_candidates = num_candidates
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.suppress_eos = suppress_eos  # benchmarks: every completion gets the full length
        self.cache_implementation = cache_implementation  # None: transformers' dynamic cache

    def cache_kwargs(self) -> dict:
        """`generate` arguments for the KV cache: a preallocated `static` cache avoids re-growing it every step.

        transformers would torch.compile the forward for a static cache on CUDA; that path failed with CUDA
        graphs on transformers 5.17 (issue 5), so purld keeps the static cache eager."""
        if self.cache_implementation is None:
            return {}
        return {"cache_implementation": self.cache_implementation, "disable_compile": True}

    def check(self, model: PreTrainedModel) -> None:
        """Raise ValueError, before any training, if this sampler cannot run `model`."""

    def sample(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch: PromptBatch) -> Rollout:
        B, K = len(batch), self.num_candidates
        completion_ids, token_logps = self.decode(model, tokenizer, batch)  # (B·K, T) each
        completion_mask, is_truncated = completion_mask_from_ids(completion_ids, stop_token_ids(model, tokenizer))
        T = completion_ids.shape[1]
        completion_ids = completion_ids.masked_fill(~completion_mask, tokenizer.pad_token_id).reshape(B, K, T)
        completion_mask = completion_mask.reshape(B, K, T)
        return Rollout(
            texts=decode_completions(tokenizer, completion_ids, completion_mask),
            completion_ids=completion_ids,
            completion_mask=completion_mask,
            sampling_token_logps=token_logps.reshape(B, K, T).masked_fill(~completion_mask, 0.0),
            is_truncated=is_truncated.reshape(B, K),
            sampling_temperature=self.temperature,
        )

    def decode(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch: PromptBatch) -> tuple[Tensor, Tensor]:
        """K completions per prompt by transformers' `generate`: ids (B·K, T) and their sampling log-probs."""
        recorder = _RecordSamplingLogps(self.temperature, stop_token_ids(model, tokenizer) if self.suppress_eos else None)
        completion_ids = generate_completions(
            model,
            tokenizer,
            batch,
            num_samples=self.num_candidates,
            max_new_tokens=self.max_new_tokens,
            do_sample=True,
            temperature=1.0,  # applied by the recorder, which must see the final distribution
            top_k=0,
            top_p=1.0,
            logits_processor=LogitsProcessorList([recorder]),
            **self.cache_kwargs(),
        )  # (B·K, T)
        return completion_ids, recorder.finish(completion_ids[:, -1])


class StaticDecoderSampler(Sampler):
    """`rollout=static`: the same sampling by purld's own decoder (`purld/rollout/decoder.py`), a preallocated
    KV cache and a fixed-shape step per token, captured as a CUDA graph on a GPU (`cuda_graphs`)."""

    def __init__(
        self,
        num_candidates: int = 8,
        max_new_tokens: int = 32,
        temperature: float = 1.0,
        suppress_eos: bool = False,
        cuda_graphs: bool = True,
    ) -> None:
        super().__init__(num_candidates, max_new_tokens, temperature, suppress_eos)
        self.cuda_graphs = cuda_graphs
        self._decoder: StaticCacheDecoder | None = None  # kept across steps: its buffers and captured graph

    def check(self, model: PreTrainedModel) -> None:
        check_decodable(model)

    @property
    def graph_captured(self) -> bool:
        return self._decoder is not None and self._decoder.graph_captured

    def decode(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch: PromptBatch) -> tuple[Tensor, Tensor]:
        if self._decoder is None or self._decoder.model is not model:
            self._decoder = StaticCacheDecoder(
                model, self.temperature, stop_token_ids(model, tokenizer), tokenizer.pad_token_id,
                suppress_token_id=stop_token_ids(model, tokenizer) if self.suppress_eos else None, cuda_graphs=self.cuda_graphs,
            )
        with in_eval_mode(model):
            return self._decoder.decode(batch.prompt_ids, batch.prompt_mask, self.num_candidates, self.max_new_tokens)
