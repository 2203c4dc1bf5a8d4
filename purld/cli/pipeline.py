"""The stages of `purld-train`: anchors → SFT warm start → PU-RLD → held-out evaluation → summary.json.

Imported by the entry point (`purld.cli.train`) once the config has been checked, so that a bad
config fails before torch, Lightning and transformers load.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from purld.cli.checks import ConfigError
from purld.cli.components import Components, build_components, build_group, configure_process, key_choices, quiet_libraries, run_dir
from purld.cli.loggers import without_secrets
from purld.cli.report import print_before_after
from purld.cli.resume import stage_checkpoint
from purld.data.datamodule import AnchorDataModule
from purld.eval.evaluate import evaluate, evaluation_device
from purld.modules import SFTModule, module_for
from purld.modules.samples import SampleLogger
from purld.objectives.sft import SFTObjective
from purld.students.hf import has_adapters, save_student


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to `<path>.tmp`, then rename: a checkpoint on disk is always complete."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        temporary = path.with_name(path.name + ".tmp")
        super().save_checkpoint(checkpoint, temporary, storage_options)
        os.replace(temporary, path)


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
    cfg: DictConfig,
    stage: str,
    max_steps: int,
    output_dir: Path,
    validate_every: int = 0,
    hyperparameters: dict | None = None,
) -> L.Trainer:
    """The Lightning trainer for one stage: its logger, checkpoints and the samples table."""
    logger = instantiate(cfg.logger)(save_dir=output_dir, stage=stage)  # a logger, a list of them, or False
    for each in (logger if isinstance(logger, list) else [logger] if logger else []):
        if hyperparameters:
            each.log_hyperparams(hyperparameters)
    callbacks: list[L.Callback] = [SampleLogger(output_dir / "samples.jsonl", cfg.samples.every_n_steps, cfg.samples.num_prompts)]
    for name in cfg.get("callbacks") or {}:  # the user's own, each stage a fresh instance
        callbacks.append(build_group(cfg, f"callbacks.{name}"))
    if cfg.checkpointing.enabled and cfg.checkpointing.every_n_steps > 0:
        callbacks.append(
            ModelCheckpoint(
                dirpath=stage_checkpoint(output_dir, stage).parent,
                filename="last",
                every_n_train_steps=cfg.checkpointing.every_n_steps,
                save_top_k=1,
                enable_version_counter=False,
                save_on_train_epoch_end=False,
            )
        )
    overrides: dict[str, Any] = {
        "max_steps": max_steps,
        "logger": logger,
        "default_root_dir": str(output_dir),
        "callbacks": callbacks,
        "enable_checkpointing": bool(cfg.checkpointing.enabled),
        "plugins": [AtomicCheckpointIO()],
        "use_distributed_sampler": False,  # PromptStream shards the prompts itself, resumably
    }
    if cfg.trainer.get("enable_progress_bar") is None:
        overrides["enable_progress_bar"] = sys.stderr.isatty()
    if validate_every > 0:
        overrides["val_check_interval"] = validate_every
    else:
        overrides["limit_val_batches"] = 0
    return instantiate(cfg.trainer, **overrides)


def fit_stage(
    cfg: DictConfig, stage: str, module: L.LightningModule, datamodule, max_steps: int, output_dir: Path, **trainer_kwargs
) -> L.Trainer:
    """Fit one stage, continuing from its checkpoint when resuming, and checkpoint its end.

    A stage that had finished is restored from its last checkpoint and returns at once.
    """
    checkpoint = stage_checkpoint(output_dir, stage)
    resume_from = str(checkpoint) if cfg.resume and checkpoint.exists() else None
    trainer = make_trainer(cfg, stage, max_steps, output_dir, **trainer_kwargs)
    # weights_only=False: our own checkpoint, holding RNG states (numpy arrays) beside the tensors.
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=False)
    if cfg.checkpointing.enabled:
        trainer.save_checkpoint(checkpoint, weights_only=False)
    return trainer


def wait_for_anchors(marker: Path, timeout_s: float = 3600.0) -> None:
    """Ranks other than 0 read the cache once rank 0 has filled it (at once when Lightning launched them after)."""
    deadline = time.monotonic() + timeout_s
    while not marker.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank {rank_zero_only.rank}: rank 0 did not finish filling the anchor cache ({marker} missing)")
        time.sleep(1.0)


def make_datamodule(
    cfg: DictConfig, parts: Components, tokenizer, splits=("train", "heldout"), num_train_prompts: int | None = None,
    processor=None,
) -> AnchorDataModule:
    """The datamodule for a built student (`tokenizer` decides chat-template rendering with the student's setting;
    `processor`: a vision-language student's); `num_train_prompts`: only the first N train prompts (and their anchors)."""
    return AnchorDataModule(
        task=parts.task,
        teacher=parts.teacher,
        anchor_cache=parts.anchor_cache,
        tokenizer=tokenizer,
        batch_size=cfg.data.batch_size,
        eval_batch_size=cfg.eval.batch_size,
        num_eval_prompts=cfg.eval.num_prompts,
        num_train_prompts=num_train_prompts,
        splits=splits,
        use_chat_template=parts.student.chat_template_enabled(tokenizer),
        seed=cfg.seed,
        processor=processor,
    )


def parameter_megabytes(model, base_only: bool = False) -> float:
    """Parameter memory in MB (10^6 bytes); `base_only` leaves LoRA adapters out."""
    return sum(
        p.numel() * p.element_size() for name, p in model.named_parameters() if not (base_only and "lora_" in name)
    ) / 1e6


def load_student(parts: Components):
    """(model, tokenizer, processor): the processor of a vision-language student, else None."""
    try:
        model, tokenizer = parts.student.load()
        return model, tokenizer, parts.student.load_processor(tokenizer)
    except (OSError, ValueError) as error:  # a hub id without network, a directory without weights
        first_line = str(error).strip().splitlines()[0]
        raise ConfigError(f"student: could not load {getattr(parts.student, 'model_name_or_path', parts.student.name)!r}: {first_line}") from None


def check_student_sees(parts: Components, processor) -> None:
    """A task whose prompts show images needs a student with a processor for them."""
    if parts.task.has_images and processor is None:
        raise ConfigError(
            f"task={parts.task.name} shows images, and student={parts.student.name} reads text only: use student=tiny_vlm "
            "(experiment=vlm_quickstart) or an image-text-to-text model (student=hf student.model_name_or_path=...)"
        )


def write_json(path: Path, content: Any) -> None:
    """Write whole or not at all (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(content, indent=2))
    os.replace(temporary, path)


def train(cfg: DictConfig) -> dict[str, Any]:
    """The whole run on `cfg` (a resumed run's config already restored: `resumed_config`)."""
    clock, started = StageClock(), time.perf_counter()
    parts = build_components(cfg)  # raises ConfigError before any model is loaded
    quiet_libraries()
    configure_process(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    output_dir = run_dir()
    is_rank_zero = rank_zero_only.rank == 0

    with clock("load_student"):
        model, tokenizer, processor = load_student(parts)
    check_student_sees(parts, processor)
    try:
        parts.sampler.check(model)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    datamodule = make_datamodule(cfg, parts, tokenizer, processor=processor)
    hyperparameters = {
        **{f"choice/{name}": value for name, value in key_choices(cfg).items()},
        "parameters/total": sum(p.numel() for p in model.parameters()),
        "parameters/trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "config": without_secrets(OmegaConf.to_container(cfg, resolve=True)),
    }
    anchors_marker = output_dir / "anchors.json"
    with clock("anchors"):
        if not is_rank_zero:
            wait_for_anchors(anchors_marker)
        datamodule.prepare_data()  # fills the cache on rank 0 only
        if is_rank_zero:
            write_json(anchors_marker, datamodule.fill_stats.as_dict())
        datamodule.setup("fit")

    def held_out_metrics() -> dict[str, float]:
        return evaluate(
            model, tokenizer, datamodule.heldout_dataloader(), parts.task, parts.judge, cfg.eval.max_new_tokens,
            device=evaluation_device(cfg.trainer.get("accelerator")), render=datamodule.render_message, processor=processor,
        )

    if cfg.warmstart.sft_steps > 0:
        with clock("warmstart"):
            warm_module = SFTModule(
                model,
                tokenizer,
                SFTObjective(),
                instantiate(cfg.warmstart.optimizer),
                scheduler=instantiate(cfg.warmstart.scheduler) if cfg.warmstart.get("scheduler") else None,
                metric_prefix="warmstart/",
                micro_batch_size=cfg.data.micro_batch_size,
            )
            warm_data = datamodule.with_batch_size(cfg.warmstart.batch_size)
            fit_stage(cfg, "warmstart", warm_module, warm_data, cfg.warmstart.sft_steps, output_dir, hyperparameters=hyperparameters)
        model = parts.student.merge_warm_start(model)

    # Held-out evaluation runs on rank 0 only; other ranks go on to the next fit and wait for it there.
    before: dict[str, float] = {}
    if is_rank_zero and cfg.eval.get("before", True):
        with clock("eval_before"):
            before_file = output_dir / "eval_before.json"
            before = json.loads(before_file.read_text()) if cfg.resume and before_file.exists() else held_out_metrics()
            write_json(before_file, before)

    # The reference is the policy as PU-RLD starts: after the warm start, frozen. A LoRA
    # student needs no copy: its adapters are disabled to compute reference log-probs.
    is_lora = has_adapters(model)
    needs_reference = parts.objective.needs_reference or getattr(parts.ranker, "judge_model", "policy") == "reference"
    reference = copy.deepcopy(model) if needs_reference and not is_lora else None
    module = module_for(
        parts.objective,
        model=model,
        tokenizer=tokenizer,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        sampler=parts.sampler,
        reference_model=reference,
        eval_max_new_tokens=cfg.eval.max_new_tokens,
        micro_batch_size=cfg.data.micro_batch_size,
        task=parts.task,
        ranker=parts.ranker,
        judge=parts.judge,
        render=datamodule.render_message,
        processor=processor,
    )
    global_step, world_size = 0, 1
    if cfg.trainer.max_steps > 0:
        with clock("purld"):
            trainer = fit_stage(
                cfg,
                "purld",
                module,
                datamodule,
                cfg.trainer.max_steps,
                output_dir,
                validate_every=cfg.eval.every_n_steps,
                hyperparameters=hyperparameters,
            )
            global_step, world_size = trainer.global_step, trainer.world_size
    if not is_rank_zero:
        return {}

    if global_step == 0 and before:  # no PU-RLD step: the student is the one just evaluated (greedy, same answers)
        after = before
    else:
        with clock("eval_after"):
            after = held_out_metrics()
    save_student(model, tokenizer, output_dir / "student", processor)
    fill = datamodule.fill_stats
    summary = {
        "run_dir": str(output_dir),
        "choices": key_choices(cfg),
        "eval": {"before": before, "after": after},
        "teacher_calls": fill.teacher_calls,
        "reference_answers": fill.reference_answers,
        "cache_hits": fill.cache_hits,
        "judge": parts.judge.identity(),  # what judged win_rate; an LLM judge's calls made in this run
        "anchors": {**fill.as_dict(), "prompts_without_anchor": datamodule.prompts_without_anchor},
        "task": parts.task.report(),
        "global_step": global_step,
        # Means over the PU-RLD steps of the ranking diagnostics, over the steps where each was defined (this rank's).
        "rank_means": module.step_means.summary("rank/"),
        "world_size": world_size,
        "resumed": bool(cfg.resume),
        "num_parameters": hyperparameters["parameters/total"],
        "reference": "copy" if reference is not None else ("adapters disabled" if is_lora else "none"),
        # What a frozen copy costs (its parameters), and what LoRA's disabled adapters save by not making one.
        "reference_copy_mb": round(parameter_megabytes(reference), 2) if reference is not None else 0.0,
        "reference_copy_saved_mb": round(parameter_megabytes(model, base_only=True), 2) if is_lora else 0.0,
        "seconds": {**clock.seconds, "total": round(time.perf_counter() - started, 3)},
    }
    write_json(output_dir / "summary.json", summary)
    if cfg.checkpointing.enabled and not cfg.checkpointing.get("keep_when_done", True):
        shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)
    log_final_metrics(summary)
    print_before_after(before, after, summary)
    return summary


def log_final_metrics(summary: dict[str, Any]) -> None:
    """W&B: the held-out metrics before and after, and the run's totals, in the run summary."""
    wandb = sys.modules.get("wandb")
    if wandb is None or wandb.run is None:
        return
    for when in ("before", "after"):
        for name, value in summary["eval"][when].items():
            wandb.run.summary[f"eval/{when}/{name}"] = value
    for key in ("teacher_calls", "reference_answers", "cache_hits", "global_step"):
        wandb.run.summary[key] = summary[key]
