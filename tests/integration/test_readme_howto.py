"""README's "your own ranker, loss or task" how-to, followed exactly as written: its files are the README's code
blocks, its command the README's command."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MARKERS = ("<!-- howto:start -->", "<!-- howto:end -->")
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)


def howto_blocks() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split(MARKERS[0], 1)[1].split(MARKERS[1], 1)[0]
    return BLOCK.findall(section)


@pytest.mark.slow  # a whole purld-train run on the quickstart student (about 60 s); CI runs it
def test_the_own_ranker_loss_and_task_howto_runs_as_written(tmp_path):
    blocks = howto_blocks()
    files = [body for language, body in blocks if language in ("python", "yaml")]
    commands = [body for language, body in blocks if language == "bash"]
    assert len(files) == 4 and len(commands) == 1
    for body in files:  # each file's first line names it: "# my-conf/task/reverse.yaml"
        path = tmp_path / body.splitlines()[0].removeprefix("# ").strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    result = subprocess.run(commands[0], shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    summary = json.loads(next(tmp_path.glob("outputs/runs/*/*/summary.json")).read_text())
    assert summary["choices"] == {**summary["choices"], "task": "reverse", "ranker": "same_length", "loss": "reverse_ldl"}
    assert summary["global_step"] == 3
    assert "accuracy" in summary["eval"]["after"]
