"""Per-token log-probabilities of completions under a causal LM.

Used by the objectives (policy and reference) and by the self-rankers, so that
all of them see exactly the numbers the sampler saw: left-padded prompts get
position ids from the attention mask, as `generate` gives them.
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor
from transformers import PreTrainedModel


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
) -> Tensor:
    """log softmax(logits / temperature)[y_t] for each completion token.

    Inputs: prompt (N, L) left-padded, completion (N, T) right-padded.
    Returns (N, T) float32 log-probs in nats; padded positions hold garbage
    that callers mask with `completion_mask`.
    """
    input_ids, attention_mask = stack_prompt_and_completion(prompt_ids, prompt_mask, completion_ids, completion_mask)
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    num_completion_tokens = completion_ids.shape[1]
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask.long(),
        position_ids=position_ids,
        use_cache=False,
        logits_to_keep=num_completion_tokens + 1,
    ).logits[:, :-1]  # (N, T, V): logits at position t predict token t + 1
    return token_logps_from_logits(logits, completion_ids, temperature)


def token_logps_from_logits(logits: Tensor, token_ids: Tensor, temperature: float = 1.0) -> Tensor:
    """log softmax(logits / temperature) at `token_ids`: (N, T, V) and (N, T) → (N, T) float32."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    token_logits = logits.gather(-1, token_ids.unsqueeze(-1)).squeeze(-1)
    return token_logits - torch.logsumexp(logits, dim=-1)


def forward_after_shared_prefix(
    model: PreTrainedModel,
    prefix_ids: Tensor,
    prefix_mask: Tensor,
    continuation_ids: Tensor,
    continuation_mask: Tensor,
    logits_to_keep: int,
) -> tuple[Tensor, Tensor]:
    """Logits of B·K continuations that share B prefixes, reading each prefix once.

    prefix (B, L) left-padded; continuation (B·K, T), K per prefix, padded either side (the
    attention mask and position ids skip the holes). The prefix runs once per prompt, its KV
    cache is repeated K times, then the continuations run on top of it: the ranker's cost
    grows with K·T, not K·(L + T).
    Returns the prefix's last-position logits (B·K, V) — what predicts the first
    continuation token — and the continuation's last `logits_to_keep` positions (B·K, n, V).
    """
    from transformers import DynamicCache

    cache_argument = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"  # 5.x renamed it
    K = continuation_ids.shape[0] // prefix_ids.shape[0]
    prefix_positions = (prefix_mask.long().cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    prefix_logits = model(
        input_ids=prefix_ids,
        attention_mask=prefix_mask.long(),
        position_ids=prefix_positions,
        use_cache=True,
        logits_to_keep=1,
        **{cache_argument: cache},
    ).logits[:, -1]
    cache.batch_repeat_interleave(K)
    attention_mask = torch.cat([prefix_mask.repeat_interleave(K, 0), continuation_mask], dim=1).long()
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)[:, prefix_ids.shape[1] :]
    logits = model(
        input_ids=continuation_ids,
        attention_mask=attention_mask,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=logits_to_keep,
        **{cache_argument: cache},
    ).logits
    return prefix_logits.repeat_interleave(K, 0), logits


def completion_token_logps_shared_prompt(
    model: PreTrainedModel, prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor, completion_mask: Tensor
) -> Tensor:
    """`completion_token_logps` (temperature 1) for K completions per prompt, each prompt read once.

    prompt (B, L) left-padded; completion (B·K, T) right-padded. Returns (B·K, T)."""
    T = completion_ids.shape[1]
    first, rest = forward_after_shared_prefix(model, prompt_ids, prompt_mask, completion_ids, completion_mask, logits_to_keep=T)
    return token_logps_from_logits(torch.cat([first[:, None], rest[:, :-1]], dim=1), completion_ids)  # position t predicts token t
