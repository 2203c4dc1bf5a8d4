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
