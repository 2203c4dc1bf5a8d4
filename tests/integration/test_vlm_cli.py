"""Vision-language students through purld-train: each loss on the tiny VLM, and the refusals."""

from __future__ import annotations

import json

import pytest

from tests.integration.test_cli import run

TINY_VLM = [
    "experiment=vlm_quickstart", "student.hidden_size=32", "student.num_hidden_layers=2", "student.num_attention_heads=2",
    "student.intermediate_size=64", "student.vision_hidden_size=32", "student.vision_layers=1", "student.vision_heads=2",
    "task.num_train=32", "task.num_heldout=8", "eval.num_prompts=8", "warmstart.sft_steps=2", "warmstart.batch_size=4",
    "trainer.max_steps=2", "data.batch_size=4", "rollout.num_candidates=4", "rollout.max_new_tokens=16", "logger=csv",
]


@pytest.mark.parametrize(("loss", "ranker"), [("grpo", "self_judge"), ("dpo", "likelihood"), ("ldl", "lexical"), ("sft", "lexical")])
def test_each_loss_trains_the_tiny_vlm(tmp_path, loss, ranker):
    run_dir = tmp_path / "run"
    run("train", *TINY_VLM, f"loss={loss}", f"ranker={ranker}", f"anchors.cache_path={tmp_path / 'a.sqlite'}", f"hydra.run.dir={run_dir}")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["global_step"] == 2 and summary["choices"]["student"] == "tiny_vlm"
    assert set(summary["eval"]["after"]) >= {"accuracy", "win_rate"}
    after = summary["eval"]["after"]  # each kind of question's accuracy; together they pool to the accuracy
    kinds = [name for name in after if name.startswith("accuracy/")]
    assert kinds and set(kinds) <= {"accuracy/count", "accuracy/colour"}
    assert min(after[k] for k in kinds) <= after["accuracy"] <= max(after[k] for k in kinds)
    saved = run_dir / "student"
    assert json.loads((saved / "config.json").read_text())["model_type"] == "llava"
    assert (saved / "processor_config.json").exists()
    if loss == "grpo":  # the saved student evaluates again through student=hf, processor and all
        evaluated = tmp_path / "eval"
        run("eval", *TINY_VLM, f"checkpoint={run_dir}", f"anchors.cache_path={tmp_path / 'a.sqlite'}", f"hydra.run.dir={evaluated}")
        assert json.loads((evaluated / "eval.json").read_text())["eval"]["accuracy"] == pytest.approx(summary["eval"]["after"]["accuracy"])


TINY_QWEN_VL = [
    "~experiment", "task=shapes", "teacher=reference", "student=tiny_qwen_vl", "student.hidden_size=32", "student.num_hidden_layers=2",
    "student.num_attention_heads=2", "student.intermediate_size=64", "student.vision_hidden_size=32", "student.vision_layers=1",
    "student.vision_heads=2", *(o for o in TINY_VLM if not o.startswith(("experiment=", "student."))),
]


@pytest.mark.parametrize(("loss", "ranker"), [("grpo", "self_judge"), ("dpo", "likelihood")])
def test_a_multimodal_rope_student_trains_through_every_stage(tmp_path, loss, ranker):
    """Qwen2.5-VL's architecture (multimodal RoPE) at toy sizes: rollout, a self-ranker that reads the picture again,
    the policy and reference forwards, evaluation."""
    run_dir = tmp_path / "run"
    run("train", *TINY_QWEN_VL, f"loss={loss}", f"ranker={ranker}", f"anchors.cache_path={tmp_path / 'a.sqlite'}", f"hydra.run.dir={run_dir}")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["global_step"] == 2 and summary["choices"]["student"] == "tiny_qwen_vl"
    assert set(summary["eval"]["after"]) >= {"accuracy", "win_rate", "accuracy/count"}
    assert json.loads((run_dir / "student" / "config.json").read_text())["model_type"] == "qwen2_5_vl"


def test_a_task_with_images_refuses_a_text_student(tmp_path):
    result = run("train", "~experiment", "task=shapes", "student=tiny", f"anchors.cache_path={tmp_path / 'a.sqlite'}",
                 f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert result.returncode == 2
    assert "task=shapes shows images, and student=tiny reads text only" in result.stderr + result.stdout


def test_the_vlm_preset_refuses_another_student(tmp_path):
    result = run("train", "experiment=vlm_quickstart", "student=tiny", f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert result.returncode == 2
    assert "experiment=vlm_quickstart is calibrated for student=tiny_vlm" in result.stderr + result.stdout
