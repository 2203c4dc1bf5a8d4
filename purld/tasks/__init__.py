"""Tasks: prompts, reference answers and (where there is one) an oracle."""

from purld.tasks.base import Task
from purld.tasks.arithmetic import ArithmeticTask

__all__ = ["ArithmeticTask", "Task"]
