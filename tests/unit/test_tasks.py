import pytest

from purld.tasks import ArithmeticTask
from purld.tasks.arithmetic import worked_addition
from purld.types import Example


def test_worked_addition_by_hand():
    assert worked_addition(47, 85) == "7+5=12 4+8+1=13 ans=132"
    assert worked_addition(5, 123) == "5+3=8 0+2=2 0+1=1 ans=128"


def test_splits_are_disjoint_and_deterministic():
    a, b = ArithmeticTask(num_train=100, num_heldout=20, seed=1), ArithmeticTask(num_train=100, num_heldout=20, seed=1)
    train, heldout = a.examples("train"), a.examples("heldout")
    assert len(train) == 100 and len(heldout) == 20
    assert not {e.prompt for e in train} & {e.prompt for e in heldout}
    assert train == b.examples("train")
    assert ArithmeticTask(num_train=100, num_heldout=20, seed=2).examples("train") != train


def test_oracle_is_graded_and_exact_only_when_right():
    task = ArithmeticTask(num_train=10, num_heldout=2)
    example = task.examples("train")[0]
    assert task.oracle_score(example, example.reference) == 1.0
    wrong_last_digit = example.reference[:-1] + str((int(example.reference[-1]) + 1) % 10)
    assert 0.5 < task.oracle_score(example, wrong_last_digit) < 1.0
    assert task.oracle_score(example, "no answer here") == 0.0
    assert task.is_correct(example, example.reference) and not task.is_correct(example, wrong_last_digit)


def test_impossible_sizes_are_refused():
    with pytest.raises(ValueError, match="exceeds the 100 distinct problems"):
        ArithmeticTask(num_train=101, num_heldout=0, min_digits=1, max_digits=1)


def test_sort_task_splits_references_and_graded_oracle():
    import pytest

    from purld.tasks import SortTask

    task = SortTask(num_train=50, num_heldout=10, seed=3)
    train, heldout = task.examples("train"), task.examples("heldout")
    assert len(train) == 50 and len(heldout) == 10
    assert not {e.prompt for e in train} & {e.prompt for e in heldout}
    example = train[0]
    numbers = [int(n) for n in example.prompt[len("sort "):-1].split()]
    assert example.reference == " ".join(map(str, sorted(numbers)))
    assert task.oracle_score(example, example.reference) == 1.0
    assert task.oracle_score(example, "") == 0.0
    reversed_answer = " ".join(reversed(example.reference.split()))
    assert 0.0 <= task.oracle_score(example, reversed_answer) < 1.0
    with pytest.raises(ValueError, match="task.min_count"):
        SortTask(min_count=1)
    with pytest.raises(ValueError, match="distinct lists"):
        SortTask(num_train=500, num_heldout=0, min_count=2, max_count=2, digits=1)


def test_constraints_oracle_checks_each_constraint_by_hand():
    from purld.tasks.constraints import satisfies

    assert satisfies("include", "umbrella", "I took my Umbrella.") and not satisfies("include", "rain", "It was raining.")
    assert satisfies("max_words", 5, "one two three four five.") and not satisfies("max_words", 4, "one two three four five.")
    assert satisfies("lowercase", None, "all quiet here.") and not satisfies("lowercase", None, "All quiet.")
    assert satisfies("start", "Today", '"Today I rest."') and not satisfies("start", "Today", "Sure! Today I rest.")
    assert satisfies("exclaim", None, 'What a day!"') and not satisfies("exclaim", None, "What a day.")
    assert satisfies("no_commas", None, "No commas here.") and not satisfies("no_commas", None, "Well, no.")
    assert not satisfies("lowercase", None, "") and not satisfies("no_commas", None, "   ")


def test_constraints_references_satisfy_their_prompts_and_splits_share_no_combination():
    from purld.tasks import ConstraintsTask

    task = ConstraintsTask(num_train=200, num_heldout=40, kinds=("include", "max_words", "lowercase", "start", "exclaim", "no_commas"), min_constraints=2, max_constraints=3)
    train, heldout = task.examples("train"), task.examples("heldout")
    assert (len(train), len(heldout)) == (200, 40) and [e.prompt for e in train] == [e.prompt for e in type(task)(num_train=200, num_heldout=40, kinds=task.kinds, min_constraints=2, max_constraints=3).examples("train")]
    for example in train + heldout:
        assert task.oracle_score(example, example.reference) == 1.0 and 2 <= len(example.answer) <= 3
    combination = lambda e: (e.prompt_id.split("-")[2], e.prompt_id.split("-")[3])  # noqa: E731
    assert not {combination(e) for e in train} & {combination(e) for e in heldout}
    example = Example("p", "Write one sentence about winter. …", answer=(("include", "snow"), ("max_words", 6), ("no_commas", None)))
    assert task.oracle_score(example, "Snow falls, softly.") == pytest.approx(2 / 3)  # the comma
    assert task.oracle_score(example, "snow snow snow snow snow snow snow") == pytest.approx(2 / 3) and task.is_correct(example, "Snow falls.")


def test_constraints_bad_settings_name_the_key():
    from purld.tasks import ConstraintsTask

    with pytest.raises(ValueError, match="task.min_constraints=3 and task.max_constraints=2"):
        ConstraintsTask(min_constraints=3, max_constraints=2)
    with pytest.raises(ValueError, match="task.heldout_fraction=1.5"):
        ConstraintsTask(heldout_fraction=1.5)
    with pytest.raises(ValueError, match="task.num_heldout=100000 exceeds the"):
        ConstraintsTask(num_heldout=100000)
    with pytest.raises(ValueError, match=r"task.kinds=\['include', 'rhyme'\]: allowed values are distinct kinds among"):
        ConstraintsTask(kinds=["include", "rhyme"])
    with pytest.raises(ValueError, match=r"need 1 ≤ min ≤ max ≤ 1 \(the number of task.kinds\)"):
        ConstraintsTask(kinds=["include"], max_constraints=2)
