"""`task=jsonl`: any user JSONL file, one prompt per line, with configurable field names.

    {"prompt": "...", "reference": "...", "answer": "42"}               prompt_field / reference_field / answer_field
    {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}
    {"prompt": "What is in the picture?", "image": "images/0001.png"}     image_field: a path or a list of them

With `messages_field`, the prompt is the conversation up to its last user
message and a final assistant message, if any, is the reference. A line that
is not JSON, lacks a required field or has an empty prompt stops the run with
`file:line: problem` (`on_bad_line=raise`), or is skipped and counted
(`on_bad_line=skip`, reported in summary.json). With `image_field`, each line names its
images by paths relative to the file (or absolute); each is opened when the file is read, and a missing or
unreadable one is a bad line that names the file, the line and the path. Held-out prompts come from
`heldout_path`, or else a seeded `heldout_fraction` of the file.
"""

from __future__ import annotations

import json
import logging
import random
import re
from pathlib import Path
from typing import Any

from purld.tasks.base import Split, Task
from purld.types import Example

logger = logging.getLogger(__name__)
ON_BAD_LINE = ("raise", "skip")
_LAST_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


class BadLineError(ValueError):
    pass


def normalise_number(text: str) -> str:
    """'1,234.50' → '1234.5'; anything that is not a number is returned stripped."""
    cleaned = text.strip().replace(",", "").rstrip(".")
    try:
        value = float(cleaned)
    except ValueError:
        return cleaned
    return str(int(value)) if value.is_integer() else repr(value)


def render_messages(messages: list[dict[str, str]]) -> str:
    """A plain-text rendering for students without a chat template."""
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant:"


class JsonlTask(Task):
    name = "jsonl"

    def __init__(
        self,
        path: str,
        heldout_path: str | None = None,
        heldout_fraction: float = 0.1,
        prompt_field: str | None = "prompt",
        reference_field: str | None = None,
        answer_field: str | None = None,
        messages_field: str | None = None,
        id_field: str | None = None,
        answer_pattern: str | None = None,
        image_field: str | None = None,
        on_bad_line: str = "raise",
        max_examples: int | None = None,
        seed: int = 0,
    ) -> None:
        if on_bad_line not in ON_BAD_LINE:
            raise ValueError(f"task.on_bad_line={on_bad_line!r}: allowed values are {', '.join(ON_BAD_LINE)}")
        if not 0.0 <= heldout_fraction < 1.0:
            raise ValueError(f"task.heldout_fraction={heldout_fraction}: allowed values are in [0, 1)")
        if prompt_field is None and messages_field is None:
            raise ValueError("task.prompt_field and task.messages_field are both null: set one of them")
        self.prompt_field, self.reference_field, self.answer_field = prompt_field, reference_field, answer_field
        self.messages_field, self.id_field, self.on_bad_line = messages_field, id_field, on_bad_line
        self.image_field = image_field
        self.has_images = image_field is not None
        self.answer_pattern = re.compile(answer_pattern) if answer_pattern else None
        self.has_oracle = answer_field is not None
        self.bad_lines: list[str] = []
        examples = self._read(Path(path), max_examples)
        if heldout_path is not None:
            self._splits = {"train": examples, "heldout": self._read(Path(heldout_path), None)}
        else:
            order = list(range(len(examples)))
            random.Random(seed).shuffle(order)
            num_heldout = int(round(heldout_fraction * len(examples)))
            heldout = set(order[:num_heldout])
            self._splits = {
                "train": [e for i, e in enumerate(examples) if i not in heldout],
                "heldout": [e for i, e in enumerate(examples) if i in heldout],
            }
        if not self._splits["train"]:
            raise ValueError(f"task.path={path!r}: no usable prompt for training")
        if self.bad_lines:
            logger.warning("task: skipped %d bad line(s) (task.on_bad_line=skip), first: %s", len(self.bad_lines), self.bad_lines[0])

    # ------------------------------------------------------------------ reading
    def _read(self, path: Path, max_examples: int | None) -> list[Example]:
        if not path.exists():
            raise FileNotFoundError(f"task.path={str(path)!r}: no such file")
        examples: list[Example] = []
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if max_examples is not None and len(examples) >= max_examples:
                    break
                if not line.strip():
                    continue
                try:
                    examples.append(self._parse(line, f"{path.name}:{number}", path.parent))
                except BadLineError as error:
                    message = f"{path}:{number}: {error}"
                    if self.on_bad_line == "raise":
                        raise BadLineError(message + " (set task.on_bad_line=skip to skip such lines)") from None
                    self.bad_lines.append(message)
        return examples

    def _field(self, row: dict[str, Any], field: str) -> Any:
        if field not in row:
            raise BadLineError(f"missing field {field!r} (fields present: {', '.join(sorted(row)) or 'none'})")
        return row[field]

    def _images(self, row: dict[str, Any], directory: Path) -> tuple:
        value = self._field(row, self.image_field)
        paths = value if isinstance(value, list) else [value]
        if not paths or not all(isinstance(p, str) and p for p in paths):
            raise BadLineError(f"field {self.image_field!r} must be an image path or a list of them, got {value!r}")
        from PIL import Image, UnidentifiedImageError

        images = []
        for name in paths:
            path = directory / name
            try:
                with Image.open(path) as opened:
                    images.append(opened.convert("RGB"))
            except FileNotFoundError:
                raise BadLineError(f"image {name!r}: no such file ({path})") from None
            except (UnidentifiedImageError, OSError) as error:
                raise BadLineError(f"image {name!r}: unreadable ({type(error).__name__}: {str(error).splitlines()[0][:200]})") from None
        return tuple(images)

    def _parse(self, line: str, location: str, directory: Path = Path(".")) -> Example:
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise BadLineError(f"malformed JSON ({error.msg} at column {error.colno})") from None
        if not isinstance(row, dict):
            raise BadLineError(f"expected a JSON object, got {type(row).__name__}")
        reference = None
        messages = None
        if self.messages_field is not None:
            messages = self._field(row, self.messages_field)
            if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
                raise BadLineError(f"field {self.messages_field!r} must be a list of {{role, content}} objects")
            if messages and messages[-1]["role"] == "assistant":
                reference, messages = messages[-1]["content"], messages[:-1]
            if not messages or messages[-1]["role"] != "user":
                raise BadLineError(f"field {self.messages_field!r} must end with a user message (or user, assistant)")
            prompt = render_messages(messages)
        else:
            prompt = self._field(row, self.prompt_field)
        if not isinstance(prompt, str) or not prompt.strip():
            raise BadLineError("empty prompt")
        if self.reference_field is not None:
            reference = self._field(row, self.reference_field)
        answer = None
        if self.answer_field is not None:
            answer = normalise_number(str(self._field(row, self.answer_field)))
        prompt_id = str(row[self.id_field]) if self.id_field and self.id_field in row else location
        return Example(
            prompt_id=prompt_id,
            prompt=prompt,
            reference=None if reference is None else str(reference),
            answer=answer,
            messages=None if messages is None else tuple(messages),
            images=self._images(row, directory) if self.image_field is not None else (),
        )

    # ------------------------------------------------------------------- task
    def examples(self, split: Split) -> list[Example]:
        return list(self._splits[split])

    def extract_answer(self, text: str) -> str | None:
        if self.answer_pattern is not None:
            found = self.answer_pattern.findall(text)
            return normalise_number(found[-1]) if found else None
        numbers = _LAST_NUMBER.findall(text)
        return normalise_number(numbers[-1]) if numbers else None

    def oracle_score(self, example: Example, completion: str) -> float:
        if example.answer is None:
            raise TypeError(f"task {self.name!r} has no oracle: set task.answer_field")
        return 1.0 if self.extract_answer(completion) == example.answer else 0.0

    def report(self) -> dict[str, Any]:
        return {
            "train_examples": len(self._splits["train"]),
            "heldout_examples": len(self._splits["heldout"]),
            "bad_lines_skipped": len(self.bad_lines),
        }
