"""`purld-signal`: how well each ranker orders the frozen student's samples, against the task's oracle — before
any training, so that a ranker is chosen for a task and a student before compute is spent on it.

    purld-signal experiment=smollm2                                  # every ranker that applies
    purld-signal task=word_problems student=smollm2 signal.rankers=[likelihood,self_judge] rollout.num_candidates=8
    purld-signal experiment=smollm2 checkpoint=outputs/runs/<date>/<time>   # a trained student, as it ranks now

The student samples `rollout.num_candidates` answers for each of the first `signal.num_prompts` train prompts
(one rollout, the same candidates for every ranker); each ranker scores them against the anchor, and the table
gives Kendall τ against the oracle, top-1 oracle accuracy and the mass of q = softmax(s / τ) on correct answers,
each with a bootstrap interval over prompts (`purld.ranking.signal`), beside chance (the samples' own accuracy).
The chosen `ranker` keeps its overrides (`ranker=self_judge ranker.judge_model=reference`); the others are their
conf/ranker/*.yaml as written. Writes `<run dir>/signal.json` (the table, and the first prompts' candidates
with their oracle and ranker scores).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from purld.cli.checks import ConfigError, check_config, group_choice, reported_errors
from purld.cli.train import CONFIG_DIR

if TYPE_CHECKING:  # torch is imported once the config is checked
    from torch import Tensor

RANKER_DIR = Path(CONFIG_DIR) / "ranker"
NOT_A_SIGNAL = ("oracle",)  # the yardstick itself
EXAMPLES_SHOWN = 3  # prompts whose candidates and scores signal.json keeps


def ranker_names(cfg: DictConfig) -> list[str]:
    """`signal.rankers`, or every conf/ranker option but the oracle; an unknown name lists the options."""
    available = sorted(path.stem for path in RANKER_DIR.glob("*.yaml"))
    requested = cfg.signal.rankers
    if requested is None:
        return [name for name in available if name not in NOT_A_SIGNAL]
    names = [requested] if isinstance(requested, str) else list(requested)
    for name in names:
        if name not in available:
            raise ConfigError(f"signal.rankers: no ranker {name!r} in conf/ranker (options: {', '.join(available)})")
    return names


def ranker_config(cfg: DictConfig, name: str) -> DictConfig:
    """The config to build ranker `name` from: the chosen `ranker` with its overrides, or the option's file, its
    interpolations (`${seed}`) read against the run's config."""
    if name == group_choice("ranker"):
        return cfg
    scratch = copy.deepcopy(cfg)
    with open_dict(scratch):
        scratch.ranker = OmegaConf.load(RANKER_DIR / f"{name}.yaml")
    return scratch


def signal_main(cfg: DictConfig) -> dict[str, Any]:
    check_config(cfg)
    from purld.cli.components import build_components, build_group, configure_process, key_choices, quiet_libraries, run_dir
    from purld.cli.eval import load_saved_student
    from purld.cli.pipeline import load_student, make_datamodule, write_json
    from purld.cli.report import print_signal
    from purld.eval.evaluate import evaluation_device
    from purld.ranking.signal import chance, signal_quality

    import torch

    quiet_libraries()
    configure_process(cfg)
    parts = build_components(cfg)
    if not parts.task.has_oracle:
        raise ConfigError(f"purld-signal measures rankers against an oracle; task {parts.task.name!r} has none")
    names = ranker_names(cfg)
    if "embedding" in names and cfg.signal.rankers is None and group_choice("ranker") != "embedding":
        from purld.ranking.embedding import EXTRA, missing_packages

        if missing_packages(OmegaConf.load(RANKER_DIR / "embedding.yaml").get("model_name_or_path")):
            print(f"purld-signal: leaving out ranker embedding (its encoder is not installed: {EXTRA})")
            names.remove("embedding")
    if "verifier" in names and not parts.task.extracts_answers:
        if cfg.signal.rankers is not None:
            raise ConfigError(f"signal.rankers: verifier needs a task that extracts final answers; task {parts.task.name!r} does not")
        names.remove("verifier")
    rankers = {name: build_group(ranker_config(cfg, name), "ranker") for name in names}
    started = time.perf_counter()
    model, tokenizer, processor = load_saved_student(cfg.checkpoint) if cfg.checkpoint else load_student(parts)
    datamodule = make_datamodule(cfg, parts, tokenizer, splits=("train",), num_train_prompts=cfg.signal.num_prompts,
                                 processor=processor)
    datamodule.prepare_data()
    datamodule.setup("fit")
    model.to(evaluation_device(cfg.trainer.get("accelerator")))
    torch.manual_seed(cfg.seed)
    scored = sample_and_score(datamodule, model, parts.sampler, rankers, cfg.signal.batch_size)

    settings = {"num_resamples": cfg.signal.bootstrap_resamples, "confidence": cfg.signal.confidence, "seed": cfg.seed}
    report = {
        "choices": key_choices(cfg),
        "checkpoint": cfg.checkpoint,
        "prompts": len(scored.oracle),
        "candidates_per_prompt": parts.sampler.num_candidates,
        "temperature": cfg.signal.temperature,
        "bootstrap": {"resamples": cfg.signal.bootstrap_resamples, "confidence": cfg.signal.confidence, "unit": "prompt"},
        "chance": chance(scored.oracle, **settings),
        "rankers": {
            name: {**signal_quality(scores, scored.oracle, cfg.signal.temperature, **settings), "seconds": round(scored.seconds[name], 2)}
            for name, scores in scored.scores.items()
        },
        "teacher_calls": datamodule.fill_stats.teacher_calls,
        "cache_hits": datamodule.fill_stats.cache_hits,
        "seconds": {"rollout": round(scored.seconds["rollout"], 2), "total": round(time.perf_counter() - started, 2)},
        "examples": scored.examples,
    }
    path = run_dir() / "signal.json"
    write_json(path, report)
    print_signal(report, path)
    return report


@dataclass
class Scored:
    oracle: Tensor  # (N, K) oracle scores
    scores: dict[str, Tensor]  # ranker name → (N, K) scores
    seconds: dict[str, float]  # rollout and each ranker
    examples: list[dict[str, Any]]  # the first prompts' candidates with their oracle and ranker scores


def sample_and_score(datamodule, model, sampler, rankers: dict, batch_size: int) -> Scored:
    """One rollout of the train prompts, batch by batch; every ranker scores the same candidates."""
    import torch

    from purld.ranking.base import RankingContext
    from purld.ranking.diagnostics import oracle_scores

    oracle, scores, seconds = [], {name: [] for name in rankers}, {"rollout": 0.0, **{name: 0.0 for name in rankers}}
    examples: list[dict[str, Any]] = []
    items, device, task = datamodule.train_items, model.device, datamodule.task
    context = RankingContext(task, model, datamodule.tokenizer, render=datamodule.render_message, processor=datamodule.processor)
    for start in range(0, len(items), batch_size):
        batch = datamodule.collate(items[start : start + batch_size]).to(device)
        tick = time.perf_counter()
        rollout = sampler.sample(model, datamodule.tokenizer, batch)
        seconds["rollout"] += time.perf_counter() - tick
        oracle.append(oracle_scores(task, batch, rollout))
        for name, ranker in rankers.items():
            tick = time.perf_counter()
            scores[name].append(ranker(batch, rollout, context).cpu())
            seconds[name] += time.perf_counter() - tick
        for i in range(min(len(batch), EXAMPLES_SHOWN - len(examples))):
            examples.append({
                "prompt_id": batch.examples[i].prompt_id, "prompt": batch.examples[i].prompt, "anchor": batch.anchors[i],
                "candidates": [{"text": text, "oracle": oracle[-1][i, k].item(), "scores": {n: scores[n][-1][i, k].item() for n in rankers}}
                               for k, text in enumerate(rollout.texts[i])],
            })
    return Scored(torch.cat(oracle), {name: torch.cat(parts) for name, parts in scores.items()}, seconds, examples)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
@reported_errors
def main(cfg: DictConfig) -> None:
    signal_main(cfg)


if __name__ == "__main__":
    main()
