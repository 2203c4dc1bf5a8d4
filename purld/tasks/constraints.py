"""One sentence on a topic under verifiable constraints: instruction following with an exact oracle.

    prompt:    'Write one sentence about a rainy day. Use the word "umbrella". Use at most 18 words.'
    reference: 'I love a rainy day and the umbrella.'

Each prompt asks for one sentence about a topic with `min_constraints`..`max_constraints` constraints of the
`kinds` given, among: a required word, a word limit, all lowercase, a first word, ending with an exclamation
mark, no commas. The reference answer satisfies every constraint (so `teacher=reference` gives anchors that do). The oracle's score is
the fraction of constraints a completion satisfies; a completion is correct when it satisfies all of them. There
is no final answer to extract, so `ranker=verifier` does not apply: this task is for the rankers that compare a
candidate with the anchor (`lexical`, `embedding`) or read it (`likelihood`, `self_judge`).

Train and held-out prompts never share a (topic, set of constraint kinds) combination.
"""

from __future__ import annotations

import random
import re
from itertools import combinations
from math import prod

from purld.tasks.base import Split, Task
from purld.types import Example

TOPICS = (
    ("the ocean", ("waves", "boats", "fish", "sand")),
    ("a rainy day", ("umbrella", "puddles", "clouds", "boots")),
    ("your favourite food", ("pizza", "cheese", "dinner", "soup")),
    ("a city at night", ("lights", "streets", "music", "taxis")),
    ("a garden", ("flowers", "seeds", "bees", "roses")),
    ("winter", ("snow", "scarf", "fire", "ice")),
    ("a long train trip", ("window", "tickets", "hills", "coffee")),
    ("a dog", ("park", "ball", "tail", "leash")),
    ("the moon", ("night", "stars", "sky", "tides")),
    ("a library", ("books", "pages", "shelves", "silence")),
    ("a birthday party", ("cake", "candles", "gifts", "balloons")),
    ("the mountains", ("snow", "trails", "rocks", "eagles")),
)
START_WORDS = ("Today", "Sometimes", "Yesterday", "Here")
KINDS = ("include", "max_words", "lowercase", "start", "exclaim", "no_commas")
# The kinds SmolLM2-135M-Instruct meets often enough for K samples to mix right and wrong. Measured zero-shot
# (greedy, 48 new tokens, train prompts): one constraint each (96 prompts): a required word 47 %, a first word
# 44 %, no commas 22 %, at most 10..14 words 0 % (its sentences run ~20 words: hence 15..25 by default),
# lowercase 0 %, an exclamation mark 0 %; with 1-2 of include/start/max_words(15..25)/no_commas, 19.8 % of the
# prompts fully met (the constraints: 52, 37, 42, 21 %). The default leaves no commas out: 35.4 % of 96 prompts
# fully met (include 50 %, start 35 %, max_words 54 %).
CALIBRATED_KINDS = ("include", "start", "max_words")
INSTRUCTIONS = {
    "include": 'Use the word "{value}".',
    "max_words": "Use at most {value} words.",
    "lowercase": "Write only in lowercase letters.",
    "start": 'Start the sentence with the word "{value}".',
    "exclaim": "End the sentence with an exclamation mark.",
    "no_commas": "Do not use any commas.",
}
# The reference's sentence, before its first word, case and final mark are set (no commas). A prompt's word limit
# is drawn from `word_limits` and raised to the reference's length where that is longer.
CORES = ("i love {topic} and the {word}", "i think of the {word} when i picture {topic}", "we talked about {topic} and the {word}")
_WORD = re.compile(r"[A-Za-z']+")


def satisfies(kind: str, value, text: str) -> bool:
    """Whether `text` meets one constraint."""
    text = text.strip()
    if kind == "include":
        return re.search(rf"\b{re.escape(value)}\b", text, re.IGNORECASE) is not None
    if kind == "max_words":
        return 0 < len(text.split()) <= value
    if kind == "lowercase":
        return any(c.isalpha() for c in text) and not any(c.isupper() for c in text)
    if kind == "start":
        first = _WORD.search(text)
        return first is not None and first.start() <= 1 and first.group().lower() == value.lower()
    if kind == "exclaim":
        return text.rstrip("\"'”’ ").endswith("!")
    if kind == "no_commas":
        return bool(text) and "," not in text
    raise ValueError(f"unknown constraint kind {kind!r}")


class ConstraintsTask(Task):
    """`task=constraints`: one sentence on a topic under a few verifiable constraints; the oracle checks them."""

    name = "constraints"
    has_oracle = True

    def __init__(
        self,
        num_train: int = 768,
        num_heldout: int = 128,
        min_constraints: int = 1,
        max_constraints: int = 2,
        kinds: tuple[str, ...] | list[str] = CALIBRATED_KINDS,
        word_limits: tuple[int, int] | list[int] = (15, 25),
        heldout_fraction: float = 0.2,
        seed: int = 0,
    ) -> None:
        kinds = tuple(kinds)
        if not kinds or set(kinds) - set(KINDS) or len(set(kinds)) < len(kinds):
            raise ValueError(f"task.kinds={list(kinds)}: allowed values are distinct kinds among {', '.join(KINDS)}")
        if not 1 <= min_constraints <= max_constraints <= len(kinds):
            raise ValueError(
                f"task.min_constraints={min_constraints} and task.max_constraints={max_constraints}: need 1 ≤ min ≤ max ≤ "
                f"{len(kinds)} (the number of task.kinds)"
            )
        low, high = word_limits
        if not 1 <= low <= high:
            raise ValueError(f"task.word_limits={list(word_limits)}: need 1 ≤ low ≤ high")
        if not 0 < heldout_fraction < 1:
            raise ValueError(f"task.heldout_fraction={heldout_fraction}: allowed values are in (0, 1)")
        self.num_train, self.num_heldout = num_train, num_heldout
        self.min_constraints, self.max_constraints = min_constraints, max_constraints
        self.kinds, self.word_limits = kinds, (low, high)
        self.heldout_fraction, self.seed = heldout_fraction, seed
        self._splits = self._generate()

    def _generate(self) -> dict[str, list[Example]]:
        rng = random.Random(self.seed)
        kind_sets = [kinds for size in range(self.min_constraints, self.max_constraints + 1) for kinds in combinations(self.kinds, size)]
        combos = [(topic, kinds) for topic in range(len(TOPICS)) for kinds in kind_sets]
        rng.shuffle(combos)
        cut = max(1, round(len(combos) * self.heldout_fraction))
        splits = {"heldout": (combos[:cut], self.num_heldout), "train": (combos[cut:], self.num_train)}
        for split, (chosen, wanted) in splits.items():
            low, high = self.word_limits
            values = {"include": 4, "start": len(START_WORDS), "max_words": high - low + 1}  # a topic has 4 words
            capacity = sum(prod(values.get(kind, 1) for kind in kinds) for _, kinds in chosen)  # at most
            if wanted > capacity:
                raise ValueError(f"task.num_{split}={wanted} exceeds the {capacity} distinct {split} prompts")
        return {split: self._examples(rng, chosen, wanted, split) for split, (chosen, wanted) in splits.items()}

    def _examples(self, rng: random.Random, combos: list, wanted: int, split: str) -> list[Example]:
        examples: dict[str, Example] = {}
        for attempt in range(wanted * 50):
            if len(examples) == wanted:
                return list(examples.values())
            topic_index, kinds = rng.choice(combos)
            topic, words = TOPICS[topic_index]
            word, start, core = rng.choice(words), rng.choice(START_WORDS), rng.choice(CORES)
            reference = reference_sentence(topic, word, kinds, start, core)
            values = {"include": word, "start": start, "max_words": max(rng.randint(*self.word_limits), len(reference.split()))}
            constraints = tuple((kind, values.get(kind)) for kind in kinds)
            assert all(satisfies(kind, value, reference) for kind, value in constraints), (reference, constraints)
            prompt = " ".join([f"Write one sentence about {topic}.", *(INSTRUCTIONS[k].format(value=v) for k, v in constraints)])
            examples.setdefault(prompt, Example(
                prompt_id=f"{split}-{len(examples)}-t{topic_index}-{'+'.join(kinds)}",
                prompt=prompt,
                reference=reference,
                answer=constraints,
            ))
        raise ValueError(f"task.num_{split}={wanted}: only {len(examples)} distinct {split} prompts could be drawn")

    def examples(self, split: Split) -> list[Example]:
        return list(self._splits[split])

    def oracle_score(self, example: Example, completion: str) -> float:
        return sum(satisfies(kind, value, completion) for kind, value in example.answer) / len(example.answer)


def reference_sentence(topic: str, word: str, kinds: tuple[str, ...], start: str, core: str) -> str:
    """A sentence about `topic` with `word` that meets the constraints of `kinds` (its word count sets the limit)."""
    sentence = core.format(topic=topic, word=word)
    if "start" in kinds:
        sentence = f"{start} {sentence}"
    sentence += "!" if "exclaim" in kinds else "."
    return sentence.lower() if "lowercase" in kinds else sentence[0].upper() + sentence[1:].replace(" i ", " I ")
