"""`student=tiny_vlm`: a random-init LLaVA-style vision-language model built in code, fully offline.

A small CLIP vision encoder (`image_size` pixels in patches of `patch_size`, each patch one image token after
the projector) feeds the same tiny Llama and character tokenizer as `student=tiny`, with one `<image>` token
added. The processor is transformers' `LlavaProcessor` around a PIL-only CLIP image processor (no torchvision):
it resizes a picture to `image_size`, normalises it and expands each `<image>` placeholder into the
(image_size / patch_size)² image tokens the model fills with the projected patch features.
"""

from __future__ import annotations

import torch
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from purld.students.base import freeze_vision_tower
from purld.students.tiny import TinyLlamaStudent, build_char_tokenizer

IMAGE_TOKEN = "<image>"


class TinyVLMStudent(TinyLlamaStudent):
    name = "tiny_vlm"
    model_class = LlavaForConditionalGeneration
    vision_tokens = (IMAGE_TOKEN,)  # added to the character tokenizer, in this order

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
        image_size: int = 64,
        patch_size: int = 32,
        freeze_vision_tower: bool = False,
        seed: int = 0,
        gradient_checkpointing: bool | str = False,
        lean_activations: bool = True,
    ) -> None:
        if image_size % patch_size:
            raise ValueError(f"student.image_size={image_size} is not a multiple of student.patch_size={patch_size}")
        super().__init__(hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, max_position_embeddings, seed,
                         gradient_checkpointing, lean_activations)
        self.vision_kwargs = dict(
            hidden_size=vision_hidden_size, intermediate_size=4 * vision_hidden_size, num_hidden_layers=vision_layers,
            num_attention_heads=vision_heads, image_size=image_size, patch_size=patch_size, projection_dim=vision_hidden_size,
        )
        self.image_size, self.patch_size = image_size, patch_size
        self.freeze_vision_tower = freeze_vision_tower

    def load_tokenizer(self) -> PreTrainedTokenizerFast:
        tokenizer = build_char_tokenizer()
        tokenizer.add_special_tokens({"additional_special_tokens": list(self.vision_tokens)})
        return tokenizer

    def model_config(self, tokenizer: PreTrainedTokenizerFast) -> LlavaConfig:
        return LlavaConfig(
            vision_config=CLIPVisionConfig(**self.vision_kwargs), text_config=self.llama_config(tokenizer),
            image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), image_seq_length=self.image_tokens,
            vision_feature_select_strategy="default", vision_feature_layer=-1, tie_word_embeddings=True,
        )

    def load(self) -> tuple[LlavaForConditionalGeneration, PreTrainedTokenizerFast]:
        tokenizer = self.load_tokenizer()
        config = self.model_config(tokenizer)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = self.model_class(config)
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        if self.freeze_vision_tower:
            freeze_vision_tower(model)
        return self.apply_memory_options(model), tokenizer

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def load_processor(self, tokenizer: PreTrainedTokenizerFast) -> LlavaProcessor:
        size = {"height": self.image_size, "width": self.image_size}
        images = CLIPImageProcessorPil(size=size, crop_size=size, do_center_crop=False)
        # "default" drops the encoder's CLS feature: num_additional_image_tokens=1 says so to the processor.
        return LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=self.patch_size,
                              vision_feature_select_strategy="default", num_additional_image_tokens=1, image_token=IMAGE_TOKEN)
