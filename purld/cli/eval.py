"""`purld-eval`: held-out oracle accuracy, win rate against the anchor and length of a student.

    purld-eval checkpoint=outputs/runs/<date>/<time>        # a purld-train run (its student/)
    purld-eval checkpoint=/path/to/saved/model ranker=verifier
    purld-eval                                               # the configured student as built
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from purld.cli.checks import ConfigError, check_config, reported_errors
from purld.cli.report import print_metrics
from purld.cli.train import CONFIG_DIR


def load_saved_student(checkpoint: str | Path):
    """A saved model directory (weights, or adapters over their base), or a purld-train run holding one under student/."""
    path = Path(checkpoint).expanduser()
    if (path / "student").is_dir():
        path = path / "student"
    if not any((path / name).exists() for name in ("config.json", "adapter_config.json")):
        raise ConfigError(f"checkpoint={str(checkpoint)!r}: no saved model (config.json or adapter_config.json) in {path}")
    from purld.students.hf import HFStudent

    student = HFStudent(str(path))
    model, tokenizer = student.load()
    return model, tokenizer, student.load_processor(tokenizer)


def evaluate_main(cfg: DictConfig) -> dict[str, float]:
    check_config(cfg)
    # Imported once the config is checked (torch, Lightning, transformers): a bad config fails at once.
    from purld.cli.components import build_components, configure_process, key_choices, quiet_libraries, run_dir
    from purld.cli.pipeline import check_student_sees, load_student, make_datamodule
    from purld.eval.evaluate import evaluate, evaluation_device

    parts = build_components(cfg)
    quiet_libraries()
    configure_process(cfg)
    model, tokenizer, processor = load_saved_student(cfg.checkpoint) if cfg.checkpoint else load_student(parts)
    check_student_sees(parts, processor)
    datamodule = make_datamodule(cfg, parts, tokenizer, splits=("heldout",), processor=processor)
    datamodule.prepare_data()
    datamodule.setup("validate")
    metrics = evaluate(
        model, tokenizer, datamodule.heldout_dataloader(), parts.task, parts.judge, cfg.eval.max_new_tokens,
        device=evaluation_device(cfg.trainer.get("accelerator")), render=datamodule.render_message, processor=processor,
    )
    result = {
        "checkpoint": cfg.checkpoint,
        "choices": key_choices(cfg),
        "eval": metrics,
        "teacher_calls": datamodule.fill_stats.teacher_calls,
        "cache_hits": datamodule.fill_stats.cache_hits,
        "judge": parts.judge.identity(),
    }
    (run_dir() / "eval.json").write_text(json.dumps(result, indent=2))
    print_metrics(f"held-out evaluation of {cfg.checkpoint or 'the configured student'}", metrics)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
@reported_errors
def main(cfg: DictConfig) -> float | None:
    return evaluate_main(cfg).get("accuracy")


if __name__ == "__main__":
    main()
