"""Tasks: prompts, reference answers and (where there is one) an oracle."""

from purld.tasks.arithmetic import ArithmeticTask
from purld.tasks.base import Task
from purld.tasks.constraints import ConstraintsTask
from purld.tasks.gsm8k import GSM8KTask
from purld.tasks.jsonl import JsonlTask
from purld.tasks.shapes import ShapesTask
from purld.tasks.sorting import SortTask
from purld.tasks.word_problems import WordProblemsTask

__all__ = ["ArithmeticTask", "ConstraintsTask", "GSM8KTask", "JsonlTask", "ShapesTask", "SortTask", "Task", "WordProblemsTask"]
