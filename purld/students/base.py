"""The student interface: a factory for (policy model, tokenizer).

Built lazily by `load()`, so a config can be validated and printed without
loading any weights.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from transformers import PreTrainedModel, PreTrainedTokenizerBase


class Student(ABC):
    name: str = "student"

    @abstractmethod
    def load(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """Return the trainable policy and a tokenizer with a pad token and padding side set."""

    def chat_template_enabled(self, tokenizer: PreTrainedTokenizerBase) -> bool:
        """Whether prompts are rendered through the tokenizer's chat template."""
        return False

    gradient_checkpointing: bool = False

    def apply_memory_options(self, model: PreTrainedModel) -> PreTrainedModel:
        """`student.gradient_checkpointing`: recompute activations in backward (less memory, one more forward).

        Active in training mode only: rollout, ranking and the reference run in eval mode without it."""
        if self.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        return model

    def merge_warm_start(self, model: PreTrainedModel) -> PreTrainedModel:
        """The policy PU-RLD starts from after the warm start (LoRA: adapters merged, fresh ones added)."""
        return model


def enable_gradient_checkpointing(model: PreTrainedModel) -> None:
    if hasattr(model, "activation_checkpointing_enable"):  # transformers ≥ 5.2x renamed it
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def activation_checkpointing_enabled(model: PreTrainedModel) -> bool:
    # The new name first: a PEFT wrapper forwards both to its base model, where the old one warns it is deprecated.
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        enabled = getattr(model, name, None)
        if enabled is not None:
            return bool(enabled)
    return False
