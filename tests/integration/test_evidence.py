"""scripts/evidence.py end to end at toy size (a few steps, one seed), and its table and README block."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "evidence.py"
sys.path.insert(0, str(SCRIPT.parent))

import evidence


@pytest.mark.slow  # scripts/evidence.py end to end (35 s); CI runs it
def test_evidence_runs_rows_from_one_warm_start_and_writes_the_report(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- evidence:start -->\nold table\n<!-- evidence:end -->\nrest\n")
    command = [
        sys.executable, str(SCRIPT), "--out", str(tmp_path / "ev"), "--tasks", "sort", "--seeds", "0",
        "--rows", "sft,grpo-lexical,grpo-random", "--steps", "2", "--warmstart-steps", "5",
        "--eval-prompts", "16", "--eval-every", "1", "--readme", str(readme),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads((tmp_path / "ev" / "evidence.json").read_text())
    assert [row["row"] for row in report["rows"]] == ["sft", "grpo-lexical", "grpo-random"]
    assert report["failed_runs"] == []
    grpo = report["rows"][1]
    seed = grpo["seeds"]["0"]
    assert seed["accuracy_before"] == report["warm_start_accuracy"]["sort"]  # every row starts from the shared warm start
    assert [step for step, _ in seed["accuracy_curve"]] == [0, 1, 2]
    assert grpo["rank/kendall_tau"]["mean"] is not None and report["rows"][0]["rank/kendall_tau"]["mean"] is None
    assert (tmp_path / "ev" / "accuracy_curves.png").stat().st_size > 0
    text = readme.read_text()
    assert "old table" not in text and "| sort | PU-RLD + GRPO | lexical |" in text and text.endswith("rest\n")
    # A finished run is not run again: a second command reuses every summary.json.
    again = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0 and "warm start" in again.stdout
    assert json.loads((tmp_path / "ev" / "evidence.json").read_text())["rows"][1]["seeds"]["0"]["accuracy"] == seed["accuracy"]


def test_a_failed_run_is_reported_with_its_directory_and_the_rest_go_on(tmp_path, monkeypatch):
    calls = []

    def fake_run(run_dir, overrides, threads):
        calls.append(run_dir)
        if "grpo-random" in str(run_dir):
            raise RuntimeError(f"{run_dir}: purld-train exited 1")
        if run_dir.name == "warmstart":
            (run_dir / "student").mkdir(parents=True)
            (run_dir / "summary.json").write_text(json.dumps({"eval": {"before": {"accuracy": 0.5}}}))
        return {"eval": {"before": {"accuracy": 0.5}, "after": {"accuracy": 0.6, "win_rate": 0.4, "length": 8.0}}, "global_step": 2}

    monkeypatch.setattr(evidence, "run_purld_train", fake_run)
    status = evidence.main(["--out", str(tmp_path), "--tasks", "sort", "--seeds", "0", "--rows", "sft,grpo-random", "--jobs", "1"])
    assert status == 1
    report = json.loads((tmp_path / "evidence.json").read_text())
    assert [row["row"] for row in report["rows"]] == ["sft"]
    assert "grpo-random" in report["failed_runs"][0]


def test_unknown_task_is_refused():
    with pytest.raises(SystemExit):
        evidence.parse_args(["--tasks", "chess"])


def test_an_output_directory_keeps_one_setting(tmp_path, monkeypatch):
    monkeypatch.setattr(evidence, "run_purld_train", lambda *a, **k: (_ for _ in ()).throw(AssertionError("must not run")))
    (tmp_path / "settings.json").write_text(json.dumps({"steps": 100, "warmstart_steps": 500, "num_candidates": 8,
                                                         "temperature": 0.7, "eval_prompts": 512, "eval_every": 25}))
    with pytest.raises(SystemExit, match="steps: 100 there, 7 now"):
        evidence.main(["--out", str(tmp_path), "--steps", "7"])
