"""`purld-train`: anchors → SFT warm start → PU-RLD → held-out evaluation → summary.json."""

from __future__ import annotations

import copy
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from purld.cli.checks import ConfigError
from purld.cli.components import (
    Components,
    build_components,
    key_choices,
    quiet_libraries,
    reported_errors,
    run_dir,
)
from purld.cli.report import print_before_after
from purld.data.datamodule import AnchorDataModule
from purld.eval.evaluate import evaluate
from purld.modules import SFTModule, module_for
from purld.objectives.sft import SFTObjective
from purld.students.hf import has_adapters, save_student

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")


class StageClock:
    """Wall seconds per pipeline stage, for summary.json."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[stage] = round(time.perf_counter() - start, 3)


def make_trainer(
    cfg: DictConfig, stage: str, max_steps: int, validate_every: int = 0, hyperparameters: dict | None = None
) -> L.Trainer:
    logger = instantiate(cfg.logger)(version=stage)
    if logger and hyperparameters:
        logger.log_hyperparams(hyperparameters)
    overrides: dict[str, Any] = {"max_steps": max_steps, "logger": logger, "default_root_dir": str(run_dir())}
    if cfg.trainer.get("enable_progress_bar") is None:
        overrides["enable_progress_bar"] = sys.stderr.isatty()
    if validate_every > 0:
        overrides["val_check_interval"] = validate_every
    else:
        overrides["limit_val_batches"] = 0
    return instantiate(cfg.trainer, **overrides)


def make_datamodule(cfg: DictConfig, parts: Components, tokenizer, splits=("train", "heldout")) -> AnchorDataModule:
    """The datamodule for a built student (`tokenizer` decides chat-template rendering with the student's setting)."""
    return AnchorDataModule(
        task=parts.task,
        teacher=parts.teacher,
        anchor_cache=parts.anchor_cache,
        ranker=parts.ranker,
        tokenizer=tokenizer,
        batch_size=cfg.data.batch_size,
        eval_batch_size=cfg.eval.batch_size,
        num_eval_prompts=cfg.eval.num_prompts,
        splits=splits,
        use_chat_template=parts.student.chat_template_enabled(tokenizer),
    )


def parameter_megabytes(model, base_only: bool = False) -> float:
    """Parameter memory in MB (10^6 bytes); `base_only` leaves LoRA adapters out."""
    return sum(
        p.numel() * p.element_size() for name, p in model.named_parameters() if not (base_only and "lora_" in name)
    ) / 1e6


def load_student(parts: Components):
    try:
        return parts.student.load()
    except (OSError, ValueError) as error:  # a hub id without network, a directory without weights
        first_line = str(error).strip().splitlines()[0]
        raise ConfigError(f"student: could not load {getattr(parts.student, 'model_name_or_path', parts.student.name)!r}: {first_line}") from None


def train(cfg: DictConfig) -> dict[str, Any]:
    clock, started = StageClock(), time.perf_counter()
    parts = build_components(cfg)  # raises ConfigError before any model is loaded
    quiet_libraries()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    output_dir = run_dir()

    with clock("load_student"):
        model, tokenizer = load_student(parts)
    datamodule = make_datamodule(cfg, parts, tokenizer)
    hyperparameters = {
        **{f"choice/{name}": value for name, value in key_choices(cfg).items()},
        "parameters/total": sum(p.numel() for p in model.parameters()),
        "parameters/trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    with clock("anchors"):
        datamodule.prepare_data()
        datamodule.setup("fit")

    def held_out_metrics() -> dict[str, float]:
        return evaluate(model, tokenizer, datamodule.heldout_dataloader(), parts.task, parts.ranker, cfg.eval.max_new_tokens)

    if cfg.warmstart.sft_steps > 0:
        with clock("warmstart"):
            warm_module = SFTModule(
                model,
                tokenizer,
                SFTObjective(),
                instantiate(cfg.warmstart.optimizer),
                scheduler=instantiate(cfg.warmstart.scheduler) if cfg.warmstart.get("scheduler") else None,
            )
            warm_data = datamodule.with_batch_size(cfg.warmstart.batch_size)
            make_trainer(cfg, "warmstart", cfg.warmstart.sft_steps, hyperparameters=hyperparameters).fit(warm_module, datamodule=warm_data)
        model = parts.student.merge_warm_start(model)
    with clock("eval_before"):
        before = held_out_metrics()

    # The reference is the policy as PU-RLD starts: after the warm start, frozen. A LoRA
    # student needs no copy: its adapters are disabled to compute reference log-probs.
    is_lora = has_adapters(model)
    reference = copy.deepcopy(model) if parts.objective.needs_reference and not is_lora else None
    module = module_for(
        parts.objective,
        model=model,
        tokenizer=tokenizer,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        sampler=parts.sampler,
        reference_model=reference,
        eval_max_new_tokens=cfg.eval.max_new_tokens,
    )
    global_step = 0
    if cfg.trainer.max_steps > 0:
        with clock("purld"):
            trainer = make_trainer(cfg, "purld", cfg.trainer.max_steps, cfg.eval.every_n_steps, hyperparameters)
            trainer.fit(module, datamodule=datamodule)
            global_step = trainer.global_step
    with clock("eval_after"):
        after = held_out_metrics()

    save_student(model, tokenizer, output_dir / "student")
    fill = datamodule.fill_stats
    summary = {
        "run_dir": str(output_dir),
        "choices": key_choices(cfg),
        "eval": {"before": before, "after": after},
        "teacher_calls": fill.teacher_calls,
        "cache_hits": fill.cache_hits,
        "anchors": {**fill.as_dict(), "prompts_without_anchor": datamodule.prompts_without_anchor},
        "task": parts.task.report(),
        "global_step": global_step,
        "num_parameters": hyperparameters["parameters/total"],
        "reference": "copy" if reference is not None else ("adapters disabled" if is_lora else "none"),
        # What a frozen copy costs (its parameters), and what LoRA's disabled adapters save by not making one.
        "reference_copy_mb": round(parameter_megabytes(reference), 2) if reference is not None else 0.0,
        "reference_copy_saved_mb": round(parameter_megabytes(model, base_only=True), 2) if is_lora else 0.0,
        "seconds": {**clock.seconds, "total": round(time.perf_counter() - started, 3)},
    }
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print_before_after(before, after, summary)
    return summary


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
@reported_errors
def main(cfg: DictConfig) -> float | None:
    return train(cfg)["eval"]["after"].get("accuracy")  # the value a Hydra sweeper optimises


if __name__ == "__main__":
    main()
