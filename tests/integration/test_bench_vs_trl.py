"""Smoke test of the TRL comparison harness: every worker runs once (tiny model, 1 step, in one
process) and the JSON holds the figures README quotes. It checks the harness, not the numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl", reason="the [bench] extra (TRL) is not installed")

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_vs_trl.py"
sys.path.insert(0, str(SCRIPT.parent))

import bench_vs_trl as harness  # noqa: E402


@pytest.mark.slow  # the benchmark harness end to end (42 s); CI runs it
def test_harness_quick_run_writes_every_figure(tmp_path):
    out = tmp_path / "vs_trl.json"
    result = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    for name in ("grpo_step_ratio", "dpo_step_ratio", "grpo_rss_ratio", "dpo_rss_ratio",
                 "grpo_step_vs_floor", "dpo_step_vs_floor", "rollout_vs_generate_floor",
                 "grpo_rss_ratio_without_lean_activations", "dpo_rss_ratio_without_lean_activations",
                 "grpo_rss_ratio_checkpointing", "dpo_rss_ratio_checkpointing", "grpo_step_ratio_static_decoder",
                 "rollout_vs_generate_floor_static_decoder", "grpo_update_vs_matmul_rate", "grpo_update_floor_vs_matmul_rate",
                 "trl_grpo_update_vs_matmul_rate"):
        assert report[name] > 0, name
    assert 0.5 < report["grpo_work_ratio"] < 0.8  # 8-token prompts: purld does about 0.69 of TRL's model FLOPs
    kinds = {row["kind"] for row in report["rows"]}
    assert kinds == {"purld_grpo", "trl_grpo", "generate_floor", "grpo_update_floor", "purld_dpo", "trl_dpo", "dpo_update_floor", "matmul_rate"}
    assert all(row["precision"] == "fp32" for row in report["rows"])
    assert report["figures"]["tiny_ranking_fraction_self_judge"] > 0
    assert "grpo_step_ratio" in result.stdout  # the printed table


def test_gsm8k_prompts_fit_the_model_and_feed_every_side():
    _, tokenizer = harness.build_model("tiny")
    limit = harness.MAX_POSITIONS - 32
    examples = harness.harness_task("gsm8k", 8, tokenizer, limit).examples("train")
    lengths = [len(tokenizer(e.prompt, add_special_tokens=False)["input_ids"]) for e in examples]
    assert len(examples) == 8 and max(lengths) <= limit and min(lengths) > 100  # long prompts, each one fits
    assert all(e.prompt.startswith("Question: ") and e.reference for e in examples)
    items = harness.harness_items("gsm8k", 8, tokenizer, limit)  # TRL's dataset and the floors: the same prompts
    assert [prompt for prompt, _ in items] == [e.prompt for e in examples]
    dpo = harness.dpo_texts(8, 32, "gsm8k", tokenizer)  # DPO's prompts fit beside a 32-token answer
    assert [row["prompt"] for row in dpo] == [e.prompt for e in examples]
    assert harness.dpo_texts(8, 32)[0]["prompt"] != examples[0].prompt  # the default: random strings, as before
    kinds = [spec["kind"] for spec in harness.row_specs(["tiny"], [4, 8, 16], "cpu", with_trl=True, prompts="gsm8k")]
    assert sorted(set(kinds)) == sorted(harness.WORKERS) and len(kinds) == 11  # comparison rows, no scaling rows
    gpu_rows = harness.row_specs(["qwen05b"], [8], "gpu", with_trl=True)
    assert gpu_rows[0] == {"kind": "purld_grpo", "size": "qwen05b", "K": 8, "decoder": "static"} and len(gpu_rows) == 9
    assert {spec["kind"] for spec in gpu_rows[:5]} == {"purld_grpo", "generate_floor", "trl_grpo", "purld_dpo", "trl_dpo"}
    with pytest.raises(ValueError, match="--prompts 'squad'"):
        harness.harness_task("squad", 8, tokenizer, limit)


def test_step_work_counts_the_tokens_each_side_reads():
    # N = 1, B = 1 prompt of L = 3 tokens, K = 2 completions of T = 2 tokens.
    # purld: rollout 2·(1·2 + 1·2·2) = 12; reference and update 8·(3 + 4) = 56.
    assert harness.grpo_step_work(1, 1, 2, 3, 2, side="purld") == 68
    # TRL: generate 2·2·(3 + 2 − 1) = 16; reference, update and the checkpointed forward again 10·2·5 = 100.
    assert harness.grpo_step_work(1, 1, 2, 3, 2, side="trl") == 116
    with pytest.raises(ValueError, match="'vllm'"):
        harness.grpo_step_work(1, 1, 2, 3, 2, side="vllm")


def test_matmul_rate_counts_six_flops_per_weight_and_row():
    result = harness.matmul_rate("tiny", threads=1, precision="fp32", K=1, new_tokens=4, steps=1, warmup=0)
    H, I = harness.SIZES["tiny"]["hidden_size"], harness.SIZES["tiny"]["intermediate_size"]
    layer_parameters = 4 * H * H + 3 * H * I  # q, k, v, o, gate, up, down
    assert result["matmul_rows"] == harness.NUM_PROMPTS * 4
    assert result["matmul_flops_per_s"] * result["matmul_s"] == pytest.approx(6 * layer_parameters * result["matmul_rows"])


def test_merged_rows_keep_the_counts_and_flags_of_every_round():
    spec = {"kind": "purld_grpo", "size": "qwen05b", "K": 8, "decoder": "static"}
    rounds = [
        {"step_s": 1.0, "prompt_tokens": 8, "cuda_graph": True, "attempts": 1, "under_outside_load": False},
        {"step_s": 3.0, "prompt_tokens": 8, "cuda_graph": False, "attempts": 2, "under_outside_load": True},
    ]
    (row,) = harness.merged_rows([spec], {0: rounds}, "bf16")
    assert row["step_s"] == 2.0 and row["rounds"] == [1.0, 3.0] and row["prompt_tokens"] == 8
    assert row["cuda_graph"] is False  # a round that decoded eagerly is not hidden by one that replayed a graph
    assert row["attempts"] == 3 and row["under_outside_load"] is True


def test_a_time_budget_stops_the_running_row_and_records_the_rest_as_not_run(tmp_path):
    out = tmp_path / "gpu.json"
    command = [sys.executable, str(SCRIPT), "--rows", "gpu", "--sizes", "qwen_test", "--steps", "1", "--warmup", "1",
               "--rounds", "1", "--time-budget", "0.5", "--out", str(out)]  # the first worker's imports alone take longer
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["rows"] == [] and len(report["failed_rows"]) == 9
    first, *rest = report["failed_rows"]
    assert first["kind"] == "purld_grpo" and first["error"].startswith("stopped by the --time-budget")
    assert all(row["error"] == "not run: the --time-budget was spent" for row in rest)
    assert "not run" in result.stdout  # the printed table says so


def test_the_real_student_rows_compare_full_and_lora_at_purlds_defaults():
    specs = harness.row_specs(["smollm2"], [8], "cpu", with_trl=True)
    kinds = [(s["kind"], s.get("lora", False), s.get("checkpointing"), s.get("ranker")) for s in specs]
    for kind in ("purld_grpo", "trl_grpo", "purld_dpo", "trl_dpo"):
        assert (kind, False, None, None) in kinds and (kind, True, None, None) in kinds  # full and LoRA, both sides
    assert ("purld_grpo", False, "none", None) in kinds  # before: without checkpointing
    assert {s["ranker"] for s in specs if "ranker" in s} == {"self_judge", "likelihood"}
    # purld's default for a pretrained student is conf/student/hf.yaml's: checkpointed; `none` turns it off
    assert harness.purld_checkpointing("smollm2", None) == "full"
    assert harness.purld_checkpointing("smollm2", "none") is None
    assert harness.purld_checkpointing("tiny", None) is None


def test_lora_rows_are_read_against_trls_lora_rows():
    def row(kind, step, rss, **variant):
        return {"kind": kind, "size": "smollm2", "K": 8, "step_s": step, "peak_rss_mb": rss, **variant}

    rows = [row("purld_grpo", 2.0, 10.0), row("trl_grpo", 4.0, 20.0), row("purld_grpo", 1.0, 5.0, lora=True),
            row("trl_grpo", 5.0, 4.0, lora=True), row("purld_dpo", 1.0, 1.0), row("trl_dpo", 2.0, 1.0)]
    figures = harness.compute_figures(rows, ["smollm2"], [8], None)
    assert figures["smollm2_grpo_step_ratio"] == 0.5 and figures["smollm2_lora_grpo_step_ratio"] == 0.2
    assert figures["smollm2_lora_grpo_rss_ratio"] == 1.25 and "smollm2_lora_dpo_step_ratio" not in figures
