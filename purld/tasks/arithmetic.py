"""Multi-digit addition with a worked, column-by-column answer.

    prompt:    "47+85="
    reference: "7+5=12 4+8+1=13 ans=132"

Each column is written right to left with its carry, then the final sum after
`ans=`. The worked steps give a small model something to imitate and give the
oracle a graded score: the fraction of the final answer's digits that are right
(aligned from the right), 1.0 exactly when the whole sum is right. Prompts are
drawn from `seed`; train and held-out splits never share an (a, b) pair.
"""

from __future__ import annotations

import random
import re

from purld.tasks.base import Split, Task
from purld.types import Example

_ANSWER = re.compile(r"ans=(-?\d+)")


def worked_addition(a: int, b: int) -> str:
    """The reference answer for a + b: one `x+y(+carry)=s` step per column, then `ans=`."""
    digits_a, digits_b = str(a)[::-1], str(b)[::-1]
    steps, carry = [], 0
    for column in range(max(len(digits_a), len(digits_b))):
        x = int(digits_a[column]) if column < len(digits_a) else 0
        y = int(digits_b[column]) if column < len(digits_b) else 0
        total = x + y + carry
        steps.append(f"{x}+{y}{'+1' if carry else ''}={total}")
        carry = total // 10
    return " ".join(steps) + f" ans={a + b}"


class ArithmeticTask(Task):
    """Addition of two numbers with `min_digits`..`max_digits` digits each."""

    name = "arithmetic"
    has_oracle = True

    def __init__(
        self,
        num_train: int = 2048,
        num_heldout: int = 256,
        min_digits: int = 2,
        max_digits: int = 3,
        seed: int = 0,
    ) -> None:
        if not 1 <= min_digits <= max_digits:
            raise ValueError(f"task.min_digits={min_digits} and task.max_digits={max_digits}: need 1 ≤ min ≤ max")
        capacity = sum(10 if d == 1 else 9 * 10 ** (d - 1) for d in range(min_digits, max_digits + 1)) ** 2
        if num_train + num_heldout > capacity:
            raise ValueError(
                f"task.num_train + task.num_heldout = {num_train + num_heldout} exceeds the "
                f"{capacity} distinct problems with {min_digits}..{max_digits} digits"
            )
        self.num_train, self.num_heldout = num_train, num_heldout
        self.min_digits, self.max_digits, self.seed = min_digits, max_digits, seed
        self._splits = self._generate()

    def _random_number(self, rng: random.Random) -> int:
        digits = rng.randint(self.min_digits, self.max_digits)
        return rng.randint(10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1)

    def _generate(self) -> dict[str, list[Example]]:
        rng = random.Random(self.seed)
        pairs: dict[tuple[int, int], None] = {}  # insertion-ordered set
        while len(pairs) < self.num_train + self.num_heldout:
            pairs.setdefault((self._random_number(rng), self._random_number(rng)))
        ordered = list(pairs)
        examples = [
            Example(prompt_id=f"add-{a}+{b}", prompt=f"{a}+{b}=", reference=worked_addition(a, b), answer=a + b)
            for a, b in ordered
        ]
        return {"heldout": examples[: self.num_heldout], "train": examples[self.num_heldout :]}

    def examples(self, split: Split) -> list[Example]:
        return list(self._splits[split])

    def extract_answer(self, text: str) -> str | None:
        found = _ANSWER.findall(text)
        return found[-1] if found else None

    def oracle_score(self, example: Example, completion: str) -> float:
        predicted = self.extract_answer(completion)
        if predicted is None:
            return 0.0
        truth = str(example.answer)
        if predicted == truth:
            return 1.0
        width = max(len(truth), len(predicted))
        matches = sum(p == t for p, t in zip(predicted.rjust(width), truth.rjust(width)))
        return 0.99 * matches / width  # a wrong answer never reaches 1.0
