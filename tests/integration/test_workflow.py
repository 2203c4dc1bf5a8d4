"""Experiment workflow at scale, run as a user runs it: DDP with 2 CPU processes, sweeps (basic,
joblib, Optuna, submitit), the W&B offline run read back from disk, and SIGKILL + resume."""

from __future__ import annotations

import glob
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from safetensors.torch import load_file

from purld.testing.wandb_records import read_run
from tests.integration.test_cli import SMALL, WORKDIR, run

NUM_PROMPTS = 64 + 16  # SMALL's train prompts + held-out prompts (eval.num_prompts=8 of 16 are asked for)
ASKED = 64 + 8


def cache_rows(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT COUNT(*) FROM anchors").fetchone()[0]


def offline_env(tmp_path: Path) -> dict[str, str]:
    """No W&B credentials anywhere: logger=wandb must go offline by itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["HOME"] = str(tmp_path / "home")  # no ~/.netrc
    return env


def test_ddp_two_cpu_processes_shard_prompts_and_end_with_identical_weights(tmp_path):
    cache, run_dir = tmp_path / "anchors.sqlite", tmp_path / "run"
    run(
        "train",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.precision=32-true",
        "data.micro_batch_size=5",  # gradients computed pass by pass must still be all-reduced
        *SMALL,
        "trainer.max_steps=3",
        "eval.every_n_steps=2",  # validation: each rank evaluates its share of the held-out prompts, pooled
        f"anchors.cache_path={cache}",
        f"hydra.run.dir={run_dir}",
        "+callbacks.rank_record._target_=purld.testing.rank_record.RankRecord",
        f"+callbacks.rank_record.directory={tmp_path / 'ranks'}",
    )
    ranks = [json.loads((tmp_path / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    # Each rank trained on its own prompts: 3 steps × 4 prompts, none shared.
    prompts = [r["purld_prompt_ids"] for r in ranks]
    assert len(prompts[0]) == len(prompts[1]) == 12 and not set(prompts[0]) & set(prompts[1])
    # The warm start (2 steps of 32 prompts per rank) passes over all 64 prompts each step, split between the ranks.
    warm = [r["warmstart_prompt_ids"] for r in ranks]
    for step in range(2):
        halves = [set(ids[32 * step : 32 * (step + 1)]) for ids in warm]
        assert not halves[0] & halves[1] and len(halves[0] | halves[1]) == 64
    # Gradients were synchronised: the ranks end with the same weights.
    assert ranks[0]["purld_weights_sha256"] == ranks[1]["purld_weights_sha256"]
    # The teacher was asked once per prompt in all: by rank 0; rank 1 only read the cache.
    assert [r["reference_answers"] for r in ranks] == [ASKED, 0]
    assert cache_rows(cache) == ASKED
    summary = json.loads((run_dir / "summary.json").read_text())  # written once, by rank 0
    assert summary["world_size"] == 2 and summary["global_step"] == 3 and summary["reference_answers"] == ASKED
    assert (run_dir / "student" / "config.json").exists()
    assert "eval/accuracy" in (run_dir / "logs" / "purld" / "metrics.csv").read_text()
    assert not list(run_dir.glob(".pl_hydra*")) and [p.name for p in run_dir.glob("**/.hydra")] == [".hydra"]


def test_ddp_under_a_local_sweep_is_refused(tmp_path):
    result = run("train", "-m", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", *SMALL, "seed=0,1",
                 f"hydra.sweep.dir={tmp_path / 'sweep'}", check=False)
    assert result.returncode == 2
    assert "trainer.strategy=ddp" in result.stderr and "hydra/launcher=slurm" in result.stderr


def test_fsdp_on_cpu_is_refused_with_the_key_named(tmp_path):
    result = run("train", "trainer=fsdp", "trainer.accelerator=cpu", *SMALL, f"hydra.run.dir={tmp_path}", check=False)
    assert result.returncode == 2 and "trainer=fsdp needs GPUs" in result.stderr


def test_sweep_of_losses_rankers_and_seeds_writes_one_summary_per_job(tmp_path):
    cache, sweep = tmp_path / "anchors.sqlite", tmp_path / "sweep"
    tiny = [*SMALL, "warmstart.sft_steps=1", "trainer.max_steps=1", "eval.num_prompts=4"]
    run("train", "-m", "loss=dpo,grpo,ldl", "ranker=likelihood,lexical", "seed=0,1", *tiny,
        f"anchors.cache_path={cache}", f"hydra.sweep.dir={sweep}")
    summaries = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/summary.json"))]
    assert len(summaries) == 12
    assert {(s["choices"]["loss"], s["choices"]["ranker"], s["choices"]["seed"]) for s in summaries} == {
        (loss, ranker, seed) for loss in ("dpo", "grpo", "ldl") for ranker in ("likelihood", "lexical") for seed in (0, 1)
    }
    assert sum(s["reference_answers"] for s in summaries) == 64 + 4  # the first job paid; the others read the cache


def test_parallel_joblib_jobs_never_ask_the_teacher_twice(tmp_path):
    cache, sweep = tmp_path / "anchors.sqlite", tmp_path / "sweep"
    run("train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1", *SMALL,
        "trainer.max_steps=1", f"anchors.cache_path={cache}", f"hydra.sweep.dir={sweep}")
    summaries = [json.loads((sweep / str(job) / "summary.json").read_text()) for job in (0, 1)]
    assert sorted(s["reference_answers"] for s in summaries) == [0, ASKED]  # no duplicate call, no lost answer
    assert cache_rows(cache) == ASKED


def test_optuna_search_optimises_the_returned_held_out_metric(tmp_path):
    sweep = tmp_path / "sweep"
    run("train", "hparams_search=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=2",
        *SMALL, "trainer.max_steps=1", f"anchors.cache_path={tmp_path / 'a.sqlite'}", f"hydra.sweep.dir={sweep}")
    results = (sweep / "optimization_results.yaml").read_text()
    assert "best_value" in results and "optimizer.lr" in results
    trials = [json.loads(p.read_text()) for p in sweep.glob("*/summary.json")]
    assert len(trials) == 2


def test_submitit_local_launcher_runs_the_job(tmp_path):
    sweep = tmp_path / "sweep"
    run("train", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", *SMALL, "trainer.max_steps=1",
        f"anchors.cache_path={tmp_path / 'a.sqlite'}", f"hydra.sweep.dir={sweep}")
    assert json.loads((sweep / "0" / "summary.json").read_text())["global_step"] == 1


def test_wandb_offline_run_holds_config_scalars_and_samples_table(tmp_path):
    run_dir = tmp_path / "run"
    # A secret reaches the config the way a user's YAML would take it: from the environment.
    env = {**offline_env(tmp_path), "PURLD_TEST_SECRET": "sk-never-logged"}
    result = run("train", *[o for o in SMALL if o != "logger=csv"], "logger=wandb", "logger.tags=[ci]",
                 "samples.every_n_steps=1", "+extra.api_key=${oc.env:PURLD_TEST_SECRET}",
                 f"anchors.cache_path={tmp_path / 'a.sqlite'}", f"hydra.run.dir={run_dir}", env=env)
    assert "wandb sync" in result.stdout, result.stderr  # offline, and the user is told how to upload
    [wandb_file] = glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))
    logged = read_run(wandb_file)
    assert logged["config"]["choice/loss"] == "grpo"
    assert logged["config"]["config"]["rollout"]["num_candidates"] == 3  # the full resolved config
    for written in [wandb_file, *glob.glob(str(run_dir / "**" / "*.*"), recursive=True)]:
        if Path(written).is_file():
            assert "sk-never-logged" not in Path(written).read_text(errors="ignore"), written
    assert logged["config"]["config"]["extra"]["api_key"] == "***"
    scalars = {key for row in logged["history"] for key in row}
    assert {"train/loss", "rollout/len_mean", "rank/score_mean", "reward/std", "warmstart/train/loss"} <= scalars
    assert {"eval/before/accuracy", "eval/after/accuracy", "teacher_calls"} <= set(logged["summary"])
    [table_file, *_] = sorted(glob.glob(str(run_dir / "wandb" / "offline-run-*" / "files" / "media" / "table" / "samples_*.json")))
    table = json.loads(Path(table_file).read_text())
    assert table["columns"][:6] == ["step", "prompt_id", "prompt", "anchor", "candidate", "score"]
    assert len(table["data"]) == 2 * 3  # samples.num_prompts × K
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 * 6 and {type(row["correct"]) for row in samples} == {bool}  # 2 steps; the oracle's verdicts


def test_sigkill_then_resume_ends_as_if_it_never_died(tmp_path):
    cache = tmp_path / "anchors.sqlite"
    longer = [*[o for o in SMALL if o != "logger=csv"], "logger=wandb", "trainer.max_steps=30",
              "checkpointing.every_n_steps=5", f"anchors.cache_path={cache}"]
    env = offline_env(tmp_path)
    uninterrupted = tmp_path / "uninterrupted"
    run("train", *longer, f"hydra.run.dir={uninterrupted}", env=env)

    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "purld.cli.train", *longer, f"hydra.run.dir={killed}"]
    process = subprocess.Popen(command, cwd=WORKDIR, env={**env, "HF_HUB_OFFLINE": "1"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = killed / "checkpoints" / "purld" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL and not (killed / "summary.json").exists(), "the run ended before the kill"

    result = run("train", f"resume={killed}", env=env)
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["resumed"] and summary["global_step"] == 30
    assert summary["teacher_calls"] == 0 and cache_rows(cache) == ASKED
    reference = json.loads((uninterrupted / "summary.json").read_text())
    assert summary["eval"] == reference["eval"]
    weights, expected = load_file(killed / "student" / "model.safetensors"), load_file(uninterrupted / "student" / "model.safetensors")
    assert all((weights[name] == expected[name]).all() for name in expected)  # same data, RNG and optimizer state
    # The W&B run kept its id across the restart; its resumed part logs every step from the checkpoint on.
    # (What the killed part holds is what wandb's service had written when its parent died.)
    parts = sorted(glob.glob(str(killed / "wandb" / "offline-run-*" / "run-*.wandb")))  # named by start time
    assert len(parts) == 2 and len({Path(p).name for p in parts}) == 1
    resumed = {row["trainer/global_step"] for row in read_run(parts[1])["history"] if "train/loss" in row}
    assert resumed == set(range(min(resumed), 30)) and min(resumed) % 5 == 0
    assert "wandb sync" in result.stdout


def test_resume_refuses_a_changed_experiment_and_a_missing_run_but_not_its_own_command_line(tmp_path):
    result = run("train", f"resume={tmp_path / 'nowhere'}", check=False)
    assert result.returncode == 2 and "not a purld-train run directory" in result.stderr
    run_dir = tmp_path / "run"
    run("train", *SMALL, "trainer.max_steps=1", f"anchors.cache_path={tmp_path / 'a.sqlite'}", f"hydra.run.dir={run_dir}")
    result = run("train", f"resume={run_dir}", "loss=dpo", check=False)
    assert result.returncode == 2 and "loss=dpo changes it: remove it" in result.stderr
    other_k = [o if not o.startswith("rollout.num_candidates=") else "rollout.num_candidates=4" for o in SMALL]
    result = run("train", f"resume={run_dir}", *other_k, check=False)
    assert result.returncode == 2 and "rollout.num_candidates=4 changes it" in result.stderr
    # Longer training is allowed: the finished run continues to the new step count.
    run("train", f"resume={run_dir / 'checkpoints' / 'purld' / 'last.ckpt'}", "trainer.max_steps=2")
    assert json.loads((run_dir / "summary.json").read_text())["global_step"] == 2
    # The command line the run was started with, resume= added, is the same run: nothing to refuse.
    run("train", *SMALL, "trainer.max_steps=3", f"anchors.cache_path={tmp_path / 'a.sqlite'}", f"hydra.run.dir={run_dir}",
        f"resume={run_dir}")
    assert json.loads((run_dir / "summary.json").read_text())["global_step"] == 3


def test_bad_checkpointing_interval_is_named(tmp_path):  # the other bad values: tests/unit/test_config.py
    result = run("train", *SMALL, "checkpointing.every_n_steps=x", f"hydra.run.dir={tmp_path}", check=False)
    assert result.returncode == 2 and "checkpointing.every_n_steps" in result.stderr


def test_a_run_that_keeps_no_checkpoints_deletes_them_and_refuses_a_resume(tmp_path):
    run_dir = tmp_path / "run"
    run("train", *SMALL, "trainer.max_steps=1", "checkpointing.keep_when_done=false", f"anchors.cache_path={tmp_path / 'a.sqlite'}",
        f"hydra.run.dir={run_dir}")
    assert (run_dir / "student" / "config.json").exists() and (run_dir / "summary.json").exists()
    assert not (run_dir / "checkpoints").exists()
    result = run("train", f"resume={run_dir}", "trainer.max_steps=2", check=False)
    assert result.returncode == 2 and "checkpoints were deleted (checkpointing.keep_when_done=false)" in result.stderr
    result = run("train", *SMALL, "checkpointing.keep_when_done=maybe", f"hydra.run.dir={tmp_path / 'bad'}", check=False)
    assert result.returncode == 2 and "checkpointing.keep_when_done='maybe' is invalid" in result.stderr
