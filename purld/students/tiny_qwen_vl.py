"""`student=tiny_qwen_vl`: a random-init Qwen2.5-VL built in code, fully offline.

The architecture of Qwen2.5-VL-3B at toy sizes — its windowed vision transformer, the 2 × 2 patch merger, and
multimodal RoPE (each image token placed on a temporal / height / width grid, `purld.rollout.positions`) — over
the character tokenizer of `student=tiny` with Qwen's vision tokens added. A picture is resized to
`image_size`² pixels, cut into 14-pixel patches and merged 2 × 2 into (image_size / 28)² image tokens; prompts
are plain text with the image token before the question, as `student=tiny_vlm`'s (no chat template).
It runs the code path a real Qwen2-VL-style student takes on a CPU, where its own processor cannot load:
transformers builds a Qwen2-VL processor only with torchvision installed (for its video processor) — here the
processor is built without one (images only).
"""

from __future__ import annotations

from transformers import (
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessorPil,
)

from purld.students.tiny_vlm import TinyVLMStudent

VISION_START, IMAGE_PAD, VISION_END, VIDEO_PAD = "<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>"
PATCH_SIZE, MERGE_SIZE = 14, 2  # Qwen2.5-VL's: one image token per 28 × 28 pixels


class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL's processor of images and text, without a video processor: transformers takes a processor's
    parts from its `__init__`'s signature and checks each one's class, and without torchvision the video
    processor's class does not exist, even for a None part."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class TinyQwenVLStudent(TinyVLMStudent):
    name = "tiny_qwen_vl"
    model_class = Qwen2_5_VLForConditionalGeneration
    vision_tokens = (VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD)

    def __init__(
        self,
        hidden_size: int = 128,
        num_hidden_layers: int = 3,
        num_attention_heads: int = 4,
        intermediate_size: int = 512,
        max_position_embeddings: int = 512,
        vision_hidden_size: int = 64,
        vision_layers: int = 2,
        vision_heads: int = 4,
        image_size: int = 56,
        freeze_vision_tower: bool = False,
        seed: int = 0,
        gradient_checkpointing: bool | str = False,
        lean_activations: bool = True,
    ) -> None:
        if image_size % (PATCH_SIZE * MERGE_SIZE):
            raise ValueError(f"student.image_size={image_size} is not a multiple of {PATCH_SIZE * MERGE_SIZE} (patches of "
                             f"{PATCH_SIZE} pixels, merged {MERGE_SIZE} × {MERGE_SIZE})")
        head_dim = hidden_size // num_attention_heads
        if hidden_size % num_attention_heads or head_dim % 16:
            raise ValueError(f"student.hidden_size={hidden_size} / student.num_attention_heads={num_attention_heads} must be a "
                             "multiple of 16 (multimodal RoPE splits each head's rotary pairs 2 : 3 : 3 over time, height, width)")
        super().__init__(hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, max_position_embeddings,
                         vision_hidden_size, vision_layers, vision_heads, image_size, PATCH_SIZE, freeze_vision_tower, seed,
                         gradient_checkpointing, lean_activations)
        self.mrope_section = [head_dim // 8, 3 * head_dim // 16, 3 * head_dim // 16]  # Qwen2.5-VL's proportions
        self.vision_kwargs = dict(depth=vision_layers, hidden_size=vision_hidden_size, intermediate_size=4 * vision_hidden_size,
                                  num_heads=vision_heads, out_hidden_size=hidden_size, patch_size=PATCH_SIZE,
                                  spatial_merge_size=MERGE_SIZE, fullatt_block_indexes=[vision_layers - 1])

    @property
    def image_tokens(self) -> int:
        return (self.image_size // (PATCH_SIZE * MERGE_SIZE)) ** 2

    def model_config(self, tokenizer: PreTrainedTokenizerFast) -> Qwen2_5_VLConfig:
        text = self.llama_config(tokenizer).to_dict()
        text_config = {key: text[key] for key in ("vocab_size", "pad_token_id", "bos_token_id", "eos_token_id", "hidden_size",
                                                  "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                                                  "intermediate_size", "max_position_embeddings")}
        token_ids = {f"{name}_token_id": tokenizer.convert_tokens_to_ids(token) for name, token in
                     (("image", IMAGE_PAD), ("video", VIDEO_PAD), ("vision_start", VISION_START), ("vision_end", VISION_END))}
        return Qwen2_5_VLConfig(
            text_config={**text_config, "rope_scaling": {"type": "mrope", "mrope_section": self.mrope_section},
                         "tie_word_embeddings": True},
            vision_config=self.vision_kwargs, tie_word_embeddings=True, **token_ids,
        )

    def load_processor(self, tokenizer: PreTrainedTokenizerFast) -> Qwen2_5_VLProcessor:
        pixels = self.image_size**2
        images = Qwen2VLImageProcessorPil(min_pixels=pixels, max_pixels=pixels, patch_size=PATCH_SIZE, merge_size=MERGE_SIZE)
        return ImageOnlyQwen2_5_VLProcessor(image_processor=images, tokenizer=tokenizer)
