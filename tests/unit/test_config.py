"""Every option of every group composes, binds to its `_target_`'s signature and (cheaply) instantiates."""

from __future__ import annotations

import importlib.util
import inspect
import platform
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.utils import _locate
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from purld.cli.checks import ConfigError, check_config
from purld.cli.train import CONFIG_DIR

GROUPS = ["task", "teacher", "student", "rollout", "ranker", "loss", "trainer", "logger", "experiment"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


def all_options() -> list[tuple[str, str]]:
    pairs = [(group, option) for group in GROUPS for option in options(group)]
    pairs += [("loss/preferences", option) for option in options("loss/preferences")]
    return pairs


def compose_with(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=False)


def assert_binds(node: DictConfig | dict, where: str) -> None:
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=False)  # ${hydra:…} only resolves inside a run
    target = _locate(node["_target_"])
    kwargs = {k: v for k, v in node.items() if not str(k).startswith("_")}
    signature = inspect.signature(target)
    try:
        signature.bind_partial(**kwargs)
    except TypeError as error:
        pytest.fail(f"{where}: keys {sorted(kwargs)} do not bind to {node['_target_']}{signature}: {error}")
    for key, value in kwargs.items():
        if isinstance(value, dict) and "_target_" in value:
            assert_binds(value, f"{where}.{key}")


@pytest.mark.parametrize(("group", "option"), all_options(), ids=lambda v: str(v))
def test_option_composes_and_binds(group, option):
    extra = ["loss=dpo"] if group == "loss/preferences" and option != "group" else []
    cfg = compose_with(f"{group}={option}", *extra)
    node = cfg.loss.preferences if group == "loss/preferences" else cfg.get(group.split("/")[0])
    if group == "experiment":
        assert cfg.task is not None and cfg.loss is not None
        return
    assert "_target_" in node, f"{group}/{option}.yaml has no _target_"
    assert_binds(node, f"{group}/{option}")


CHEAP_GROUPS = ["task", "teacher", "student", "rollout", "ranker", "loss"]


GSM8K_TEST = Path(__file__).resolve().parents[2] / "purld" / "tasks" / "data" / "gsm8k" / "test.jsonl"
# What an option cannot do without: a declared baseline, a data file.
REQUIRED = {
    ("ranker", "oracle"): ["ranker.baseline=true"],
    ("task", "jsonl"): [f"task.path={GSM8K_TEST}", "task.prompt_field=question", "task.max_examples=20"],
    ("task", "gsm8k"): ["task.num_train=20", "task.num_heldout=5"],
    ("student", "hf"): ["student.model_name_or_path=org/model"],  # instantiating loads nothing
    ("student", "lora"): ["student.model_name_or_path=org/model"],
    ("student", "qlora"): ["student.model_name_or_path=org/model"],
    ("teacher", "hf"): ["teacher.model_name_or_path=org/model"],
}


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in CHEAP_GROUPS for o in options(g)])
def test_cheap_options_instantiate(group, option):
    cfg = compose_with(f"{group}={option}", *REQUIRED.get((group, option), []))
    instantiate(cfg[group])


def test_default_is_the_quickstart():
    cfg = compose_with()
    assert OmegaConf.to_container(cfg.loss)["_target_"].endswith("GRPOObjective")
    assert cfg.student._target_.endswith("TinyLlamaStudent") and cfg.teacher._target_.endswith("ReferenceTeacher")


def test_command_line_group_beats_the_experiment_preset():
    assert compose_with("loss=dpo").loss._target_.endswith("DPOObjective")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("rollout.num_candidates=1", "rollout.num_candidates=1 is invalid: allowed values are integers ≥ 2"),
        ("loss.beta=-0.1", "loss.beta=-0.1 is invalid: allowed values are numbers ≥ 0"),
        ("loss.preferences.temperature=0", "loss.preferences.temperature=0 is invalid: allowed values are numbers > 0"),
        ("rollout.temperature=0", "rollout.temperature=0 is invalid"),
        ("data.batch_size=0", "data.batch_size=0 is invalid"),
        ("data.micro_batch_size=0", "data.micro_batch_size=0 is invalid: allowed values are integers ≥ 1, or null"),
        ("data.micro_batch_size=many", "data.micro_batch_size='many' is invalid"),
        ("trainer=fsdp trainer.accelerator=gpu data.micro_batch_size=16", "data.micro_batch_size is not supported with trainer=fsdp"),
        ("trainer=fsdp trainer.accelerator=gpu rollout=static", "rollout=static is not supported with trainer=fsdp"),
        ("trainer=ddp trainer.accelerator=cpu trainer.devices=2 rollout=vllm", "rollout=vllm runs one vLLM engine in one training process"),
        ("trainer.devices=2 rollout=vllm", "rollout=vllm runs one vLLM engine in one training process, not with trainer.strategy=auto trainer.devices=2"),
        ("warmstart.sft_steps=-5", "warmstart.sft_steps=-5 is invalid"),
        ("num_threads=0", "num_threads=0 is invalid: allowed values are integers ≥ 1, or null"),
        ("release_freed_memory=sometimes", "release_freed_memory='sometimes' is invalid: allowed values are true, false"),
        ("signal.num_prompts=0", "signal.num_prompts=0 is invalid"),
        ("signal.confidence=95", "signal.confidence=95 is invalid: allowed values are numbers in (0, 1)"),
        ("checkpoint=/no/such/run", "checkpoint='/no/such/run': no such file or directory"),
        ("checkpointing.every_n_steps=-1", "checkpointing.every_n_steps=-1 is invalid"),
        ("student=hf", "student.model_name_or_path is required"),
        ("student=hf student.model_name_or_path=/no/such/model", "student.model_name_or_path='/no/such/model': no such directory"),
        ("task=jsonl", "task.path is required"),
        ("task=jsonl task.path=/no/such/file.jsonl", "task.path='/no/such/file.jsonl': no such file or directory"),
        ("ranker=oracle", "ranker=oracle uses ground truth and is refused"),
        ("trainer.precision=16-mixed +optimizer.fused=true", "trainer.precision=16-mixed with optimizer.fused=true and trainer.gradient_clip_val=1.0"),
        ("trainer.precision=16-mixed +warmstart.optimizer.fused=true", "set warmstart.optimizer.fused=false"),
    ],
)
def test_invalid_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as error:
        check_config(compose_with(*override.split()))
    assert message in str(error.value)


def test_fp16_is_allowed_with_unfused_optimizers_or_without_clipping():
    check_config(compose_with("trainer.precision=16-mixed"))
    check_config(compose_with("trainer.precision=16-mixed", "+optimizer.fused=true", "trainer.gradient_clip_val=0"))


def test_oracle_is_allowed_as_a_declared_baseline():
    check_config(compose_with("ranker=oracle", "ranker.baseline=true"))


def test_eval_judge_defaults_to_the_ranker_and_can_be_fixed(tmp_path):
    from purld.cli.components import build_components
    from purld.ranking import LexicalRanker, LikelihoodRanker

    cache = f"anchors.cache_path={tmp_path / 'cache.sqlite'}"
    parts = build_components(compose_with("ranker=likelihood", cache))
    assert parts.judge is parts.ranker
    parts = build_components(compose_with("ranker=likelihood", cache, "eval.judge={_target_:purld.ranking.LexicalRanker}"))
    assert isinstance(parts.ranker, LikelihoodRanker) and isinstance(parts.judge, LexicalRanker)
    with pytest.raises(ConfigError, match="eval.judge"):
        build_components(compose_with(cache, "eval.judge={_target_:purld.ranking.NoSuchRanker}"))


def test_a_resume_refuses_only_the_overrides_that_change_the_run():
    from purld.cli.resume import changes_the_run

    saved = OmegaConf.create({"rollout": {"num_candidates": 3}, "student": {"r": 4}})
    same = OmegaConf.create({"rollout": {"num_candidates": 3}, "student": {"r": 4}})
    other = OmegaConf.create({"rollout": {"num_candidates": 4}, "student": {"r": 4}})
    choices = OmegaConf.create({"loss": "grpo", "experiment": None})
    assert not changes_the_run("rollout.num_candidates=3", same, saved, choices)
    assert changes_the_run("rollout.num_candidates=4", other, saved, choices)
    assert not changes_the_run("loss=grpo", same, saved, choices) and changes_the_run("loss=dpo", same, saved, choices)
    assert not changes_the_run("~experiment", same, saved, choices)
    assert changes_the_run("experiment=smollm2", same, saved, choices)


def test_num_threads_sets_torchs_cpu_threads():
    import torch

    from purld.cli.components import set_threads

    before = torch.get_num_threads()
    try:
        set_threads(1)
        assert torch.get_num_threads() == 1
        set_threads(None)  # torch's default: left as it is
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_verifier_needs_a_task_with_final_answers(tmp_path):
    from purld.cli.components import build_components

    cache = f"anchors.cache_path={tmp_path / 'cache.sqlite'}"
    with pytest.raises(ConfigError, match="ranker=verifier needs a task that extracts final answers; task 'constraints' does not"):
        build_components(compose_with("task=constraints", "ranker=verifier", cache))
    assert build_components(compose_with("task=word_problems", "ranker=verifier", cache)).task.extracts_answers


def test_the_embedding_ranker_without_its_extra_says_how_to_install_it(monkeypatch):
    import sys

    from purld.cli.components import build_group

    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # what find_spec reports for a missing package
    with pytest.raises(ConfigError, match=r"^ranker: ranker=embedding needs sentence-transformers, "
                                          r"not installed: pip install 'purld\[embedding\]'"):
        build_group(compose_with("ranker=embedding"), "ranker")


def test_a_launcher_without_its_plugin_stops_before_hydra_with_the_install_command(monkeypatch, capsys):
    import sys

    from purld.cli import train

    monkeypatch.setitem(sys.modules, "hydra_plugins.hydra_submitit_launcher", None)
    monkeypatch.setattr(sys, "argv", ["purld-train", "-m", "hydra/launcher=slurm", "seed=0,1"])
    monkeypatch.setattr(train, "hydra_main", lambda: pytest.fail("Hydra ran"))
    with pytest.raises(SystemExit) as stopped:
        train.main()
    assert stopped.value.code == 2
    assert capsys.readouterr().err == ("purld: invalid config: hydra/launcher=slurm needs the hydra-submitit-launcher plugin, "
                                       "not installed: pip install 'purld[launchers]'\n")
    monkeypatch.setattr(sys, "argv", ["purld-train", "hparams_search=optuna"])
    monkeypatch.setitem(sys.modules, "hydra_plugins.hydra_optuna_sweeper", None)
    with pytest.raises(SystemExit):
        train.main()
    assert "hparams_search=optuna needs the hydra-optuna-sweeper plugin" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_rollout_without_vllm_says_what_to_install():
    with pytest.raises(ConfigError) as error:
        check_config(compose_with("rollout=vllm"))
    assert "rollout=vllm needs vLLM, not installed: pip install 'purld[vllm]'" in str(error.value)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_release_freed_memory_sets_glibcs_trim_threshold():
    from purld.memory import release_freed_memory

    assert release_freed_memory(True)  # mallopt accepted it
    assert not release_freed_memory(False)
