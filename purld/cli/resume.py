"""Checkpoints on disk, and `purld-train resume=<run dir | checkpoint>`.

Each stage keeps `<run dir>/checkpoints/<stage>/last.ckpt` (every
`checkpointing.every_n_steps` and at the stage's end), written to a temporary
file and renamed, so a process killed mid-write leaves the previous checkpoint
whole. A resumed run continues **in its own run directory** with the config it
was started with (`<run dir>/.hydra/config.yaml`): a finished stage is restored
and skipped, an unfinished one continues at its step with its optimizer,
scheduler, RNG and data position. Anchors come from the cache (no teacher call
is repeated) and W&B logs to the same run id.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict, read_write

from purld.cli.checks import ConfigError

# Keys a resumed run may change: how long it trains, how it checkpoints and logs. Anything
# else would make the resumed run a different experiment from the one in its directory.
RESUMABLE_OVERRIDES = ("resume", "trainer.max_steps", "checkpointing.", "samples.", "logger.", "hydra.")


def stage_checkpoint(run_dir: Path, stage: str) -> Path:
    return Path(run_dir) / "checkpoints" / stage / "last.ckpt"


def run_dir_of(resume: str) -> Path | None:
    """The run directory named by `resume` (the directory itself, or one of its checkpoints); None if it is neither."""
    path = Path(str(resume)).expanduser().resolve()
    candidates = [path] if path.is_dir() else [path.parents[2]] if path.suffix == ".ckpt" and len(path.parents) > 2 else []
    return next((c for c in candidates if (c / ".hydra" / "config.yaml").exists()), None)


def hydra_run_dir(resume: str | None, default: str) -> str:
    """Resolver for `hydra.run.dir`: a resumed run writes into the directory it resumes."""
    if resume:
        found = run_dir_of(resume)
        if found is not None:
            return str(found)
    return default


def hydra_output_subdir(resume: str | None) -> str:
    """Resolver for `hydra.output_subdir`: keep the original `.hydra/` (the run's config) when resuming."""
    return ".hydra-resume" if resume and run_dir_of(resume) is not None else ".hydra"


def changes_the_run(override: str, cfg: DictConfig, saved: DictConfig, saved_choices: DictConfig) -> bool:
    """Whether a command-line override gives the resumed run another value than the run was started with: the
    same command line with `resume=` added changes nothing. A group override (`loss=dpo`) is compared with the
    run's group choice, any other key with the run's saved value."""
    key = override.lstrip("+~").split("=", 1)[0]
    if key in saved_choices:  # `~group` removes the group: its choice is then None
        return str(saved_choices[key]) != str(None if override.startswith("~") else override.split("=", 1)[1])
    as_container = lambda node: OmegaConf.to_container(node) if isinstance(node, (DictConfig, ListConfig)) else node  # noqa: E731
    return as_container(OmegaConf.select(cfg, key)) != as_container(OmegaConf.select(saved, key))


def resumed_config(cfg: DictConfig) -> DictConfig:
    """The config saved by the run being resumed, with the few overrides a resume may change applied.

    Also points Hydra's recorded group choices at the resumed run's, so summary.json
    and the checks see the run's real choices.
    """
    from hydra.core.hydra_config import HydraConfig

    run_dir = run_dir_of(cfg.resume)
    if run_dir is None:
        raise ConfigError(
            f"resume={cfg.resume!r}: not a purld-train run directory (with .hydra/config.yaml) "
            "or a checkpoint inside one (<run dir>/checkpoints/<stage>/last.ckpt)"
        )
    if (run_dir / "summary.json").exists() and not (run_dir / "checkpoints").exists():
        raise ConfigError(
            f"resume={cfg.resume!r}: that run finished and its checkpoints were deleted (checkpointing.keep_when_done="
            f"false); its trained model is {run_dir / 'student'}: start a new run from it "
            f"(student=hf student.model_name_or_path={run_dir / 'student'})"
        )
    hydra = HydraConfig.get()
    saved = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    choices = OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra.runtime.choices
    resumable = [o for o in hydra.overrides.task if o.lstrip("+~").startswith(RESUMABLE_OVERRIDES)]
    refused = [o for o in hydra.overrides.task if o not in resumable and changes_the_run(o, cfg, saved, choices)]
    if refused:
        raise ConfigError(
            f"resume={cfg.resume!r} continues that run with the config it was started with "
            f"({run_dir / '.hydra' / 'config.yaml'}); {' '.join(refused)} changes it: remove it "
            "(a resume may only change trainer.max_steps, checkpointing.*, samples.* and logger.*)"
        )
    with open_dict(saved):
        saved.resume = str(run_dir)
        for override in resumable:
            key = override.lstrip("+~").split("=", 1)[0]
            if key not in ("resume",) and not key.startswith("hydra."):
                OmegaConf.update(saved, key, OmegaConf.select(cfg, key), force_add=True)
    choices = OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra.runtime.choices
    with read_write(hydra.runtime):
        hydra.runtime.choices = choices
    return saved
