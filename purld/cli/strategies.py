"""Pieces of Lightning strategies that a YAML cannot spell."""

from __future__ import annotations

from torch import nn
from torch.distributed.fsdp.wrap import CustomPolicy


def is_decoder_layer(module: nn.Module) -> bool:
    """Transformers names every causal LM's block `<Arch>DecoderLayer` (LlamaDecoderLayer, Qwen2DecoderLayer, …)."""
    return type(module).__name__.endswith("DecoderLayer")


class DecoderLayerWrapPolicy(CustomPolicy):
    """FSDP: one unit per decoder layer of whatever model the student loads (no class list to maintain)."""

    def __init__(self) -> None:
        super().__init__(is_decoder_layer)
