"""The task interface every task option implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Literal

from purld.types import Example

Split = Literal["train", "heldout"]


class Task(ABC):
    """A source of prompts with optional references and an optional oracle.

    `oracle_score` is ground truth and only feeds the `oracle` ranker (baselines)
    and diagnostics; PU-RLD never trains on it.
    """

    name: str = "task"
    has_oracle: bool = False
    has_images: bool = False  # its prompts show images: it needs a vision-language student
    question_kinds: tuple[str, ...] = ()  # the kinds of question `question_kind` tells apart (none: one kind)

    @abstractmethod
    def examples(self, split: Split) -> list[Example]:
        """The prompts of a split, in a fixed order."""

    def extract_answer(self, text: str) -> str | None:
        """The final answer in a completion, for the `verifier` ranker (None when absent)."""
        return None

    @property
    def extracts_answers(self) -> bool:
        """Whether the task has final answers to extract (overrides `extract_answer`): `ranker=verifier` needs them."""
        return type(self).extract_answer is not Task.extract_answer

    def oracle_score(self, example: Example, completion: str) -> float:
        """Graded ground-truth quality in [0, 1]; 1.0 exactly when the completion is correct."""
        raise TypeError(f"task {self.name!r} has no oracle")

    def question_kind(self, example: Example) -> str | None:
        """Which of `question_kinds` an example asks, where a task mixes kinds of question: evaluation then also
        reports the accuracy of each kind (`accuracy/<kind>`)."""
        return None

    def report(self) -> dict[str, Any]:
        """Counts worth recording in summary.json (e.g. skipped bad lines)."""
        return {}

    def is_correct(self, example: Example, completion: str) -> bool:
        return self.oracle_score(example, completion) >= 1.0
