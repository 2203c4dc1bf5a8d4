"""Sort a short list of numbers: a second synthetic task, unlike addition in shape.

    prompt:    "sort 7 2 8 3="
    reference: "2 3 7 8"

The answer is a permutation of the prompt's numbers, so a candidate can be
close to the anchor in characters and still wrong in order. The oracle is
graded: the fraction of positions holding the right number when the counts
agree (scaled by 0.99, so that only the exact answer reaches 1.0), else 0.
Train and held-out splits never share a list.
"""

from __future__ import annotations

import random
import re

from purld.tasks.base import Split, Task
from purld.types import Example

_NUMBERS = re.compile(r"\d+")


class SortTask(Task):
    """Sort `min_count`..`max_count` numbers of `digits` digits each, ascending."""

    name = "sort"
    has_oracle = True

    def __init__(
        self, num_train: int = 2048, num_heldout: int = 512, min_count: int = 3, max_count: int = 5, digits: int = 1, seed: int = 0
    ) -> None:
        if not 2 <= min_count <= max_count:
            raise ValueError(f"task.min_count={min_count} and task.max_count={max_count}: need 2 ≤ min ≤ max")
        if digits < 1:
            raise ValueError(f"task.digits={digits}: need at least 1")
        self.num_train, self.num_heldout = num_train, num_heldout
        self.min_count, self.max_count, self.digits, self.seed = min_count, max_count, digits, seed
        self._splits = self._generate()

    def _generate(self) -> dict[str, list[Example]]:
        rng = random.Random(self.seed)
        low, high = (0 if self.digits == 1 else 10 ** (self.digits - 1)), 10**self.digits - 1
        lists: dict[tuple[int, ...], None] = {}  # insertion-ordered set
        for _ in range(100 * (self.num_train + self.num_heldout)):
            if len(lists) == self.num_train + self.num_heldout:
                break
            lists.setdefault(tuple(rng.randint(low, high) for _ in range(rng.randint(self.min_count, self.max_count))))
        else:
            raise ValueError(f"task: could not draw {self.num_train + self.num_heldout} distinct lists; allow more numbers or digits")
        examples = [
            Example(
                prompt_id="sort-" + "-".join(map(str, numbers)),
                prompt="sort " + " ".join(map(str, numbers)) + "=",
                reference=" ".join(map(str, sorted(numbers))),
                answer=" ".join(map(str, sorted(numbers))),
            )
            for numbers in lists
        ]
        return {"heldout": examples[: self.num_heldout], "train": examples[self.num_heldout :]}

    def examples(self, split: Split) -> list[Example]:
        return list(self._splits[split])

    def extract_answer(self, text: str) -> str | None:
        numbers = _NUMBERS.findall(text)
        return " ".join(numbers) if numbers else None

    def oracle_score(self, example: Example, completion: str) -> float:
        predicted, truth = _NUMBERS.findall(completion), str(example.answer).split()
        if predicted == truth:
            return 1.0
        if len(predicted) != len(truth):
            return 0.0
        return 0.99 * sum(p == t for p, t in zip(predicted, truth)) / len(truth)
