"""Config checks that run before anything heavy is built.

Every problem is reported as one short line naming the key, the value and what
is allowed; `purld-*` print it and exit with status 2, no stack trace.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError


class ConfigError(ValueError):
    pass


def _get(cfg: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(cfg, key, default=None)
    except InterpolationResolutionError as error:  # e.g. ${purld_package_dir:…} of a package not installed
        reason = str(error).splitlines()[0].split("resolving interpolation: ", 1)[-1]
        raise ConfigError(f"{key}: {reason}") from None


def _require(cfg: DictConfig, key: str, ok, allowed: str) -> None:
    value = _get(cfg, key)
    if value is None:
        return
    if isinstance(value, bool) or not ok(value):
        raise ConfigError(f"{key}={value!r} is invalid: allowed values are {allowed}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float))


# Config options that come from a Hydra plugin, which the `launchers` extra installs: option → the plugin's module.
PLUGIN_OPTIONS = {
    "hydra/launcher": {"joblib": "hydra_plugins.hydra_joblib_launcher", "submitit_local": "hydra_plugins.hydra_submitit_launcher",
                       "submitit_slurm": "hydra_plugins.hydra_submitit_launcher", "slurm": "hydra_plugins.hydra_submitit_launcher"},
    "hydra/sweeper": {"optuna": "hydra_plugins.hydra_optuna_sweeper"},
    "hparams_search": {"optuna": "hydra_plugins.hydra_optuna_sweeper"},
}


def missing_plugin(arguments: list[str]) -> str | None:
    """The message for a command-line choice whose Hydra plugin is not installed (Hydra's own error would list the
    options it has, not how to get the one asked for); None when every plugin asked for is there."""
    import importlib.util

    for argument in arguments:
        group, _, option = argument.lstrip("+~").partition("=")
        module = PLUGIN_OPTIONS.get(group, {}).get(option)
        if module and importlib.util.find_spec(module) is None:
            return f"{group}={option} needs the {module.split('.')[-1].replace('_', '-')} plugin, not installed: pip install 'purld[launchers]'"
    return None


def group_choice(group: str) -> str | None:
    if HydraConfig.initialized():
        return HydraConfig.get().runtime.choices.get(group)
    return None


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError on the first invalid value. Loads nothing."""
    missing = [
        f"{group}.{key}"
        for group in ("task", "teacher", "student", "rollout", "ranker", "loss")
        if isinstance(node := cfg.get(group), DictConfig)
        for key in node
        if OmegaConf.is_missing(node, key)  # `???` in the YAML; does not resolve ${hydra:…}
    ]
    if missing:
        raise ConfigError(f"{missing[0]} is required: set it on the command line, e.g. {missing[0]}=<value>")
    _require(cfg, "num_threads", lambda v: _is_int(v) and v >= 1, "integers ≥ 1, or null (torch's default)")
    if not isinstance(release := _get(cfg, "release_freed_memory"), bool):
        raise ConfigError(f"release_freed_memory={release!r} is invalid: allowed values are true, false")
    _require(cfg, "rollout.num_candidates", lambda v: _is_int(v) and v >= 2, "integers ≥ 2 (K)")
    _require(cfg, "rollout.max_new_tokens", lambda v: _is_int(v) and v >= 1, "integers ≥ 1")
    _require(cfg, "rollout.temperature", lambda v: _is_number(v) and v > 0, "numbers > 0")
    _require(cfg, "loss.beta", lambda v: _is_number(v) and v >= 0, "numbers ≥ 0 (β)")
    _require(cfg, "loss.epsilon", lambda v: _is_number(v) and 0 < v < 1, "numbers in (0, 1)")
    _require(cfg, "loss.epsilon_high", lambda v: _is_number(v) and v > 0, "numbers > 0, or null")
    _require(cfg, "loss.label_smoothing", lambda v: _is_number(v) and 0 <= v < 0.5, "numbers in [0, 0.5)")
    _require(cfg, "loss.preferences.temperature", lambda v: _is_number(v) and v > 0, "numbers > 0 (τ)")
    _require(cfg, "loss.preferences.margin", lambda v: _is_number(v) and v >= 0, "numbers ≥ 0 (δ)")
    _require(cfg, "loss.preferences.min_margin", lambda v: _is_number(v) and v >= 0, "numbers ≥ 0")
    _require(cfg, "data.batch_size", lambda v: _is_int(v) and v >= 1, "integers ≥ 1")
    _require(cfg, "data.micro_batch_size", lambda v: _is_int(v) and v >= 1, "integers ≥ 1, or null (the whole batch)")
    _require(cfg, "warmstart.sft_steps", lambda v: _is_int(v) and v >= 0, "integers ≥ 0 (0 disables the warm start)")
    _require(cfg, "warmstart.batch_size", lambda v: _is_int(v) and v >= 1, "integers ≥ 1")
    _require(cfg, "trainer.max_steps", lambda v: _is_int(v) and v >= 0, "integers ≥ 0")
    _require(cfg, "eval.num_prompts", lambda v: _is_int(v) and v >= 1, "integers ≥ 1")
    _require(cfg, "eval.every_n_steps", lambda v: _is_int(v) and v >= 0, "integers ≥ 0")
    if not isinstance(keep := _get(cfg, "checkpointing.keep_when_done"), (bool, type(None))):
        raise ConfigError(f"checkpointing.keep_when_done={keep!r} is invalid: allowed values are true, false")
    _require(cfg, "checkpointing.every_n_steps", lambda v: _is_int(v) and v >= 0, "integers ≥ 0 (0: only at the end of each stage)")
    _require(cfg, "samples.every_n_steps", lambda v: _is_int(v) and v >= 0, "integers ≥ 0 (0 disables the samples table)")
    _require(cfg, "samples.num_prompts", lambda v: _is_int(v) and v >= 1, "integers ≥ 1")
    _require(cfg, "optimizer.lr", lambda v: _is_number(v) and v > 0, "numbers > 0")
    _require(cfg, "warmstart.optimizer.lr", lambda v: _is_number(v) and v > 0, "numbers > 0")
    precision, clip = str(_get(cfg, "trainer.precision")), _get(cfg, "trainer.gradient_clip_val")
    for key in ("optimizer", "warmstart.optimizer"):
        if precision in ("16-mixed", "16") and clip and _get(cfg, f"{key}.fused"):
            raise ConfigError(
                f"trainer.precision={precision} with {key}.fused=true and trainer.gradient_clip_val={clip}: fp16's loss "
                f"scaler cannot unscale the gradients before clipping when the optimizer is fused; set {key}.fused=false "
                "or trainer.precision=bf16-mixed"
            )
    if _get(cfg, "loss.loss_type") == "ipo" and _get(cfg, "loss.beta") == 0:
        raise ConfigError("loss.beta=0 is invalid with loss.loss_type=ipo: allowed values are numbers > 0")

    for key in ("task.path", "task.heldout_path", "checkpoint"):
        path = _get(cfg, key)
        if path is not None and not Path(str(path)).expanduser().exists():
            raise ConfigError(f"{key}={path!r}: no such file or directory")

    for key in ("student.gguf_file", "student.gguf_cache_dir", "student.tokenizer_name_or_path"):
        _get(cfg, key)  # resolved now, so that an unresolvable value is named before anything loads
    model_path = _get(cfg, "student.model_name_or_path")
    if isinstance(model_path, str) and model_path.startswith(("/", "./", "../", "~")) and not Path(model_path).expanduser().exists():
        raise ConfigError(f"student.model_name_or_path={model_path!r}: no such directory")

    ranker_target = str(_get(cfg, "ranker._target_") or "")
    is_sft = str(_get(cfg, "loss._target_") or "").endswith("SFTObjective")
    if ranker_target.endswith("OracleRanker") and not _get(cfg, "ranker.baseline") and not is_sft:
        raise ConfigError(
            "ranker=oracle uses ground truth and is refused as a PU-RLD training signal; "
            "set ranker.baseline=true to run it as an upper-bound baseline"
        )

    # purld-signal's keys, last: some interpolate the keys above (data.batch_size, loss.preferences.temperature)
    _require(cfg, "signal.num_prompts", lambda v: _is_int(v) and v >= 1, "integers ≥ 1")
    _require(cfg, "signal.batch_size", lambda v: _is_int(v) and v >= 1, "integers ≥ 1")
    _require(cfg, "signal.bootstrap_resamples", lambda v: _is_int(v) and v >= 1, "integers ≥ 1")
    _require(cfg, "signal.confidence", lambda v: _is_number(v) and 0 < v < 1, "numbers in (0, 1)")
    _require(cfg, "signal.temperature", lambda v: _is_number(v) and v > 0, "numbers > 0")
    check_launch(cfg)
    if str(_get(cfg, "rollout._target_") or "").endswith("VLLMSampler"):
        import importlib.util

        from purld.rollout.vllm_engine import EXTRA

        if importlib.util.find_spec("vllm") is None:
            raise ConfigError(f"rollout=vllm needs vLLM, not installed: {EXTRA}")


PRESET_STUDENTS = {"quickstart": ("tiny", "TinyLlamaStudent"), "vlm_quickstart": ("tiny_vlm", "TinyVLMStudent")}


def check_quickstart_student(cfg: DictConfig) -> None:
    """`purld-train`: the random-init presets (`experiment=quickstart`, the default, and `experiment=vlm_quickstart`)
    are calibrated for their tiny students (their warm starts' learning rates): refuse to warm-start any other student with
    them rather than silently. (A run that turns the warm start off, as scripts/evidence.py's rows over a saved tiny
    student do, keeps the preset.)"""
    preset = group_choice("experiment")
    if preset not in PRESET_STUDENTS or str(_get(cfg, "student._target_") or "").endswith(PRESET_STUDENTS[preset][1]):
        return
    if not _get(cfg, "warmstart.sft_steps"):
        return
    default = " (the default)" if preset == "quickstart" else ""
    raise ConfigError(
        f"experiment={preset}{default} is calibrated for student={PRESET_STUDENTS[preset][0]} (a "
        f"{_get(cfg, 'warmstart.sft_steps')}-step warm start at lr {_get(cfg, 'warmstart.optimizer.lr')}), not for "
        f"student={group_choice('student')}: choose a preset for that student (experiment=smollm2, experiment=smollm2_lora) "
        "or add ~experiment (no preset) to start from conf/config.yaml's defaults (no warm start) and set your own"
    )


def check_launch(cfg: DictConfig) -> None:
    """Refuse a multi-process strategy under `-m` unless SLURM creates the processes.

    Lightning starts DDP/FSDP ranks by re-running the command line; inside a Hydra
    sweep that re-runs the whole sweep (the ranks would train different jobs).
    """
    strategy = _get(cfg, "trainer.strategy")
    name = str(strategy.get("_target_", "") if isinstance(strategy, DictConfig) else strategy or "")
    is_fsdp = "fsdp" in name.lower()
    if is_fsdp and _get(cfg, "trainer.accelerator") == "cpu":
        raise ConfigError("trainer=fsdp needs GPUs (Lightning's FSDP strategy refuses the CPU); on CPU use trainer=ddp")
    if is_fsdp and _get(cfg, "data.micro_batch_size") is not None:
        raise ConfigError(
            "data.micro_batch_size is not supported with trainer=fsdp (FSDP reduces gradients in its own backward "
            "hooks); set data.micro_batch_size=null, or save memory with student.gradient_checkpointing=true"
        )
    if is_fsdp and str(_get(cfg, "rollout._target_") or "").endswith("StaticDecoderSampler"):
        raise ConfigError(
            "rollout=static is not supported with trainer=fsdp (its decoder calls the layers' modules directly, "
            "which FSDP keeps sharded outside its own forward); use rollout=default"
        )
    devices = _get(cfg, "trainer.devices")
    several = name not in ("", "auto", "single_device") or (isinstance(devices, int) and devices > 1)
    if several and str(_get(cfg, "rollout._target_") or "").endswith("VLLMSampler"):
        raise ConfigError(
            f"rollout=vllm runs one vLLM engine in one training process, not with trainer.strategy={name or 'auto'} "
            f"trainer.devices={devices}; use rollout=default or rollout=static with several processes"
        )
    if name in ("", "auto", "single_device") or not HydraConfig.initialized():
        return
    from hydra.types import RunMode

    hydra = HydraConfig.get()
    if hydra.mode == RunMode.MULTIRUN and "Slurm" not in str(OmegaConf.select(hydra, "launcher._target_") or ""):
        raise ConfigError(
            f"trainer.strategy={name} starts one process per device by re-running the command, which a -m sweep "
            "cannot do; sweep with hydra/launcher=slurm (one SLURM job per run), or run the jobs one by one without -m"
        )


def reported_errors(run: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Turn the failures a user acts on into one line on stderr and an exit status, no traceback.

    ConfigError → status 2 (nothing was loaded). TeacherError → status 1; every
    answer received before it is already committed to the anchor cache.
    """

    @functools.wraps(run)
    def wrapper(cfg: DictConfig) -> Any:
        try:
            return run(cfg)
        except ConfigError as error:
            print(f"purld: invalid config: {error}", file=sys.stderr)
            sys.exit(2)
        except Exception as error:
            from purld.ranking.llm_judge import JudgeError  # these import torch: only once something failed
            from purld.teachers.base import TeacherError

            if not isinstance(error, TeacherError):
                raise
            if isinstance(error, JudgeError):  # its message says where its verdicts are kept
                print(f"purld: {error}", file=sys.stderr)
                sys.exit(1)
            print(
                f"purld: {error}. Every answer received before it is kept in {cfg.anchors.cache_path}; "
                "rerun to continue (cached prompts are not asked again), or set teacher.on_error=skip",
                file=sys.stderr,
            )
            sys.exit(1)

    return wrapper
