"""The three entry points, run as a user runs them (subprocesses, Hydra's real main)."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# A run of a few seconds: a smaller student and task, a short warm start, 2 PU-RLD steps.
SMALL_RUN = [
    "student.hidden_size=32",
    "student.num_hidden_layers=2",
    "student.num_attention_heads=2",
    "student.intermediate_size=64",
    "eval.num_prompts=8",
    "warmstart.sft_steps=2",
    "trainer.max_steps=2",
    "data.batch_size=4",
    "rollout.num_candidates=3",
    "rollout.max_new_tokens=12",
    "logger=csv",  # W&B has its own test (test_workflow.py)
]
SMALL = [*SMALL_RUN, "task.num_train=64", "task.num_heldout=16"]


# Runs start here, so that default paths (outputs/…) never land in the checkout.
WORKDIR = tempfile.mkdtemp(prefix="purld-cli-")


def run(entry: str, *overrides: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**(os.environ if env is None else env), "HF_HUB_OFFLINE": "1", "HYDRA_FULL_ERROR": "0"}
    command = [sys.executable, "-m", f"purld.cli.{entry}", *overrides]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=WORKDIR)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def cache(tmp_path) -> str:
    return f"anchors.cache_path={tmp_path / 'anchors.sqlite'}"


@pytest.mark.parametrize("loss", ["grpo", "dpo", "ldl", "sft"])
def test_two_steps_of_each_loss(loss, tmp_path, cache):
    run_dir = tmp_path / "run"
    result = run("train", f"loss={loss}", *SMALL, cache, f"hydra.run.dir={run_dir}")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["global_step"] == 2
    assert summary["choices"]["loss"] == loss
    assert set(summary["eval"]["before"]) >= {"accuracy", "oracle_score", "win_rate", "length"}
    assert summary["teacher_calls"] == 0 and summary["reference_answers"] == 64 + 8 and summary["cache_hits"] == 0
    assert "teacher calls 0 · anchors from the task's references 72" in result.stdout
    assert {"warmstart", "purld", "eval_before", "eval_after", "total"} <= set(summary["seconds"])
    assert (run_dir / "student" / "config.json").exists()
    assert "after PU-RLD" in result.stdout
    metrics = (run_dir / "logs" / "purld" / "metrics.csv").read_text().splitlines()[0]
    assert "train/loss" in metrics
    hparams = (run_dir / "logs" / "purld" / "hparams.yaml").read_text()
    assert f"choice/loss: {loss}" in hparams and "parameters/trainable" in hparams
    if loss != "sft":
        # rank/kendall_tau is absent while every oracle score ties (an untrained student): tested in unit tests
        for name in ("time/rollout", "time/ranking", "time/update", "rank/top1_oracle_accuracy", "rollout/len_mean"):
            assert name in metrics, name
    if loss == "grpo":
        assert "train/kl" in metrics and "rank/q_mass_on_correct" in metrics and "train/clip_ratio/region_mean" in metrics
    if loss == "dpo":  # a step with pairs computed the DPO loss on them (train/* are logged, NaN, on steps without)
        rows = list(csv.DictReader((run_dir / "logs" / "purld" / "metrics.csv").open()))
        trained = [row for row in rows if row.get("pref/num_pairs") and float(row["pref/num_pairs"]) > 0]
        assert trained and all(math.isfinite(float(row["train/rewards/margins"])) for row in trained)
        assert all(math.isfinite(float(row["train/loss"])) for row in trained)


def test_bf16_mixed_clips_with_the_fused_optimizer_and_checkpoints_selectively(tmp_path, cache):
    """trainer=gpu's precision on the CPU: bf16-mixed, gradient clipping and a fused AdamW, a pair that Lightning
    refuses by itself (it has no scaler to unscale for in bf16); selective checkpointing on; the reference (its
    Linear weights in bf16 under bf16-mixed) read by the KL term and by the judge; purld's own decoder
    (`rollout=static`) under Lightning's autocast."""
    run_dir = tmp_path / "run"
    run("train", "rollout=static", *SMALL, cache, "trainer.precision=bf16-mixed", "+optimizer.fused=true", "+warmstart.optimizer.fused=true",
        "student.gradient_checkpointing=selective", "ranker=likelihood", "ranker.judge_model=reference", f"hydra.run.dir={run_dir}")
    assert json.loads((run_dir / "summary.json").read_text())["global_step"] == 2


def test_a_frozen_judge_gets_a_reference_copy_even_without_kl(tmp_path, cache):
    """ranker.judge_model=reference: the likelihood ranker reads the frozen warm start, so a reference exists at β = 0."""
    run_dir = tmp_path / "run"
    run("train", "ranker=likelihood", "ranker.judge_model=reference", "loss.beta=0.0", *SMALL, cache, f"hydra.run.dir={run_dir}")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["reference"] == "copy" and summary["global_step"] == 2


def test_second_run_makes_zero_teacher_calls_and_eval_reads_the_run(tmp_path, cache):
    first, second = tmp_path / "first", tmp_path / "second"
    run("anchors", *SMALL, cache, f"hydra.run.dir={first}")
    assert json.loads((first / "anchors.json").read_text())["reference_answers"] == 72
    run("train", *SMALL, cache, "loss.beta=0", "eval.every_n_steps=1", f"hydra.run.dir={second}")
    summary = json.loads((second / "summary.json").read_text())
    assert (summary["teacher_calls"], summary["cache_hits"]) == (0, 72)
    assert "eval/accuracy" in (second / "logs" / "purld" / "metrics.csv").read_text()

    evaluated = tmp_path / "eval"
    run("eval", *SMALL, cache, f"checkpoint={second}", f"hydra.run.dir={evaluated}")
    metrics = json.loads((evaluated / "eval.json").read_text())
    assert metrics["eval"]["accuracy"] == pytest.approx(summary["eval"]["after"]["accuracy"])
    assert metrics["teacher_calls"] == 0


def test_print_config():
    result = run("train", "--cfg", "job", "loss=dpo", "loss/preferences=all_ordered")
    assert "DPOObjective" in result.stdout and "AllOrdered" in result.stdout


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["rollout.num_candidates=1"], "rollout.num_candidates=1 is invalid: allowed values are integers ≥ 2"),
        (["loss.beta=-1"], "loss.beta=-1 is invalid"),
        (["ranker=oracle"], "ranker.baseline=true"),
        (["loss.loss_type=ppo"], "loss: loss.loss_type='ppo': allowed values are grpo, bnpo, dapo, dr_grpo"),
        (["student.gradient_checkpointing=partial"], "student.gradient_checkpointing='partial': allowed values are false, selective, full"),
        (["student.lean_activations=maybe"], "student.lean_activations='maybe': allowed values are true, false"),
    ],
)
def test_bad_values_fail_fast_without_traceback(overrides, expected, tmp_path):
    run_dir = tmp_path / "run"
    result = run("train", *overrides, f"hydra.run.dir={run_dir}", check=False)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert not (run_dir / "student").exists()


@pytest.mark.parametrize("entry", ["train", "eval", "anchors"])
def test_a_bad_config_fails_before_torch_is_imported(entry):
    """The entry points check the config before importing torch, Lightning or transformers: a bad override
    costs the user a second, not the seconds those imports take."""
    probe = (
        "import runpy, sys\n"
        f"sys.argv = ['purld-{entry}', 'rollout.num_candidates=1']\n"
        "try:\n"
        f"    runpy.run_module('purld.cli.{entry}', run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    print(exit.code, sorted({'torch', 'lightning', 'transformers'} & set(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=WORKDIR)
    assert result.stdout.split("\n")[-2] == "2 []", result.stdout + result.stderr
    assert "rollout.num_candidates=1 is invalid" in result.stderr


def test_unknown_option_lists_the_available_ones(tmp_path):
    result = run("train", "loss=ppo", check=False)
    assert result.returncode != 0
    assert "Could not find 'loss/ppo'" in result.stderr and "grpo" in result.stderr
    assert "Traceback" not in result.stderr


def test_eval_with_a_missing_checkpoint(tmp_path):
    result = run("eval", f"checkpoint={tmp_path / 'nothing'}", check=False)
    assert result.returncode == 2 and "no such file or directory" in result.stderr


def test_quickstart_benchmark_script_smoke(tmp_path, cache):
    """The benchmark harness itself runs and writes its JSON (tiny settings; the real numbers are in README)."""
    out = tmp_path / "bench" / "quickstart.json"
    script = Path(__file__).resolve().parents[2] / "scripts" / "bench_quickstart.py"
    subprocess.run(
        [sys.executable, str(script), "--out", str(out), *SMALL, cache], check=True, capture_output=True, timeout=300, cwd=WORKDIR
    )
    report = json.loads(out.read_text())
    assert report["median_wall_s"] > 0 and report["max_peak_rss_mb"] > 0
    assert report["runs"][0]["accuracy_before"] is not None
    assert (out.with_suffix("") / "run0" / "summary.json").exists()


def test_a_warm_start_alone_is_evaluated_once(tmp_path, cache):
    """trainer.max_steps=0 (a warm start saved for later runs): no PU-RLD step changed the student, so the held-out
    evaluation after it is the one before, not a second pass over the same prompts."""
    run_dir = tmp_path / "run"
    run("train", *SMALL, cache, "trainer.max_steps=0", f"hydra.run.dir={run_dir}")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["global_step"] == 0 and summary["eval"]["after"] == summary["eval"]["before"] != {}
    assert "eval_before" in summary["seconds"] and "eval_after" not in summary["seconds"]


def test_eval_before_false_skips_the_evaluation_of_an_already_evaluated_student(tmp_path, cache):
    run_dir = tmp_path / "run"
    result = run("train", *SMALL, cache, "eval.before=false", f"hydra.run.dir={run_dir}")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["eval"]["before"] == {} and "accuracy" in summary["eval"]["after"]
    assert "eval_before" not in summary["seconds"] and not (run_dir / "eval_before.json").exists()
    assert "after PU-RLD" in result.stdout and "after warm start" not in result.stdout
