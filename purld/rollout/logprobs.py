"""Per-token log-probabilities of completions under a causal LM.

Used by the objectives (policy and reference) and by the self-rankers, so that
all of them see exactly the numbers the sampler saw: left-padded prompts get
position ids from the attention mask, as `generate` gives them.
"""

from __future__ import annotations

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
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    token_logits = logits.gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
    return token_logits - torch.logsumexp(logits, dim=-1)
