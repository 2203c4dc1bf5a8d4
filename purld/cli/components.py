"""Build the pipeline's parts from a composed config, in the order the checks need.

`build_components` instantiates everything except the student (cheap, and
invalid values surface here as ConfigError); only then does `load_student`
load weights.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from purld.anchors.cache import AnchorCache
from purld.cli.checks import ConfigError, check_config
from purld.memory import release_freed_memory
from purld.objectives.base import Objective
from purld.ranking.base import Ranker
from purld.rollout.sampler import Sampler
from purld.students.base import Student
from purld.tasks.base import Task
from purld.teachers.base import Teacher

GROUPS = ("task", "teacher", "student", "rollout", "ranker", "loss", "trainer", "logger", "experiment")


@dataclass
class Components:
    task: Task
    teacher: Teacher
    student: Student
    ranker: Ranker
    objective: Objective
    sampler: Sampler
    anchor_cache: AnchorCache
    judge: Ranker  # scores held-out answers against the anchor for win_rate: eval.judge, else the ranker


def build_group(cfg: DictConfig, group: str, **kwargs: Any) -> Any:
    """Instantiate the node at `group` (a group, or a dotted key such as eval.judge); a failure names the key."""
    try:
        return instantiate(OmegaConf.select(cfg, group), **kwargs)
    except InstantiationException as error:
        cause = error.__cause__ or error
        raise ConfigError(f"{group}: {cause}") from None


def build_components(cfg: DictConfig) -> Components:
    check_config(cfg)
    ranker = build_group(cfg, "ranker")
    components = Components(
        task=build_group(cfg, "task"),
        teacher=build_group(cfg, "teacher"),
        student=build_group(cfg, "student"),
        ranker=ranker,
        objective=build_group(cfg, "loss"),
        sampler=build_group(cfg, "rollout"),
        anchor_cache=AnchorCache(cfg.anchors.cache_path),
        judge=build_group(cfg, "eval.judge") if cfg.eval.get("judge") else ranker,
    )
    if type(components.ranker).__name__ == "VerifierRanker" and not components.task.extracts_answers:
        raise ConfigError(f"ranker=verifier needs a task that extracts final answers; task {components.task.name!r} does not")
    return components


def key_choices(cfg: DictConfig) -> dict[str, Any]:
    """The run's choices as flat keys, for summary.json and loggers."""
    from hydra.core.hydra_config import HydraConfig

    choices = dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}
    return {
        **{group: choices.get(group) for group in GROUPS},
        "loss/preferences": choices.get("loss/preferences"),
        "seed": cfg.seed,
        "rollout.num_candidates": cfg.rollout.num_candidates,
        "loss.beta": OmegaConf.select(cfg, "loss.beta"),
        "trainer.max_steps": cfg.trainer.max_steps,
        "warmstart.sft_steps": cfg.warmstart.sft_steps,
    }


def run_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def configure_process(cfg: DictConfig) -> None:
    """The settings of this process, before any model is loaded: `num_threads`, `release_freed_memory`."""
    set_threads(cfg.num_threads)
    release_freed_memory(cfg.release_freed_memory)


def set_threads(num_threads: int | None) -> None:
    """`num_threads`: torch's intra-op CPU threads for this process (None: torch's default)."""
    if num_threads is not None:
        import torch

        torch.set_num_threads(num_threads)


def quiet_libraries() -> None:
    """Keep the console to what a user acts on.

    Lightning announces its devices at every fit (we fit twice), and warns that
    the frozen reference policy is in eval mode — which is the point of it.
    sentence-transformers (`ranker=embedding`) logs how it loads at INFO; peft and
    sentence-transformers import bitsandbytes, which warns about a hub kernel.
    """
    from purld.students.hf import quiet_bitsandbytes

    quiet_bitsandbytes()
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda", "lightning.fabric",
                 "sentence_transformers"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    warnings.filterwarnings("ignore", message=r".*does not have many workers")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # "Writing model shards" when saving the student
