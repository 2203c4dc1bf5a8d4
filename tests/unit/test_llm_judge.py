"""The pairwise LLM judge (judge=llm): both orders, cached verdicts, and the length-controlled win rate."""

from __future__ import annotations

import re

import pytest
import torch

from purld.ranking import LLMJudge, RankingContext
from purld.ranking.llm_judge import verdict
from purld.rollout.sampler import candidates_from_texts
from purld.teachers.base import AnchorAnswer, Teacher
from purld.eval.win_rate import length_controlled_win_rate


class ScriptedJudge(Teacher):
    """A judge model answering from the question text, counting the questions it is asked."""

    name = "scripted"

    def __init__(self, decide, fail_on: str | None = None):
        self.decide, self.fail_on, self.asked = decide, fail_on, []

    def identity(self):
        return {"model": "scripted"}

    def answer(self, examples):
        for example in examples:
            if self.fail_on and self.fail_on in example.prompt:
                raise ConnectionError(f"judge went away at {example.prompt_id}")
            self.asked.append(example.prompt_id)
            first, second = re.search(r"\[Response A\]\n(.*)\n\n\[Response B\]\n(.*)\n\n", example.prompt, re.S).groups()
            yield example, AnchorAnswer(text=self.decide(first, second))


def judge_scores(judge, batch, texts, tokenizer):
    candidates = candidates_from_texts(tokenizer, texts, "cpu")
    return judge(batch, candidates, RankingContext(task=None, tokenizer=tokenizer))


@pytest.mark.parametrize("reply, expected", [("A", 1.0), (" b", 0.0), ("Response B is better.", 0.0), ("**A**", 1.0),
                                             ("Neither.", None), ("", None)])
def test_verdict_reads_the_first_letter_named(reply, expected):
    assert verdict(reply) == expected


def test_both_orders_cancel_a_position_bias_and_a_consistent_verdict_wins(tmp_path, make_batch, task, student):
    _, tokenizer = student
    batch = make_batch(task, tmp_path, size=2)
    always_a = LLMJudge(ScriptedJudge(lambda first, second: "A"), tmp_path / "j1.sqlite")
    texts = [["good answer", "bad"], ["bad", "good one"]]
    assert judge_scores(always_a, batch, texts, tokenizer).tolist() == [[0.5, 0.5], [0.5, 0.5]]
    prefers_good = LLMJudge(ScriptedJudge(lambda first, second: "A" if "good" in first else "B"), tmp_path / "j2.sqlite")
    assert judge_scores(prefers_good, batch, texts, tokenizer).tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert prefers_good.calls == 4  # two candidates, both orders, two prompts


def test_k_candidates_score_their_mean_preference_over_the_others(tmp_path, make_batch, task, student):
    _, tokenizer = student
    batch = make_batch(task, tmp_path, size=1)
    longer_wins = LLMJudge(ScriptedJudge(lambda first, second: "A" if len(first) > len(second) else "B"), tmp_path / "j.sqlite")
    scores = judge_scores(longer_wins, batch, [["aa", "a", "aaa"]], tokenizer)
    assert scores.tolist() == [[0.5, 0.0, 1.0]]
    assert longer_wins.calls == 6  # K (K − 1)


def test_a_rerun_asks_nothing_and_a_failure_keeps_the_verdicts_received(tmp_path, make_batch, task, student):
    _, tokenizer = student
    batch = make_batch(task, tmp_path, size=3)
    texts = [["x", "y"], ["FAILHERE", "z"], ["u", "v"]]
    failing = ScriptedJudge(lambda first, second: "A", fail_on="FAILHERE")
    with pytest.raises(ConnectionError, match="judge went away"):
        judge_scores(LLMJudge(failing, tmp_path / "j.sqlite"), batch, texts, tokenizer)
    assert len(failing.asked) == 2  # the first prompt's two questions, kept in the cache
    healthy = ScriptedJudge(lambda first, second: "A")
    judge = LLMJudge(healthy, tmp_path / "j.sqlite")
    judge_scores(judge, batch, texts, tokenizer)
    assert judge.calls == 4 and not any(p.startswith(batch.examples[0].prompt_id + " ") for p in healthy.asked)
    again = LLMJudge(healthy, tmp_path / "j.sqlite")
    judge_scores(again, batch, texts, tokenizer)
    assert again.calls == 0


def test_a_reply_without_a_verdict_is_a_tie_and_counted(tmp_path, make_batch, task, student):
    _, tokenizer = student
    batch = make_batch(task, tmp_path, size=1)
    judge = LLMJudge(ScriptedJudge(lambda first, second: "A" if first == "p" else "I cannot say"), tmp_path / "j.sqlite")
    assert judge_scores(judge, batch, [["p", "q"]], tokenizer).tolist() == [[0.75, 0.25]]
    assert judge.unparsed == 1


def test_a_template_without_its_slots_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"\{second\}"):
        LLMJudge(ScriptedJudge(lambda a, b: "A"), tmp_path / "j.sqlite", template="{prompt} {first}")


def test_length_controlled_win_rate_removes_a_preference_for_length():
    """A judge that prefers whichever answer is longer, and otherwise neither: P(win) = sigmoid(3 tanh(Δ / σ))."""
    generator = torch.Generator().manual_seed(0)
    for share_longer in (0.5, 0.9):  # how often the policy's answer is the longer one
        sign = torch.where(torch.rand(4000, generator=generator) < share_longer, 1.0, -1.0)
        delta = sign * torch.randn(4000, generator=generator).abs() * 20
        wins = (torch.rand(4000, generator=generator) < torch.sigmoid(3 * torch.tanh(delta / delta.std()))).float()
        assert length_controlled_win_rate(wins, delta) == pytest.approx(0.5, abs=0.04)
    assert wins.mean().item() > 0.75  # the raw win rate of the mostly-longer policy


def test_length_controlled_win_rate_keeps_a_preference_unrelated_to_length():
    generator = torch.Generator().manual_seed(1)
    delta = torch.randn(4000, generator=generator) * 10
    wins = (torch.rand(4000, generator=generator) < 0.7).float()
    assert length_controlled_win_rate(wins, delta) == pytest.approx(wins.mean().item(), abs=0.02)
    assert length_controlled_win_rate(torch.tensor([1.0, 0.5, 0.0, 1.0]), torch.zeros(4)) == pytest.approx(0.625, abs=0.01)
    with pytest.raises(ValueError, match="as many preferences"):
        length_controlled_win_rate(torch.ones(3), torch.ones(2))
