"""Train Hugging Face students from a local directory through purld-train, as a user with a checkpoint does."""

from __future__ import annotations

import json

import pytest
import torch

from tests.integration.test_cli import SMALL_RUN, run
from tests.unit.test_hf_students import save_tiny

ARITHMETIC = ["task.num_train=64", "task.num_heldout=16"]
FROM_PATH = ["~experiment", *(o for o in SMALL_RUN if not o.startswith("student."))]  # the quickstart is for student=tiny


@pytest.mark.parametrize(("architecture", "loss", "rollout"), [("llama", "grpo", "default"), ("qwen2", "dpo", "static"), ("gpt2", "ldl", "default")])
def test_train_by_path(architecture, loss, rollout, tmp_path):
    directory = save_tiny(tmp_path / architecture, architecture)
    run_dir = tmp_path / "run"
    run(
        "train", "student=hf", f"student.model_name_or_path={directory}", f"loss={loss}", f"rollout={rollout}", *FROM_PATH,
        *ARITHMETIC, f"anchors.cache_path={tmp_path / 'a.sqlite'}", f"hydra.run.dir={run_dir}",
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["global_step"] == 2 and summary["choices"]["student"] == "hf" and summary["choices"]["rollout"] == rollout
    assert summary["reference"] == "copy" and summary["reference_copy_mb"] > 0
    config = json.loads((run_dir / "student" / "config.json").read_text())
    assert config["model_type"] == architecture


def test_lora_trains_without_a_reference_copy_and_saves_a_plain_model(tmp_path):
    directory = save_tiny(tmp_path / "llama", "llama")
    run_dir = tmp_path / "run"
    run(
        "train", "student=lora", f"student.model_name_or_path={directory}", "student.r=4", *FROM_PATH, *ARITHMETIC,
        f"anchors.cache_path={tmp_path / 'a.sqlite'}", f"hydra.run.dir={run_dir}",
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["reference"] == "adapters disabled" and summary["global_step"] == 2
    assert summary["reference_copy_mb"] == 0.0 and summary["reference_copy_saved_mb"] > 0
    hparams = (run_dir / "logs" / "purld" / "hparams.yaml").read_text()
    trainable = int(hparams.split("parameters/trainable: ")[1].split()[0])
    total = int(hparams.split("parameters/total: ")[1].split()[0])
    assert trainable < total / 2
    # Checkpoints hold the adapters only; a resume rebuilds the frozen base (with the warm start merged in).
    for stage in ("warmstart", "purld"):
        state = torch.load(run_dir / "checkpoints" / stage / "last.ckpt", weights_only=False)["state_dict"]
        assert state and all("lora_" in name for name in state)
    run("train", f"resume={run_dir}", "trainer.max_steps=3")
    assert json.loads((run_dir / "summary.json").read_text())["global_step"] == 3
    summary = json.loads((run_dir / "summary.json").read_text())
    evaluated = tmp_path / "eval"
    run("eval", *FROM_PATH, *ARITHMETIC, f"checkpoint={run_dir}", f"anchors.cache_path={tmp_path / 'a.sqlite'}", f"hydra.run.dir={evaluated}")
    assert json.loads((evaluated / "eval.json").read_text())["eval"]["accuracy"] == pytest.approx(summary["eval"]["after"]["accuracy"])


def test_a_student_the_static_decoder_cannot_run_is_refused_before_the_anchors(tmp_path):
    directory = save_tiny(tmp_path / "gpt2", "gpt2")
    cache = tmp_path / "a.sqlite"
    result = run("train", "student=hf", f"student.model_name_or_path={directory}", "rollout=static", *FROM_PATH, *ARITHMETIC,
                 f"anchors.cache_path={cache}", f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "rollout=static: the student's model_type 'gpt2' is not one this decoder runs" in result.stderr
    assert not cache.exists()  # no teacher was asked


def test_a_model_directory_that_does_not_load_is_named(tmp_path):  # a missing path: tests/unit/test_config.py
    (tmp_path / "empty").mkdir()
    result = run("train", "~experiment", "student=hf", f"student.model_name_or_path={tmp_path / 'empty'}", check=False)
    assert result.returncode == 2 and "student: could not load" in result.stderr and "Traceback" not in result.stderr


def test_qlora_trains_on_cpu(tmp_path, monkeypatch):
    """bitsandbytes 4-bit + LoRA runs on CPU (its blocks need ≥ 64 input features, hence the wider model)."""
    import tests.unit.test_hf_students as students

    monkeypatch.setitem(students.SMALL, "hidden_size", 64)
    monkeypatch.setitem(students.SMALL, "intermediate_size", 128)
    directory = save_tiny(tmp_path / "llama", "llama")
    run_dir = tmp_path / "run"
    run(
        "train", "student=qlora", f"student.model_name_or_path={directory}", "student.r=4", "student.compute_dtype=float32",
        *FROM_PATH, *ARITHMETIC, f"anchors.cache_path={tmp_path / 'a.sqlite'}", f"hydra.run.dir={run_dir}",
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["reference"] == "adapters disabled" and summary["global_step"] == 2
    assert (run_dir / "student" / "adapter_config.json").exists()
    evaluated = tmp_path / "eval"  # the adapters load onto their base for evaluation
    run("eval", *FROM_PATH, *ARITHMETIC, f"checkpoint={run_dir}", f"anchors.cache_path={tmp_path / 'a.sqlite'}", f"hydra.run.dir={evaluated}")
    assert "accuracy" in json.loads((evaluated / "eval.json").read_text())["eval"]


def test_the_quickstart_does_not_silently_warm_start_another_student(tmp_path):
    """experiment=quickstart (the default) is a random-init model's: 500 SFT steps at lr 3e-3."""
    directory = save_tiny(tmp_path / "llama", "llama")
    result = run("train", "student=hf", f"student.model_name_or_path={directory}", f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "experiment=quickstart (the default) is calibrated for student=tiny (a 500-step warm start at lr 0.003)" in result.stderr
    assert "experiment=smollm2" in result.stderr and "~experiment" in result.stderr
