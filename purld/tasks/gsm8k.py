"""`task=gsm8k`: grade-school math word problems (MIT, OpenAI; a full copy ships in `purld/tasks/data/gsm8k`).

The worked solution is the `reference` teacher's anchor; the number after
`####` is the oracle answer, and the `verifier` ranker compares a candidate's
final number with the anchor's. `task.path` / `task.heldout_path` accept other
copies of the files (e.g. the full set elsewhere, or a subset).
"""

from __future__ import annotations

import re
from pathlib import Path

from purld.tasks.jsonl import BadLineError, JsonlTask, normalise_number
from purld.types import Example

DATA_DIR = Path(__file__).parent / "data" / "gsm8k"
_FINAL = re.compile(r"####\s*(-?[\d,]*\.?\d+)")
_CALCULATOR = re.compile(r"<<[^>]*>>")


class GSM8KTask(JsonlTask):
    name = "gsm8k"

    def __init__(
        self,
        path: str | None = None,
        heldout_path: str | None = None,
        num_train: int | None = None,
        num_heldout: int | None = None,
        prompt_template: str = "Question: {question}\nAnswer:",
        strip_calculator_annotations: bool = True,
        on_bad_line: str = "raise",
    ) -> None:
        self.prompt_template = prompt_template
        self.strip_calculator_annotations = strip_calculator_annotations
        super().__init__(
            path=str(path or DATA_DIR / "train.jsonl"),
            heldout_path=str(heldout_path or DATA_DIR / "test.jsonl"),
            prompt_field="question",
            reference_field="answer",
            on_bad_line=on_bad_line,
            max_examples=num_train,
        )
        self.has_oracle = True
        if num_heldout is not None:
            self._splits["heldout"] = self._splits["heldout"][:num_heldout]

    def _parse(self, line: str, location: str, directory: Path = Path(".")) -> Example:
        example = super()._parse(line, location, directory)
        final = _FINAL.findall(example.reference or "")
        if not final:
            raise BadLineError("the answer has no '#### <number>' line")
        reference = _CALCULATOR.sub("", example.reference) if self.strip_calculator_annotations else example.reference
        return Example(
            prompt_id=f"gsm8k-{location}",
            prompt=self.prompt_template.format(question=example.prompt),
            reference=reference,
            answer=normalise_number(final[-1]),
        )

    def extract_answer(self, text: str) -> str | None:
        final = _FINAL.findall(text)
        return normalise_number(final[-1]) if final else super().extract_answer(text)
