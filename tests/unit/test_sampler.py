"""PromptStream: what each rank reads at each step, and that a resumed stream reads the same."""

from __future__ import annotations

import pytest

from purld.data.sampler import PromptStream


def take(stream: PromptStream, passes: int) -> list[list[int]]:
    return [batch for _ in range(passes) for batch in stream]


def test_ranks_split_every_step_without_overlap():
    ranks = [PromptStream(20, batch_size=3, seed=1, rank=r, world_size=2) for r in (0, 1)]
    for step in range(12):
        a, b = ranks[0].batch_at(step), ranks[1].batch_at(step)
        assert len(a) == len(b) == 3 and not set(a) & set(b)


def test_each_pass_is_a_permutation_and_passes_differ():
    stream = PromptStream(12, batch_size=4, seed=0)
    first, second = take(stream, 1), [stream.batch_at(step) for step in range(3, 6)]
    assert sorted(i for batch in first for i in batch) == list(range(12))
    assert first != second


def test_a_stream_resumed_mid_pass_reads_what_the_uninterrupted_one_read():
    consumed = {"steps": 0}
    uninterrupted = [PromptStream(10, batch_size=2, seed=3).batch_at(step) for step in range(12)]
    resumed = PromptStream(10, batch_size=2, seed=3, position=lambda: consumed["steps"])
    consumed["steps"] = 7  # restored from a checkpoint
    read = list(resumed)  # the rest of the pass the trainer is in
    assert read == uninterrupted[7:10]
    consumed["steps"] = 10
    assert list(resumed) == [PromptStream(10, batch_size=2, seed=3).batch_at(s) for s in range(10, 15)]


def test_seeds_give_different_orders():
    assert PromptStream(50, 5, seed=0).batch_at(0) != PromptStream(50, 5, seed=1).batch_at(0)


def test_too_few_prompts_for_one_step_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot fill one step of 8 prompts × 2 ranks"):
        PromptStream(10, batch_size=8, world_size=2)
