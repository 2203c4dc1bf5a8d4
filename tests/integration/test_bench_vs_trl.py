"""Smoke test of the TRL comparison harness: every worker runs once (tiny model, 1 step, in one
process) and the JSON holds the figures README quotes. It checks the harness, not the numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl", reason="the [bench] extra (TRL) is not installed")


def test_harness_quick_run_writes_every_figure(tmp_path):
    script = Path(__file__).resolve().parents[2] / "scripts" / "bench_vs_trl.py"
    out = tmp_path / "vs_trl.json"
    result = subprocess.run([sys.executable, str(script), "--quick", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    for name in ("grpo_step_ratio", "dpo_step_ratio", "grpo_rss_ratio", "dpo_rss_ratio",
                 "grpo_step_vs_floor", "dpo_step_vs_floor", "rollout_vs_generate_floor",
                 "grpo_rss_ratio_without_lean_activations", "dpo_rss_ratio_without_lean_activations"):
        assert report[name] > 0, name
    kinds = {row["kind"] for row in report["rows"]}
    assert kinds == {"purld_grpo", "trl_grpo", "generate_floor", "grpo_update_floor", "purld_dpo", "trl_dpo", "dpo_update_floor"}
    assert all(row["precision"] == "fp32" for row in report["rows"])
    assert report["figures"]["tiny_ranking_fraction_self_judge"] > 0
    assert "grpo_step_ratio" in result.stdout  # the printed table
