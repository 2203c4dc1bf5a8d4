"""teacher=litellm against a real on-premise server: `transformers serve` (transformers' own OpenAI-compatible
server) serving SmolLM2-135M-Instruct on this machine's CPU, as a team with a local inference box runs it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.test_cli import run
from tests.integration.test_litellm_cli import CANARY

PROMPTS = ["task=word_problems", "task.num_train=3", "task.num_heldout=1", "eval.num_prompts=1"]


@pytest.fixture(scope="module")
def served(smollm2_dir, tmp_path_factory):
    """(api_base, the server's log file): started once for the module, stopped after it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path_factory.mktemp("serve") / "server.log"
    executable = Path(sys.executable).with_name("transformers")
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(executable), "serve", smollm2_dir, "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"transformers serve did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1", log
    finally:
        server.terminate()
        server.wait(timeout=30)


def completions_served(log: Path) -> int:
    return log.read_text().count('"POST /v1/chat/completions HTTP/1.1" 200')


@pytest.mark.slow
def test_anchors_from_a_local_server_once_per_prompt(served, smollm2_dir, tmp_path, monkeypatch):
    api_base, log = served
    monkeypatch.setenv("PURLD_CANARY_KEY", CANARY)
    cache = tmp_path / "cache" / "anchors.sqlite"
    teacher = ["teacher=litellm", f"teacher.model=openai/{smollm2_dir}", f"teacher.api_base={api_base}",
               "teacher.api_key_env=PURLD_CANARY_KEY", "teacher.max_tokens=24", "teacher.max_concurrency=2"]
    before = completions_served(log)
    first = tmp_path / "first"
    run("anchors", *PROMPTS, *teacher, f"anchors.cache_path={cache}", f"hydra.run.dir={first}")
    stats = json.loads((first / "anchors.json").read_text())
    assert stats["teacher_calls"] == 4 and stats["completion_tokens"] > 0
    assert completions_served(log) - before == 4  # exactly one request per prompt reached the server

    second = tmp_path / "second"
    run("anchors", *PROMPTS, *teacher, f"anchors.cache_path={cache}", f"hydra.run.dir={second}")
    assert json.loads((second / "anchors.json").read_text())["teacher_calls"] == 0
    assert completions_served(log) - before == 4

    files = [p for root in (first, second, cache.parent) for p in root.rglob("*") if p.is_file()]
    assert [str(p) for p in files if CANARY.encode() in p.read_bytes()] == []
