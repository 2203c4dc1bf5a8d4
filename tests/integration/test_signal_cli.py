"""purld-signal end to end: the real student's samples scored by several rankers, and its bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.test_cli import SMALL_RUN, run


@pytest.mark.slow
def test_signal_scores_the_real_students_samples_with_every_ranker_named(smollm2_dir, tmp_path):
    cache, out = f"anchors.cache_path={tmp_path / 'a.sqlite'}", tmp_path / "signal"
    overrides = [
        "experiment=smollm2", f"student.gguf_cache_dir={Path(smollm2_dir).parents[1]}", "signal.num_prompts=6",
        "rollout.num_candidates=3", "rollout.max_new_tokens=40", "signal.rankers=[verifier,likelihood,lexical,random]",
        "signal.bootstrap_resamples=200", cache,
    ]
    result = run("signal", *overrides, f"hydra.run.dir={out}")
    report = json.loads((out / "signal.json").read_text())
    assert report["prompts"] == 6 and report["candidates_per_prompt"] == 3 and report["temperature"] == 0.1
    assert sorted(report["rankers"]) == ["lexical", "likelihood", "random", "verifier"]
    verifier, chance = report["rankers"]["verifier"], report["chance"]
    # The anchors are the references, so the verifier is the oracle: τ 1 wherever defined, top-1 never below chance.
    assert verifier["kendall_tau"]["n"] == 0 or verifier["kendall_tau"]["mean"] == pytest.approx(1.0)
    assert verifier["top1_oracle_accuracy"]["mean"] >= chance["mean"]
    for figures in report["rankers"].values():
        top1 = figures["top1_oracle_accuracy"]
        assert top1["n"] == 6 and top1["low"] <= top1["mean"] <= top1["high"]
    assert "ranking signal: 6 prompts × 3 samples" in result.stdout and "likelihood" in result.stdout
    assert "kernels" not in result.stderr and len(report["examples"]) == 3
    assert set(report["examples"][0]["candidates"][0]["scores"]) == set(report["rankers"])
    rerun = run("signal", *overrides, "signal.rankers=[random]", f"hydra.run.dir={tmp_path / 'again'}")
    assert json.loads((tmp_path / "again" / "signal.json").read_text())["cache_hits"] == 6, rerun.stdout


def test_an_unknown_ranker_is_refused_naming_the_options(tmp_path):
    result = run("signal", *SMALL_RUN, "signal.rankers=[likelihood,judge]", f"hydra.run.dir={tmp_path}", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "signal.rankers: no ranker 'judge' in conf/ranker (options: embedding, lexical, likelihood, oracle" in result.stderr


def test_a_task_without_an_oracle_is_refused(tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"p{i}", "reference": f"r{i}"}) + "\n" for i in range(20)))
    result = run("signal", *SMALL_RUN, "task=jsonl", f"task.path={data}", "task.reference_field=reference", "ranker=lexical",
                 f"anchors.cache_path={tmp_path / 'a.sqlite'}", f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert result.returncode == 2 and "purld-signal measures rankers against an oracle; task 'jsonl' has none" in result.stderr
