"""Synthetic pictures of coloured shapes, drawn with PIL on the fly, for vision-language students.

    image:     `image_size`² pixels, 1 to `max_shapes` shapes (circle, square, triangle) in five colours, each in
               its own cell of a 2 × 2 grid (no overlaps), on a white background
    prompt:    "How many shapes are in the picture?"   or   "What colour is the triangle?" (a shape seen once)
    reference: "I see a red circle and a blue square. That is 2 shapes.\nThe answer is 2."
    answer:    "2" or "blue"

Evaluation reports the accuracy of each question kind too (`accuracy/count`, `accuracy/colour`).
The oracle is 1 when the final answer (after "The answer is", else the last number or colour word of the
completion) is right, else 0. Train and held-out pictures come from different random streams of the seed; the
same seed gives the same pictures, pixel for pixel.
"""

from __future__ import annotations

import random
import re

from PIL import Image, ImageDraw

from purld.tasks.base import Split, Task
from purld.types import Example

COLOURS = {"red": (220, 40, 40), "green": (40, 160, 60), "blue": (40, 80, 220), "yellow": (230, 190, 20),
           "purple": (140, 60, 170)}
SHAPES = ("circle", "square", "triangle")
NUMBER_WORDS = {"one": "1", "two": "2", "three": "3", "four": "4"}
_ANSWER = re.compile(r"answer is\s*:?\s*([a-z0-9]+)", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9]+", re.IGNORECASE)


def draw(shapes: list[tuple[str, str, int, int, int]], size: int) -> Image.Image:
    """(shape, colour, centre x, centre y, radius) on a white RGB canvas."""
    image = Image.new("RGB", (size, size), "white")
    pen = ImageDraw.Draw(image)
    for shape, colour, x, y, r in shapes:
        fill = COLOURS[colour]
        if shape == "circle":
            pen.ellipse((x - r, y - r, x + r, y + r), fill=fill)
        elif shape == "square":
            pen.rectangle((x - r, y - r, x + r, y + r), fill=fill)
        else:
            pen.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=fill)
    return image


def listed(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


class ShapesTask(Task):
    """Counting and colour questions about synthetic pictures; every example carries one image."""

    name = "shapes"
    has_oracle = True
    has_images = True
    question_kinds = ("count", "colour")

    def __init__(self, num_train: int = 512, num_heldout: int = 64, image_size: int = 64, max_shapes: int = 4,
                 seed: int = 0) -> None:
        if not 1 <= max_shapes <= 4:
            raise ValueError(f"task.max_shapes={max_shapes}: allowed values are 1 to 4 (one shape per cell of a 2 × 2 grid)")
        if image_size < 32:
            raise ValueError(f"task.image_size={image_size}: allowed values are integers ≥ 32")
        self.num_train, self.num_heldout = num_train, num_heldout
        self.image_size, self.max_shapes, self.seed = image_size, max_shapes, seed
        self._splits = {"train": self._examples("train", num_train), "heldout": self._examples("heldout", num_heldout)}

    def _examples(self, split: Split, count: int) -> list[Example]:
        rng = random.Random(f"{self.seed}/{split}")
        cell = self.image_size // 2
        examples = []
        for index in range(count):
            cells = rng.sample(range(4), rng.randint(1, self.max_shapes))
            shapes = []
            for c in sorted(cells):
                r = rng.randint(cell // 4, cell * 2 // 5)
                x = (c % 2) * cell + cell // 2 + rng.randint(-(cell // 2 - r), cell // 2 - r)
                y = (c // 2) * cell + cell // 2 + rng.randint(-(cell // 2 - r), cell // 2 - r)
                shapes.append((rng.choice(SHAPES), rng.choice(list(COLOURS)), x, y, r))
            seen = listed([f"a {colour} {shape}" for shape, colour, *_ in shapes])
            single = [s for s in shapes if sum(t[0] == s[0] for t in shapes) == 1]
            if single and rng.random() < 0.5:
                shape, colour = rng.choice(single)[:2]
                prompt, answer = f"What colour is the {shape}?", colour
                reference = f"I see {seen}. The {shape} is {colour}.\nThe answer is {colour}."
            else:
                n = len(shapes)
                prompt, answer = "How many shapes are in the picture?", str(n)
                reference = f"I see {seen}. That is {n} shape{'s' if n > 1 else ''}.\nThe answer is {n}."
            examples.append(Example(prompt_id=f"shapes-{split}-{index}", prompt=prompt, reference=reference,
                                    answer=answer, images=(draw(shapes, self.image_size),)))
        return examples

    def examples(self, split: Split) -> list[Example]:
        return list(self._splits[split])

    def question_kind(self, example: Example) -> str:
        return "count" if example.prompt.startswith("How many") else "colour"

    def extract_answer(self, text: str) -> str | None:
        found = _ANSWER.findall(text)
        words = found or [w for w in _WORD.findall(text) if w.lower() in COLOURS or w.isdigit() or w.lower() in NUMBER_WORDS]
        if not words:
            return None
        word = words[-1].lower()
        return NUMBER_WORDS.get(word, word)

    def oracle_score(self, example: Example, completion: str) -> float:
        return float(self.extract_answer(completion) == example.answer)
