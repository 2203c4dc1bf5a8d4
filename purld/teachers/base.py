"""The teacher interface.

A teacher turns prompts into anchor answers. It is called only by the anchor
cache for prompts the cache lacks, and yields answers as they arrive so that
each one is stored before the next is awaited (a killed run keeps what it paid
for). Remote teachers (litellm) and local ones (hf) implement the same three
methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from purld.types import Example


class TeacherError(RuntimeError):
    """A prompt the teacher could not answer; the message names the prompt and the last error."""


@dataclass(frozen=True)
class TeacherFailure:
    """Yielded instead of an answer for a prompt left out under `on_error=skip`."""

    error: str


@dataclass(frozen=True)
class AnchorAnswer:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


def templated_messages(example: Example, system_prompt: str | None, prompt_template: str) -> list[dict[str, str]]:
    """[system?, user]: the user turn is `prompt_template` with the prompt in place of {prompt}."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*system, {"role": "user", "content": prompt_template.format(prompt=example.prompt)}]


def with_image_parts(messages: list[dict[str, Any]], images: Sequence[Any]) -> list[dict[str, Any]]:
    """The OpenAI content-parts form of `messages` for a prompt with images: the last user turn becomes its text
    followed by each image as a base64 PNG data URL (what multimodal chat APIs and `vllm serve` read)."""
    if not images:
        return messages
    import base64
    import io

    from purld.data.prompts import as_pil_image

    parts = []
    for image in images:
        buffer = io.BytesIO()
        as_pil_image(image).save(buffer, format="PNG")
        parts.append({"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()}})
    last_user = max(i for i, message in enumerate(messages) if message["role"] == "user")
    turn = messages[last_user]
    return [*messages[:last_user], {**turn, "content": [{"type": "text", "text": turn["content"]}, *parts]}, *messages[last_user + 1 :]]


def check_prompt_template(prompt_template: str) -> None:
    if "{prompt}" not in prompt_template:
        raise ValueError(f"teacher.prompt_template={prompt_template!r} must contain '{{prompt}}'")


class Teacher(ABC):
    name: str = "teacher"

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """Model id and generation parameters: everything that changes the answer. No secrets."""

    def messages(self, example: Example) -> list[dict[str, str]]:
        """The rendered chat messages sent for one prompt."""
        return [{"role": "user", "content": example.prompt}]

    def cache_material(self, example: Example) -> dict[str, Any]:
        """What the cache key hashes: identity and rendered messages, and the pixels of the prompt's images (a
        SHA-256 each), so that the same question about another picture is asked again."""
        material = {"teacher": self.identity(), "messages": self.messages(example)}
        if example.images:
            from purld.data.prompts import image_digest

            material["images"] = [image_digest(image) for image in example.images]
        return material

    on_error: str = "raise"  # or "skip": failed prompts are yielded as TeacherFailure and left out
    calls_a_model: bool = True  # False for `reference`: its answers are counted apart from teacher calls

    @abstractmethod
    def answer(self, examples: Sequence[Example]) -> Iterator[tuple[Example, AnchorAnswer | TeacherFailure]]:
        """Answer each example once, yielding (example, answer) as each arrives."""
