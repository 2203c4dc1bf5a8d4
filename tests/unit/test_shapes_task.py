"""The synthetic picture task (vision-language students): pictures, questions, worked answers and the oracle."""

from __future__ import annotations

import pytest

from purld.tasks.shapes import COLOURS, ShapesTask


@pytest.fixture(scope="module")
def task():
    return ShapesTask(num_train=40, num_heldout=10, seed=3)


def test_every_example_has_a_picture_a_question_and_a_worked_answer_the_oracle_accepts(task):
    for example in task.examples("train") + task.examples("heldout"):
        (image,) = example.images
        assert image.size == (64, 64) and image.mode == "RGB"
        assert example.prompt == "How many shapes are in the picture?" or example.prompt.startswith("What colour is the ")
        assert task.oracle_score(example, example.reference) == 1.0
        assert example.reference.endswith(f"The answer is {example.answer}.")


def test_the_picture_shows_what_the_answer_says(task):
    for example in task.examples("train"):
        pixels = set(example.images[0].getdata())
        drawn = {colour for colour, rgb in COLOURS.items() if rgb in pixels}
        if example.answer in COLOURS:
            assert example.answer in drawn
        else:
            assert 1 <= int(example.answer) <= 4 and len(drawn) <= int(example.answer)


def test_the_oracle_reads_the_final_answer():
    task = ShapesTask(num_train=1, num_heldout=1)
    count = next(e for e in ShapesTask(num_train=30, num_heldout=1).examples("train") if e.answer.isdigit())
    assert task.oracle_score(count, f"The answer is {count.answer}.") == 1.0
    assert task.oracle_score(count, "The answer is 9.") == 0.0
    words = {"1": "one", "2": "two", "3": "three", "4": "four"}
    assert task.oracle_score(count, f"I count {words[count.answer]}.") == 1.0
    assert task.extract_answer("no idea") is None


def test_the_same_seed_draws_the_same_pictures_and_splits_differ():
    a, b = ShapesTask(num_train=5, num_heldout=5, seed=1), ShapesTask(num_train=5, num_heldout=5, seed=1)
    assert [e.images[0].tobytes() for e in a.examples("train")] == [e.images[0].tobytes() for e in b.examples("train")]
    assert a.examples("train")[0].images[0].tobytes() != a.examples("heldout")[0].images[0].tobytes()


@pytest.mark.parametrize(("key", "value", "message"), [("max_shapes", 5, "task.max_shapes=5"), ("image_size", 16, "task.image_size=16")])
def test_bad_settings_name_the_key(key, value, message):
    with pytest.raises(ValueError, match=message):
        ShapesTask(**{key: value})
