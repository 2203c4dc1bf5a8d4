"""Experiment loggers (`conf/logger/*`): one factory per option, called once per stage.

A factory takes the run directory and the stage (`warmstart`, `purld`) and
returns a Lightning logger, or False for none. CSV keeps one `metrics.csv` per
stage; W&B keeps **one run** for the whole job (the stages' metrics are told
apart by their prefixes: `warmstart/`, `train/`, `rollout/`, `rank/`, `eval/`).
"""

from __future__ import annotations

import csv
import netrc
import os
import secrets
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

WANDB_RUN_ID_FILE = "wandb-run-id.txt"  # in the run dir: a resumed run logs to the same W&B run
SECRET_WORDS = ("api_key", "apikey", "token", "secret", "password")


class ContinuingWriter(ExperimentWriter):
    """Lightning's CSV writer, except that an existing metrics.csv is continued, not deleted.

    A resumed run redoes the steps after its last checkpoint: the rows from the first
    step it logs onwards are replaced; the ones before it are kept.
    """

    def _check_log_dir_exists(self) -> None:
        self._continued = False

    def save(self) -> None:
        if self.metrics and not self._continued and self._fs.isfile(self.metrics_file_path):
            first_step = min(row["step"] for row in self.metrics)
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                reader = csv.DictReader(file)
                kept = [row for row in reader if int(float(row["step"])) < first_step]
                self.metrics_keys = sorted(set(reader.fieldnames or []) | set(self.metrics_keys))
            with self._fs.open(self.metrics_file_path, "w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
                writer.writeheader()
                writer.writerows(kept)
        self._continued = self._continued or bool(self.metrics)
        super().save()


class ContinuingCSVLogger(CSVLogger):
    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = ContinuingWriter(log_dir=self.log_dir)
        return self._experiment


def csv_logger(save_dir: Path, stage: str, flush_every_n_steps: int = 10) -> CSVLogger:
    """`<run dir>/logs/<stage>/metrics.csv`, flushed often enough that a killed run keeps its curves."""
    return ContinuingCSVLogger(save_dir=str(save_dir), name="logs", version=stage, flush_logs_every_n_steps=flush_every_n_steps)


def no_logger(save_dir: Path, stage: str) -> bool:
    """`logger=none`: Lightning takes False as 'no logger'; summary.json is still written."""
    return False


def wandb_has_credentials() -> bool:
    """An API key in the environment or in ~/.netrc for the W&B host (what `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_mode(mode: str) -> str:
    """`auto`: WANDB_MODE if the user set it, else online with credentials and offline without."""
    if mode != "auto":
        return mode
    return os.environ.get("WANDB_MODE") or ("online" if wandb_has_credentials() else "offline")


def sweep_defaults() -> dict[str, str | None]:
    """Group = the sweep (its directory), name = the job's overrides; outside a sweep, the run dir's name."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {"group": None, "name": None}
    hydra = HydraConfig.get()
    if hydra.mode == RunMode.MULTIRUN:
        sweep = Path(hydra.sweep.dir)
        return {"group": f"{sweep.parent.name}/{sweep.name}", "name": hydra.job.override_dirname or str(hydra.job.num)}
    output = Path(hydra.runtime.output_dir)
    return {"group": None, "name": f"{output.parent.name}/{output.name}"}


def wandb_logger(
    save_dir: Path,
    stage: str,
    project: str = "purld",
    entity: str | None = None,
    name: str | None = None,
    group: str | None = None,
    tags: Sequence[str] = (),
    mode: str = "auto",
    also_csv: bool = True,
) -> list[Logger]:
    """One W&B run per job, offline unless credentials are configured (`wandb sync <run dir>/wandb/offline-run-*`).

    With `also_csv`, metrics.csv is written too, so that `purld-compare` reads W&B runs without a dashboard."""
    import wandb
    from lightning.pytorch.loggers import WandbLogger
    from lightning.pytorch.utilities import rank_zero_only

    id_file = Path(save_dir) / WANDB_RUN_ID_FILE
    if not id_file.exists() and rank_zero_only.rank == 0:  # only rank 0 logs
        id_file.write_text(secrets.token_hex(4))  # W&B run ids are short [a-z0-9] strings
    defaults = sweep_defaults()
    warnings.filterwarnings("ignore", message="There is a wandb run already in progress")  # the second stage: on purpose
    run = WandbLogger(
        save_dir=str(save_dir),
        id=id_file.read_text().strip() if id_file.exists() else None,
        project=project,
        entity=entity,
        name=name or defaults["name"],
        group=group or defaults["group"],
        tags=list(tags),
        mode=wandb_mode(mode),
        settings=wandb.Settings(silent=True, console="off"),
    )
    run._wandb_init.pop("anonymous", None)  # Lightning passes anonymous=None, which wandb ≥ 0.2x warns about
    return [run, csv_logger(save_dir, stage)] if also_csv else [run]


def finish_wandb(exit_code: int = 0) -> str | None:
    """Close this job's W&B run, so that the next job of a sweep in this process starts its own.

    Returns the command that uploads it when it ran offline."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is None or wandb.run is None:
        return None
    offline = wandb.run.settings.mode in ("offline", "dryrun")
    directory = wandb.run.dir and Path(wandb.run.dir).parent
    wandb.finish(exit_code=exit_code)
    return f"wandb sync {directory}" if offline else None


def is_secret_key(key: str) -> bool:
    key = key.lower()
    return any(word in key for word in SECRET_WORDS) and not key.endswith("_env")  # api_key_env names a variable


def without_secrets(config: Any) -> Any:
    """The resolved config as logged: any key naming a secret (api_key, token, …) is masked."""
    if isinstance(config, Mapping):
        return {
            key: "***" if is_secret_key(str(key)) and value else without_secrets(value)
            for key, value in config.items()
        }
    if isinstance(config, list):
        return [without_secrets(value) for value in config]
    return config
