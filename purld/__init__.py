"""purld: Positive-Unlabeled Reinforcement Learning Distillation on Lightning + Hydra."""

__version__ = "0.1.0"
