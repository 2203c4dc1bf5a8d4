import pytest

from purld.tasks import ArithmeticTask
from purld.tasks.arithmetic import worked_addition


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
