"""`purld-anchors`: fill the anchor cache for a task's prompts, and nothing else.

    purld-anchors                          # train + held-out prompts of the configured task
    purld-anchors task=arithmetic anchors.cache_path=/shared/anchors.sqlite
"""

from __future__ import annotations

import json

import hydra
from omegaconf import DictConfig

from purld.cli.checks import check_config, reported_errors
from purld.cli.report import print_metrics
from purld.cli.train import CONFIG_DIR


def fill_anchors(cfg: DictConfig) -> dict[str, float]:
    check_config(cfg)
    # Imported once the config is checked (torch, transformers): a bad config fails at once.
    from purld.cli.components import build_components, key_choices, quiet_libraries, run_dir

    parts = build_components(cfg)
    quiet_libraries()
    heldout = parts.task.examples("heldout")[: cfg.eval.num_prompts]
    stats = parts.anchor_cache.fill(parts.teacher, parts.task.examples("train") + heldout)
    result = {"cache_path": str(parts.anchor_cache.path), "choices": key_choices(cfg), **stats.as_dict()}
    (run_dir() / "anchors.json").write_text(json.dumps(result, indent=2))
    print_metrics(f"anchors ({parts.teacher.name}) → {parts.anchor_cache.path}", stats.as_dict())
    return stats.as_dict()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
@reported_errors
def main(cfg: DictConfig) -> None:
    fill_anchors(cfg)


if __name__ == "__main__":
    main()
