"""Position ids of left-padded rows, as `generate` gives them, for every forward purld runs itself.

Most students number each row's tokens 0, 1, … from its first attended token (`position_ids` (N, S) from the
attention mask). Qwen2-VL-style students (Qwen2-VL, Qwen2.5-VL, … : multimodal RoPE, a `get_rope_index` on the
model) place an image's tokens on a 2-D grid instead: positions (3, N, S) — temporal, height, width — computed
from the ids, each image's `image_grid_thw` and the mask, and the text after an image continues from the
grid's largest position, not from the token count. That offset is the row's rope delta: a token appended after
the row (a completion, a continuation read on top of its KV cache) sits at its 1-D position plus the delta.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from transformers import PreTrainedModel

from purld.students.base import model_and_inner_model

# The vision inputs a multimodal-RoPE `get_rope_index` reads (the processor's outputs of those names).
ROPE_INDEX_INPUTS = ("image_grid_thw", "video_grid_thw", "second_per_grid_ts")


def multimodal_rope_index(model: PreTrainedModel) -> Callable | None:
    """The model's `get_rope_index` where it places tokens with multimodal RoPE, else None (peft wrappers seen
    through)."""
    for owner in model_and_inner_model(model):
        if callable(getattr(owner, "get_rope_index", None)):
            return owner.get_rope_index
    return None


def text_positions(attention_mask: Tensor) -> Tensor:
    """(N, S) → (N, S) long: 0, 1, … over each row's attended tokens; padding before them 0."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def multimodal_token_types(model: PreTrainedModel, input_ids: Tensor) -> Tensor:
    """What a Qwen2-VL-style processor returns as `mm_token_type_ids`, from the ids: 1 at image tokens, 2 at
    video tokens, 0 elsewhere (N, S)."""
    config = model.config
    types = torch.zeros_like(input_ids, dtype=torch.int)
    for type_id, name in ((1, "image_token_id"), (2, "video_token_id")):
        token_id = getattr(config, name, None)
        if token_id is not None:
            types[input_ids == token_id] = type_id
    return types


def position_ids(
    model: PreTrainedModel,
    input_ids: Tensor,
    attention_mask: Tensor,
    vision_inputs: dict[str, Tensor] | None = None,
    prompt_width: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Positions of rows (N, S), left-padded (a right-padded completion may follow), and each row's rope delta.

    Returns (N, S) from the mask and zero deltas (N, 1) for a model with 1-D positions or rows without
    images; for a multimodal-RoPE model with images in `vision_inputs` (its processor's outputs for these rows'
    images, in row order), (3, N, S) from its `get_rope_index` and its deltas. Padded positions hold 0.
    `prompt_width`: the columns after it are generated text, as `generate` places them (a vision token sampled
    there is text too).
    """
    rope_index = multimodal_rope_index(model)
    vision_inputs = vision_inputs or {}
    grids = {name: vision_inputs[name] for name in ROPE_INDEX_INPUTS if name in vision_inputs}
    if rope_index is None or not grids:
        return text_positions(attention_mask), torch.zeros((input_ids.shape[0], 1), dtype=torch.long, device=input_ids.device)
    token_types = multimodal_token_types(model, input_ids)
    if prompt_width is not None:
        token_types[:, prompt_width:] = 0
    positions, deltas = rope_index(input_ids, mm_token_type_ids=token_types, attention_mask=attention_mask.long(), **grids)
    return positions, deltas.to(input_ids.device).long()
