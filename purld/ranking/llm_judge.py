"""`judge=llm` / `judge=hf`: a fixed LLM compares answers pairwise, in both orders, its verdicts cached.

The judge model is asked, for a prompt and two answers shown as Response A and
Response B, which is better (`template`); its reply's first letter is the
verdict. Each pair is asked in both orders, so the judge's preference for a
position cancels: a candidate's preference over another is the mean of its two
verdicts (1: it won both, ½: the orders disagree or a reply had no verdict,
0: it lost both). With K candidates, candidate k scores the mean preference over
the other K − 1, so K(K − 1) questions per prompt; as `eval.judge` (answer
against anchor, K = 2) that is two per held-out prompt, and `win_rate` is
AlpacaEval's: a win 1, a split verdict ½.

The judge model is any teacher (`teacher=litellm`'s API or on-premise server,
`teacher=hf`'s local model), and its verdicts go through an anchor cache of
their own (`cache_path`, SQLite, keyed by the judge's identity and the full
question): a rerun, another run judging the same answer, or a run resumed after
a failure asks nothing again. A failed question raises naming the prompt, the
verdicts received so far kept.
"""

from __future__ import annotations

import itertools
import logging
import re

from torch import Tensor

from purld.anchors.cache import AnchorCache
from purld.ranking.base import Ranker, RankingContext, scores_from_lists
from purld.teachers.base import Teacher, TeacherError
from purld.types import Candidates, Example, PromptBatch

logger = logging.getLogger(__name__)

# AlpacaEval's pairwise question, shortened; the verdict is the reply's first A or B.
DEFAULT_TEMPLATE = (
    "Which response answers the instruction better? Judge correctness first, then whether the response follows "
    "every requirement of the instruction.\n\n[Instruction]\n{prompt}\n\n[Response A]\n{first}\n\n[Response B]\n"
    "{second}\n\nReply with a single letter: A or B."
)
_VERDICT = re.compile(r"\b(?:response\s+)?([AB])\b", re.IGNORECASE)
TIE = 0.5


class JudgeError(TeacherError):
    """A question the judge model could not answer; the message names the prompt and where the verdicts are kept."""


def verdict(reply: str | None) -> float | None:
    """1.0 when the reply prefers Response A, 0.0 for B, None when it names neither first."""
    match = _VERDICT.search(reply or "")
    if match is None:
        return None
    return 1.0 if match.group(1).upper() == "A" else 0.0


class LLMJudge(Ranker):
    name = "llm_judge"
    scores_are_preferences = True

    def __init__(self, teacher: Teacher, cache_path: str, template: str = DEFAULT_TEMPLATE) -> None:
        for slot in ("{prompt}", "{first}", "{second}"):
            if slot not in template:
                raise ValueError(f"judge template must contain {slot} (it has {template!r})")
        self.teacher, self.template = teacher, template
        self.cache = AnchorCache(cache_path)
        self.calls = 0  # questions asked of the judge model (not answered from the cache), over this object's life
        self.unparsed = 0  # replies that named neither response: counted as ½

    def identity(self) -> dict[str, object]:
        return {"name": self.name, "teacher": self.teacher.name, **self.teacher.identity(), "calls": self.calls}

    def question(self, example: Example, first: str, second: str, order: str) -> Example:
        text = self.template.format(prompt=example.prompt, first=first.strip(), second=second.strip())
        return Example(prompt_id=f"{example.prompt_id} (judge, {order})", prompt=text)

    def score(self, batch: PromptBatch, candidates: Candidates, context: RankingContext) -> Tensor:
        questions: list[Example] = []
        for example, texts in zip(batch.examples, candidates.texts):
            for k, j in itertools.permutations(range(len(texts)), 2):  # (k, j) shows k as A; (j, k) shows it as B
                questions.append(self.question(example, texts[k], texts[j], f"candidate {k} as A, {j} as B"))
        try:
            stats = self.cache.fill(self.teacher, questions, progress=False)
        except TeacherError as error:
            raise JudgeError(
                f"eval.judge: {error}. Every verdict received before it is kept in {self.cache.path}; rerun to continue "
                "(verdicts are not asked again), or set eval.judge.teacher.on_error=skip (a missing verdict is a tie)"
            ) from None
        self.calls += stats.teacher_calls
        replies = iter(self.cache.anchors(self.teacher, questions, skip_missing=self.teacher.on_error == "skip"))
        values = []
        for texts in candidates.texts:
            K = len(texts)
            prefers_first = {pair: verdict(next(replies)) for pair in itertools.permutations(range(K), 2)}
            self.unparsed += sum(v is None for v in prefers_first.values())
            wins = {pair: TIE if v is None else v for pair, v in prefers_first.items()}
            # k over j: its verdict as A, and the complement of j's as A (where k was B).
            values.append([sum((wins[k, j] + 1.0 - wins[j, k]) / 2 for j in range(K) if j != k) / max(K - 1, 1)
                           for k in range(K)])
        if self.unparsed:
            logger.warning("judge: %d replies named neither response so far (counted as ties)", self.unparsed)
        return scores_from_lists(values, candidates.completion_ids)
