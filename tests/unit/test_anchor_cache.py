import subprocess
import sys

import pytest

from purld.anchors import AnchorCache, MissingAnchorError
from purld.teachers import ReferenceTeacher
from purld.teachers.base import AnchorAnswer
from purld.types import Example


class CountingTeacher(ReferenceTeacher):
    """The reference teacher standing in for one that calls a model, counting calls, optionally failing after
    `fail_after` answers."""

    calls_a_model = True

    def __init__(self, fail_after=None):
        self.calls, self.fail_after = 0, fail_after

    def answer(self, examples):
        for example in examples:
            if self.fail_after is not None and self.calls >= self.fail_after:
                raise ConnectionError("teacher went away")
            self.calls += 1
            yield example, AnchorAnswer(text=example.reference, prompt_tokens=3, completion_tokens=5, cost_usd=0.01)


EXAMPLES = [Example(f"p{i}", f"{i}+1=", reference=f"ans={i + 1}", answer=i + 1) for i in range(6)]


def test_second_fill_makes_zero_calls(tmp_path):
    cache = AnchorCache(tmp_path / "a.sqlite")
    teacher = CountingTeacher()
    first = cache.fill(teacher, EXAMPLES, progress=False)
    second = cache.fill(teacher, EXAMPLES, progress=False)
    assert (first.teacher_calls, first.cache_hits) == (6, 0)
    assert (second.teacher_calls, second.cache_hits) == (0, 6)
    assert first.cost_usd == pytest.approx(0.06) and first.completion_tokens == 30
    assert teacher.calls == 6
    assert cache.anchors(teacher, EXAMPLES) == [e.reference for e in EXAMPLES]


def test_duplicate_prompts_are_asked_once(tmp_path):
    teacher = CountingTeacher()
    stats = AnchorCache(tmp_path / "a.sqlite").fill(teacher, EXAMPLES + EXAMPLES[:2], progress=False)
    assert teacher.calls == 6 and stats.teacher_calls == 6


def test_a_failure_keeps_every_answer_already_received(tmp_path):
    cache = AnchorCache(tmp_path / "a.sqlite")
    with pytest.raises(ConnectionError):
        cache.fill(CountingTeacher(fail_after=4), EXAMPLES, progress=False)
    assert len(cache) == 4
    teacher = CountingTeacher()
    resumed = cache.fill(teacher, EXAMPLES, progress=False)
    assert (resumed.teacher_calls, resumed.cache_hits, teacher.calls) == (2, 4, 2)


def test_another_process_reads_without_calling(tmp_path):
    path = tmp_path / "a.sqlite"
    AnchorCache(path).fill(CountingTeacher(), EXAMPLES, progress=False)
    code = f"""
from purld.anchors import AnchorCache
from tests.unit.test_anchor_cache import CountingTeacher, EXAMPLES
teacher = CountingTeacher()
stats = AnchorCache({str(path)!r}).fill(teacher, EXAMPLES, progress=False)
print(stats.teacher_calls, stats.cache_hits, teacher.calls)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "6", "0"]


def test_key_depends_on_reference(tmp_path):
    cache = AnchorCache(tmp_path / "a.sqlite")
    cache.fill(CountingTeacher(), EXAMPLES[:1], progress=False)
    changed = Example("p0", "0+1=", reference="something else")
    assert cache.fill(CountingTeacher(), [changed], progress=False).teacher_calls == 1


def test_missing_anchor_names_the_prompt(tmp_path):
    with pytest.raises(MissingAnchorError, match="'p3'.*purld-anchors"):
        AnchorCache(tmp_path / "a.sqlite").anchors(ReferenceTeacher(), EXAMPLES[3:4])


def test_reference_teacher_names_a_prompt_without_reference(tmp_path):
    with pytest.raises(ValueError, match="'nope' has no reference"):
        AnchorCache(tmp_path / "a.sqlite").fill(ReferenceTeacher(), [Example("nope", "x")], progress=False)


def test_cache_pickles_without_its_connection(tmp_path):
    import pickle

    cache = AnchorCache(tmp_path / "a.sqlite")
    cache.fill(CountingTeacher(), EXAMPLES, progress=False)
    assert len(pickle.loads(pickle.dumps(cache))) == 6


def test_reference_answers_are_not_counted_as_teacher_calls(tmp_path):
    stats = AnchorCache(tmp_path / "a.sqlite").fill(ReferenceTeacher(), EXAMPLES, progress=False)
    assert (stats.teacher_calls, stats.reference_answers) == (0, len(EXAMPLES))
