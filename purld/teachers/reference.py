"""`teacher=reference`: the task's own reference answer is the anchor (offline)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from purld.teachers.base import AnchorAnswer, Teacher
from purld.types import Example


class ReferenceTeacher(Teacher):
    name = "reference"
    calls_a_model = False

    def identity(self) -> dict[str, Any]:
        return {"model": "reference"}

    def cache_material(self, example: Example) -> dict[str, Any]:
        # Two tasks may share a prompt text with different references: key on both.
        return {**super().cache_material(example), "reference": example.reference}

    def answer(self, examples: Sequence[Example]) -> Iterator[tuple[Example, AnchorAnswer]]:
        for example in examples:
            if not example.reference:
                raise ValueError(
                    f"teacher=reference: prompt {example.prompt_id!r} has no reference answer; "
                    "choose another teacher or a task that provides references"
                )
            yield example, AnchorAnswer(text=example.reference)
