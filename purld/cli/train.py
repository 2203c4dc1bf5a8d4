"""`purld-train`: anchors → SFT warm start → PU-RLD → held-out evaluation → summary.json.

The entry point stays light: Hydra composes the config and `check_config` runs before torch,
Lightning or transformers are imported (`purld.cli.pipeline` holds the stages), so a bad
override fails in about a second.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from purld.cli.checks import check_config, check_quickstart_student, missing_plugin, reported_errors
from purld.cli.resume import resumed_config

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")  # purld/conf: the package's link to conf/, or its copy in a wheel


def run_and_finish(cfg: DictConfig) -> dict[str, Any]:
    """Check, `train`, then close the W&B run (failed runs are marked failed), so a sweep's next job gets its own."""
    if cfg.get("resume"):
        cfg = resumed_config(cfg)
    check_config(cfg)
    check_quickstart_student(cfg)
    from purld.cli.loggers import finish_wandb
    from purld.cli.pipeline import train

    try:
        summary = train(cfg)
    except BaseException:
        finish_wandb(exit_code=1)
        raise
    sync_command = finish_wandb()
    if sync_command and summary:
        print(f"W&B ran offline; to upload: {sync_command}")
    return summary


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
@reported_errors
def hydra_main(cfg: DictConfig) -> float | None:
    summary = run_and_finish(cfg)
    if not summary:  # a rank other than 0
        return None
    return summary["eval"]["after"].get(cfg.get("optimized_metric") or "accuracy")  # what a Hydra sweeper optimises


def main() -> None:
    if message := missing_plugin(sys.argv[1:]):
        print(f"purld: invalid config: {message}", file=sys.stderr)
        sys.exit(2)
    hydra_main()


if __name__ == "__main__":
    main()
