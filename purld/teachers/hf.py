"""`teacher=hf`: a local transformers model writes the anchors (an on-premise teacher without a server).

Prompts are rendered like the litellm teacher's (system prompt, template,
the tokenizer's chat template when it has one), generated in batches of
`batch_size` with left padding, greedy unless `temperature` > 0, and each
batch's answers are handed to the cache as soon as they exist.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from purld.teachers.base import AnchorAnswer, Teacher, TeacherError, check_prompt_template, templated_messages
from purld.types import Example


class HFTeacher(Teacher):
    name = "hf"

    def __init__(
        self,
        model_name_or_path: str,
        system_prompt: str | None = None,
        prompt_template: str = "{prompt}",
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        batch_size: int = 16,
        dtype: str = "auto",
        device: str | None = None,
        use_chat_template: str = "auto",
    ) -> None:
        check_prompt_template(prompt_template)
        if batch_size < 1 or max_new_tokens < 1:
            raise ValueError(f"teacher.batch_size={batch_size} and teacher.max_new_tokens={max_new_tokens}: need ≥ 1")
        self.model_name_or_path, self.system_prompt, self.prompt_template = model_name_or_path, system_prompt, prompt_template
        self.max_new_tokens, self.temperature, self.batch_size = max_new_tokens, temperature, batch_size
        self.dtype, self.device, self.use_chat_template = dtype, device, use_chat_template

    def identity(self) -> dict[str, Any]:
        # Everything that changes an answer: the weights' dtype rounds differently, and the chat template decides
        # what the model reads. (batch_size and device do not, up to the matmuls' rounding.)
        return {
            "model": self.model_name_or_path, "max_new_tokens": self.max_new_tokens, "temperature": self.temperature,
            "dtype": self.dtype, "use_chat_template": self.use_chat_template,
        }

    def messages(self, example: Example) -> list[dict[str, str]]:
        return templated_messages(example, self.system_prompt, self.prompt_template)

    def _render(self, tokenizer, example: Example) -> str:
        if self.use_chat_template != "never" and getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(self.messages(example), tokenize=False, add_generation_prompt=True)
        return "\n".join(m["content"] for m in self.messages(example))

    def answer(self, examples: Sequence[Example]) -> Iterator[tuple[Example, AnchorAnswer]]:
        from purld.students.hf import HFStudent

        shown_images = next((example for example in examples if example.images), None)
        if shown_images is not None:
            raise TeacherError(
                f"teacher=hf answers text only, and prompt {shown_images.prompt_id!r} shows images: use teacher=litellm "
                "with a multimodal model (a hosted one, or `vllm serve` on-premise) or teacher=reference"
            )

        student = HFStudent(self.model_name_or_path, dtype=self.dtype)
        model, tokenizer = student.load()
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        model.to(device).eval()
        for start in range(0, len(examples), self.batch_size):
            chunk = examples[start : start + self.batch_size]
            encoded = tokenizer(
                [self._render(tokenizer, e) for e in chunk], padding=True, padding_side="left",
                add_special_tokens=False, return_tensors="pt",
            ).to(device)
            sampling = {"do_sample": True, "temperature": self.temperature} if self.temperature > 0 else {"do_sample": False}
            with torch.no_grad():
                sequences = model.generate(
                    **encoded, max_new_tokens=self.max_new_tokens, pad_token_id=tokenizer.pad_token_id, **sampling
                )
            completions = sequences[:, encoded["input_ids"].shape[1] :]
            for example, prompt_mask, ids in zip(chunk, encoded["attention_mask"], completions):
                text = tokenizer.decode(ids, skip_special_tokens=True)
                num_completion = int((ids != tokenizer.pad_token_id).sum())
                yield example, AnchorAnswer(text=text, prompt_tokens=int(prompt_mask.sum()), completion_tokens=num_completion)
