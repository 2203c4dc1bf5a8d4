"""Smoke test of scripts/bench_rollout.py on a few tiny rollouts: it checks the script, not the numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_rollout_benchmark_writes_both_prompt_sets(tmp_path):
    script = Path(__file__).resolve().parents[2] / "scripts" / "bench_rollout.py"
    out = tmp_path / "rollout.json"
    command = [sys.executable, str(script), "--sizes", "tiny", "--prompts", "2", "-K", "2", "--new-tokens", "4", "--repeats", "1", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [row["task"] for row in rows] == ["arithmetic", "gsm8k"]
    assert rows[1]["prompt_tokens"] > rows[0]["prompt_tokens"]  # GSM8K's questions are the long prompts
    for row in rows:
        assert row["purld_s"] > 0 and row["generate_s"] > 0 and row["purld_vs_generate"] > 0
        assert row["static_s"] > 0 and row["static_vs_generate"] > 0  # rollout=static
        assert abs(row["purld_tokens_per_s"] * row["purld_s"] / (2 * 2 * 4) - 1) < 0.05  # 2 prompts × K 2 × 4 tokens
    assert "| tiny | gsm8k |" in result.stdout
