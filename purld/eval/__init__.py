"""Held-out evaluation: oracle accuracy, win rate against the anchor, length."""

from purld.eval.evaluate import EvalAccumulator, evaluate, evaluate_batch, greedy_answers

__all__ = ["EvalAccumulator", "evaluate", "evaluate_batch", "greedy_answers"]
