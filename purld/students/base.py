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

    def merge_warm_start(self, model: PreTrainedModel) -> PreTrainedModel:
        """The policy PU-RLD starts from after the warm start (LoRA: adapters merged, fresh ones added)."""
        return model
