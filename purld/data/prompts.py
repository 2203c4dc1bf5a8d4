"""How a prompt reaches the student: rendered (chat template or plain), then encoded into ids and, for a prompt
with images, the vision inputs of the student's processor.

Text prompts go through the tokenizer alone, as they always did. A prompt with images goes through the
processor (`AutoProcessor` of an image-text-to-text model): its image placeholders are written into the rendered
text (`{"type": "image"}` content parts through the processor's chat template, else the processor's
`image_token` before the text) and the processor expands them to the model's image tokens and computes the
pixel inputs. Every stage that reads a prompt (rollout, the self-rankers, the policy and reference forwards,
evaluation) uses these functions, so they all read the same tokens and pixels.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

# Processor outputs aligned with the ids (padded with them); purld's stages pass only pixel-side inputs.
SEQUENCE_KEYS = ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids")


def image_digest(image: Any) -> str:
    """SHA-256 of an image's pixels (mode, size and bytes): what the anchor cache key holds for it."""
    image = as_pil_image(image)
    digest = hashlib.sha256(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def as_pil_image(image: Any):
    """A PIL image, as given or opened from a path (RGB)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    with Image.open(image) as opened:
        return opened.convert("RGB")


def image_placeholder(processor) -> str:
    token = getattr(processor, "image_token", None)
    if not token:
        raise ValueError(f"{type(processor).__name__} names no image_token: purld cannot place images in a plain prompt")
    return token


def user_turn(content: str, num_images: int) -> dict[str, Any]:
    """One user message, with `num_images` image parts before the text where there are images."""
    if not num_images:
        return {"role": "user", "content": content}
    return {"role": "user", "content": [*({"type": "image"} for _ in range(num_images)), {"type": "text", "text": content}]}


def render_conversation(tokenizer, processor, use_chat_template: bool, messages: Sequence[dict], num_images: int = 0) -> str:
    """The text the student reads for a conversation ending in a user turn; its images go in the first user turn.
    A vision-language student's chat template is its processor's, which reads content parts (text ones too)."""
    if not use_chat_template:
        text = "\n\n".join(str(message["content"]) for message in messages)
        return image_placeholder(processor) * num_images + "\n" + text if num_images else text
    if processor is None or not getattr(processor, "chat_template", None):
        if num_images:
            raise ValueError("a prompt has images but the student has no processor with a chat template")
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    messages = [dict(message) for message in messages]
    first_user = next(i for i, message in enumerate(messages) if message["role"] == "user")
    messages[first_user] = user_turn(messages[first_user]["content"], num_images)
    other = [m if isinstance(m["content"], list) else {**m, "content": [{"type": "text", "text": m["content"]}]} for m in messages]
    return processor.apply_chat_template(other, tokenize=False, add_generation_prompt=True)


def encode_prompts(
    tokenizer, processor, texts: Sequence[str], images: Sequence[Sequence[Any]] | None = None, device=None
) -> tuple[Tensor, Tensor, tuple[dict[str, Tensor], ...]]:
    """Rendered prompts → ids (N, L) left-padded, mask (N, L) bool, and per prompt its vision inputs ({} for a
    text prompt; () when no prompt has images). `images[i]`: the images prompt i's placeholders stand for."""
    images = list(images) if images is not None else [()] * len(texts)
    if not any(images):
        encoded = tokenizer(list(texts), padding=True, padding_side="left", add_special_tokens=False, return_tensors="pt")
        ids, mask = encoded["input_ids"], encoded["attention_mask"].bool()
        return (ids.to(device), mask.to(device), ()) if device is not None else (ids, mask, ())
    if processor is None:
        raise ValueError("a prompt has images but the student has no processor: use a vision-language student (student=tiny_vlm, or student=hf with an image-text-to-text model)")
    rows, vision = [], []
    for text, row_images in zip(texts, images, strict=True):
        if row_images:
            out = processor(text=[text], images=[[as_pil_image(image) for image in row_images]], return_tensors="pt",
                            add_special_tokens=False)
            rows.append(out["input_ids"][0])
            vision.append({key: value for key, value in out.items() if key not in SEQUENCE_KEYS and isinstance(value, Tensor)})
        else:
            rows.append(torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long))
            vision.append({})
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, width - len(row):], mask[i, width - len(row):] = row, True
    if device is not None:
        ids, mask = ids.to(device), mask.to(device)
        vision = [{k: v.to(device) for k, v in inputs.items()} for inputs in vision]
    return ids, mask, tuple(vision)
