"""purld-train with teacher=litellm against a loopback OpenAI-compatible server: secrets and failures."""

from __future__ import annotations

import json
import os

from purld.testing.openai_server import FakeOpenAIServer
from tests.integration.test_cli import SMALL, run

CANARY = "sk-canary-7d1f3e9a5b"


def test_the_api_key_is_used_and_written_nowhere(tmp_path, monkeypatch):
    monkeypatch.setenv("PURLD_CANARY_KEY", CANARY)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    run_dir, cache = tmp_path / "run", tmp_path / "cache" / "anchors.sqlite"
    with FakeOpenAIServer() as server:
        result = run(
            "train", *SMALL, "teacher=litellm", "teacher.model=openai/tiny-teacher",
            f"teacher.api_base={server.api_base}", "teacher.api_key_env=PURLD_CANARY_KEY",
            f"anchors.cache_path={cache}", f"hydra.run.dir={run_dir}",
        )
    assert server.authorization == {f"Bearer {CANARY}"}
    assert "LiteLLM" not in result.stdout + result.stderr  # no per-call logs, banners or cost-map warnings
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["teacher_calls"] == 72 and summary["global_step"] == 2
    assert all(count == 1 for count in server.successes.values())
    files = [p for root in (run_dir, cache.parent) for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "config.yaml" for p in files) and any(p.suffix == ".sqlite" for p in files)
    leaking = [str(p) for p in files if CANARY.encode() in p.read_bytes()]
    assert leaking == []


def test_a_teacher_failure_stops_with_the_prompt_named_and_keeps_answers(tmp_path):
    with FakeOpenAIServer() as closed:
        api_base = closed.api_base
    result = run(
        "anchors", *SMALL, "teacher=litellm", f"teacher.api_base={api_base}", "teacher.num_retries=0",
        f"anchors.cache_path={tmp_path / 'a.sqlite'}", f"hydra.run.dir={tmp_path / 'run'}", check=False,
    )
    assert result.returncode == 1
    assert "failed after 1 attempt(s)" in result.stderr and "is kept in" in result.stderr
    assert "Traceback" not in result.stderr
    assert os.path.exists(tmp_path / "a.sqlite")


def test_bad_teacher_settings_fail_before_loading(tmp_path):
    result = run("train", "teacher=litellm", "teacher.on_error=retry", check=False)
    assert result.returncode == 2 and "teacher.on_error='retry': allowed values are raise, skip" in result.stderr


def test_anchor_benchmark_script_smoke(tmp_path):
    """The harness runs end to end (tiny sizes); README holds the real numbers."""
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "anchors.json"
    script = Path(__file__).resolve().parents[2] / "scripts" / "bench_anchors.py"
    subprocess.run(
        [sys.executable, str(script), "--prompts", "20", "--concurrency", "4", "--repeats", "1", "--out", str(out)],
        check=True, capture_output=True, timeout=300, cwd=tmp_path,
    )
    report = json.loads(out.read_text())
    assert report["median_bare_calls_per_s"] > 0 and report["median_purld_calls_per_s"] > 0
