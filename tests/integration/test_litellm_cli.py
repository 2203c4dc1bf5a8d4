"""purld-train with teacher=litellm against a loopback OpenAI-compatible server: secrets and failures."""

from __future__ import annotations

import json
import os
import re

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


def test_an_llm_judge_through_litellm_judges_both_orders_and_a_rerun_asks_nothing(tmp_path, monkeypatch):
    """judge=llm against a loopback server whose judge always prefers Response A: both orders cancel it (win_rate
    ½ for every answer), the summary names the judge and its calls, and purld-eval of the trained student asks the
    judge nothing it has not asked already."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local")
    run_dir, judge_cache = tmp_path / "run", tmp_path / "judge.sqlite"
    judge = ["judge=llm", "eval.judge.teacher.model=openai/judge", f"eval.judge.cache_path={judge_cache}"]
    cache = f"anchors.cache_path={tmp_path / 'a.sqlite'}"
    with FakeOpenAIServer(reply=lambda prompt: "A") as server:
        api_base = f"eval.judge.teacher.api_base={server.api_base}"
        run("train", *SMALL, *judge, api_base, cache, f"hydra.run.dir={run_dir}")
        asked = sum(server.requests.values())
        run("eval", *SMALL, *judge, api_base, cache, f"checkpoint={run_dir}", f"hydra.run.dir={tmp_path / 'eval'}")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["eval"]["before"]["win_rate"] == summary["eval"]["after"]["win_rate"] == 0.5
    assert 0.4 < summary["eval"]["after"]["win_rate_lc"] < 0.6
    assert summary["judge"]["name"] == "llm_judge" and summary["judge"]["model"] == "openai/judge"
    assert summary["judge"]["calls"] == asked and 16 <= asked <= 32  # 8 held-out answers × 2 orders, before and after
    assert all("[Response A]" in prompt and "[Response B]" in prompt for prompt in server.requests)
    assert sum(server.requests.values()) == asked  # purld-eval: every verdict from the cache
    evaluated = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert evaluated["judge"]["calls"] == 0 and evaluated["eval"]["win_rate"] == 0.5


def test_a_judge_failure_names_the_judge_and_its_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local")
    with FakeOpenAIServer() as closed:
        api_base = closed.api_base
    result = run(
        "train", *SMALL, "judge=llm", f"eval.judge.teacher.api_base={api_base}", "eval.judge.teacher.num_retries=0",
        f"eval.judge.cache_path={tmp_path / 'judge.sqlite'}", f"anchors.cache_path={tmp_path / 'a.sqlite'}",
        f"hydra.run.dir={tmp_path / 'run'}", check=False,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    # Verdicts are asked concurrently: whichever order fails first is the one named.
    assert re.search(r"eval\.judge: teacher=openai/gpt-4o-mini: prompt 'add-\S+ \(judge, candidate \d as A, \d as B\)'", result.stderr)
    assert f"kept in {tmp_path / 'judge.sqlite'}" in result.stderr and "eval.judge.teacher.on_error=skip" in result.stderr
