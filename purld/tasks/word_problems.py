"""Multiplication word problems in plain English, for instruction-tuned students.

    prompt:    "Mia has 7 bags with 4 apples in each bag. How many apples does Mia have in total?"
    reference: "Mia has 7 bags with 4 apples in each, so she has 7 × 4 = 28 apples.\nThe answer is 28."

Operands are drawn from `min_operand`..`max_operand`, the story from a few templates and names. Train and
held-out prompts never share an operand pair (a, b), so a held-out problem cannot be answered from a memorised
training one. The oracle and the verifier read the last integer of a completion. Zero-shot with its chat
template, SmolLM2-135M-Instruct answers 64 % of the problems with operands 2..9 (greedy, 48 new tokens, 64
prompts), against 47 % for "What is a times b?" and 1 % on GSM8K: a task where K samples mix right and wrong.
"""

from __future__ import annotations

import random
import re

from purld.tasks.base import Split, Task
from purld.types import Example

_INTEGER = re.compile(r"-?\d[\d,]*")

# (question, worked answer): {name}, {pronoun}, {a}, {b}, {product}.
STORIES = (
    ("{name} has {a} bags with {b} apples in each bag. How many apples does {name} have in total?",
     "{name} has {a} bags with {b} apples in each, so {pronoun} has {a} × {b} = {product} apples."),
    ("A classroom has {a} rows of desks with {b} desks in each row. How many desks are in the classroom?",
     "There are {a} rows with {b} desks each, so there are {a} × {b} = {product} desks."),
    ("{name} reads {b} pages every day for {a} days. How many pages does {name} read?",
     "{name} reads {b} pages a day for {a} days, so {pronoun} reads {a} × {b} = {product} pages."),
    ("A baker fills {a} trays with {b} cookies on each tray. How many cookies are there?",
     "There are {a} trays with {b} cookies each, so there are {a} × {b} = {product} cookies."),
    ("{name} buys {a} packs of pencils. Each pack holds {b} pencils. How many pencils does {name} buy?",
     "{name} buys {a} packs of {b} pencils, so {pronoun} buys {a} × {b} = {product} pencils."),
)
NAMES = (("Mia", "she"), ("Tom", "he"), ("Ana", "she"), ("Leo", "he"), ("Sara", "she"), ("Omar", "he"))


def last_integer(text: str) -> int | None:
    found = _INTEGER.findall(text)
    return int(found[-1].replace(",", "")) if found else None


class WordProblemsTask(Task):
    """`task=word_problems`: a × b as a short story; the oracle is 1 when the final number is right, else 0."""

    name = "word_problems"
    has_oracle = True

    def __init__(
        self,
        num_train: int = 768,
        num_heldout: int = 128,
        min_operand: int = 2,
        max_operand: int = 9,
        heldout_pair_fraction: float = 0.25,
        seed: int = 0,
    ) -> None:
        if not 1 <= min_operand < max_operand:
            raise ValueError(f"task.min_operand={min_operand} and task.max_operand={max_operand}: need 1 ≤ min < max")
        if not 0 < heldout_pair_fraction < 1:
            raise ValueError(f"task.heldout_pair_fraction={heldout_pair_fraction}: allowed values are in (0, 1)")
        self.num_train, self.num_heldout = num_train, num_heldout
        self.min_operand, self.max_operand = min_operand, max_operand
        self.heldout_pair_fraction, self.seed = heldout_pair_fraction, seed
        self._splits = self._generate()

    def _generate(self) -> dict[str, list[Example]]:
        rng = random.Random(self.seed)
        operands = range(self.min_operand, self.max_operand + 1)
        pairs = [(a, b) for a in operands for b in operands]
        rng.shuffle(pairs)
        cut = max(1, round(len(pairs) * self.heldout_pair_fraction))
        splits = {"heldout": (pairs[:cut], self.num_heldout), "train": (pairs[cut:], self.num_train)}
        stories = sum(len(NAMES) if "{name}" in question else 1 for question, _ in STORIES)
        capacity = {split: len(chosen) * stories for split, (chosen, _) in splits.items()}
        for split, (_, wanted) in splits.items():
            if wanted > capacity[split]:
                raise ValueError(f"task.num_{split}={wanted} exceeds the {capacity[split]} distinct {split} problems")
        return {split: self._examples(rng, chosen, wanted, split) for split, (chosen, wanted) in splits.items()}

    def _examples(self, rng: random.Random, pairs: list[tuple[int, int]], wanted: int, split: str) -> list[Example]:
        examples: dict[str, Example] = {}  # by prompt text: a story without a name is the same for every name
        while len(examples) < wanted:
            (a, b), story, who = rng.choice(pairs), rng.randrange(len(STORIES)), rng.randrange(len(NAMES))
            question, worked = STORIES[story]
            name, pronoun = NAMES[who]
            fields = dict(name=name, pronoun=pronoun, a=a, b=b, product=a * b)
            prompt = question.format(**fields)
            examples.setdefault(prompt, Example(
                prompt_id=f"{split}-{a}x{b}-s{story}-{name.lower() if '{name}' in question else 'any'}",
                prompt=prompt,
                reference=worked.format(**fields) + f"\nThe answer is {a * b}.",
                answer=a * b,
            ))
        return list(examples.values())

    def examples(self, split: Split) -> list[Example]:
        return list(self._splits[split])

    def extract_answer(self, text: str) -> str | None:
        value = last_integer(text)
        return None if value is None else str(value)

    def oracle_score(self, example: Example, completion: str) -> float:
        value = last_integer(completion)
        return 1.0 if value == example.answer else 0.0
