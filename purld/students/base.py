"""The student interface: a factory for (policy model, tokenizer).

Built lazily by `load()`, so a config can be validated and printed without
loading any weights.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from purld.students.lean_activations import use_lean_activations


class Student(ABC):
    name: str = "student"

    @abstractmethod
    def load(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """Return the trainable policy and a tokenizer with a pad token and padding side set."""

    def load_processor(self, tokenizer: PreTrainedTokenizerBase):
        """A vision-language student's processor (images → pixel inputs and image tokens), around `tokenizer`;
        None for a text student."""
        return None

    def chat_template_enabled(self, tokenizer: PreTrainedTokenizerBase) -> bool:
        """Whether prompts are rendered through the tokenizer's chat template."""
        return False

    gradient_checkpointing: bool | str = False
    lean_activations: bool = True

    def apply_memory_options(self, model: PreTrainedModel) -> PreTrainedModel:
        """`student.lean_activations`: RMSNorm and SwiGLU layers save only their inputs for backward (exact, no
        recomputed matmul; `purld.students.lean_activations`).
        `student.gradient_checkpointing`: recompute activations in backward (less memory, more compute), every
        layer's forward (`full`) or all but its matmuls (`selective`).

        Checkpointing is active in training mode only: rollout, ranking and the reference run in eval mode
        without it."""
        if self.lean_activations:
            use_lean_activations(model)
        if self.gradient_checkpointing:
            enable_gradient_checkpointing(model, selective=self.gradient_checkpointing == "selective")
        return model

    def prepare_policy(self, model: PreTrainedModel) -> PreTrainedModel:
        """Dropout off everywhere (as TRL's `disable_dropout`): π_old at sampling, in eval mode, and π_θ in the
        update, in training mode, are then the same function, and the reference (a copy, or adapters disabled)
        agrees with both. Checkpoints ship their own dropout rates (nn.Dropout modules and the attention
        layers' `attention_dropout`)."""
        disable_dropout(model)
        return model

    def merge_warm_start(self, model: PreTrainedModel) -> PreTrainedModel:
        """The policy PU-RLD starts from after the warm start (LoRA: adapters merged, fresh ones added)."""
        return model


def model_and_inner_model(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model (a peft wrapper seen through) and, where it has one, its inner `model`: the two places a
    transformers multimodal model keeps its parts (`vision_tower`, `get_rope_index`, ...), depending on the
    architecture and the transformers version."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = getattr(base, "model", None)
    return [base] if inner is None else [base, inner]


def vision_tower(model: torch.nn.Module) -> torch.nn.Module | None:
    """The image encoder of a transformers image-text-to-text model (`vision_tower`, `vision_model` or `visual`,
    on the model or its inner `model`), or None for a text model."""
    for owner in model_and_inner_model(model):
        for name in ("vision_tower", "vision_model", "visual"):
            tower = getattr(owner, name, None)
            if isinstance(tower, torch.nn.Module):
                return tower
    return None


def freeze_vision_tower(model: torch.nn.Module) -> int:
    """`student.freeze_vision_tower`: the image encoder's parameters stop training (the projector and the
    language model still train). Returns how many parameters were frozen."""
    tower = vision_tower(model)
    if tower is None:
        return 0
    tower.requires_grad_(False)
    return sum(p.numel() for p in tower.parameters())


def disable_dropout(model: torch.nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


@contextmanager
def in_eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """`model` in eval mode (no dropout) for the block, then back in the mode it was in: sampling, ranking and
    evaluation run inside a training step."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def checked_gradient_checkpointing(value: bool | str) -> bool | str:
    """`student.gradient_checkpointing` as given, once it is false, selective, full or true (`full`)."""
    if not (isinstance(value, bool) or value in ("selective", "full")):
        raise ValueError(f"student.gradient_checkpointing={value!r}: allowed values are false, selective, full (or true)")
    return value


def checked_lean_activations(value: bool) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"student.lean_activations={value!r}: allowed values are true, false")
    return value


def enable_gradient_checkpointing(model: PreTrainedModel, selective: bool = False) -> None:
    """transformers' activation checkpointing on every decoder layer; `selective` keeps the matmuls' outputs."""
    kwargs = {"use_reentrant": False, **({"context_fn": selective_checkpoint_contexts} if selective else {})}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers ≥ 5.2x renamed it
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _saved_ops() -> frozenset:
    """The matmuls (the projections' outputs) and the fused attention kernels (their output and log-sum-exp)."""
    names = ("mm", "addmm", "_scaled_dot_product_flash_attention", "_scaled_dot_product_flash_attention_for_cpu",
             "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention")
    return frozenset(getattr(torch.ops.aten, name).default for name in names if hasattr(torch.ops.aten, name))


SAVED_BY_SELECTIVE_CHECKPOINTING = _saved_ops()


def _save_matmul_outputs(ctx, op, *args, **kwargs):
    from torch.utils.checkpoint import CheckpointPolicy

    return CheckpointPolicy.MUST_SAVE if op in SAVED_BY_SELECTIVE_CHECKPOINTING else CheckpointPolicy.PREFER_RECOMPUTE


def selective_checkpoint_contexts() -> tuple[AbstractContextManager, AbstractContextManager]:
    """torch's selective activation checkpointing for `student.gradient_checkpointing=selective`.

    A decoder layer keeps its input and the outputs of its matmuls and fused attention; backward recomputes the
    rest (norms, rotary embeddings, eager attention's softmax, the MLP's activation, casts) from them: no matmul
    runs twice. Measured on 2 CPU cores, bf16, the benchmark's small model (scripts/README.md), where that
    elementwise rest is half of a layer's forward time: backward 932 ms plain, 1,124 selective, 1,302 full; a
    GRPO step's peak RSS 1,907 MB, 1,604, 1,445. The weight-cast cache of autocast is off inside: a forward
    served from it and a recomputation that casts again would not run the same ops, which torch requires.
    """
    from torch.utils.checkpoint import create_selective_checkpoint_contexts

    forward, recompute = create_selective_checkpoint_contexts(_save_matmul_outputs)
    return _without_autocast_cache(forward), _without_autocast_cache(recompute)


@contextmanager
def _without_autocast_cache(inner: AbstractContextManager) -> Iterator[None]:
    enabled = torch.is_autocast_cache_enabled()
    torch.set_autocast_cache_enabled(False)
    try:
        with inner:
            yield
    finally:
        torch.set_autocast_cache_enabled(enabled)


def activation_checkpointing_enabled(model: PreTrainedModel) -> bool:
    # The new name first: a PEFT wrapper forwards both to its base model, where the old one warns it is deprecated.
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        enabled = getattr(model, name, None)
        if enabled is not None:
            return bool(enabled)
    return False
