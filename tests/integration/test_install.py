"""purld as a user installs it without `-e`: a built wheel in a fresh virtual environment, run from another directory,
finds its config tree (conf/ ships inside the package as purld/conf)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_cli import SMALL

ROOT = Path(__file__).resolve().parents[2]


def check(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, command))}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result


@pytest.mark.slow  # builds a wheel and a venv (about 40 s); CI runs it
def test_a_built_wheel_runs_purld_train_from_another_directory(tmp_path):
    check([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist")])
    wheel = next((tmp_path / "dist").glob("purld-*.whl"))
    # The venv sees this interpreter's packages (torch and the rest, installed already); purld itself comes from the wheel.
    check([sys.executable, "-m", "venv", "--system-site-packages", str(tmp_path / "venv")])
    python, bin_dir = tmp_path / "venv" / "bin" / "python", tmp_path / "venv" / "bin"
    check([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", WANDB_MODE="disabled")

    located = check([str(python), "-c", "import purld, pathlib; print(pathlib.Path(purld.__file__).resolve())"], cwd=elsewhere, env=env)
    assert str(tmp_path / "venv") in located.stdout  # the wheel's copy, not the checkout
    printed = check([str(bin_dir / "purld-train"), "--cfg", "job"], cwd=elsewhere, env=env)
    assert "_target_: purld.students.TinyLlamaStudent" in printed.stdout  # the embedded default, composed from purld/conf

    run_dir = elsewhere / "run"
    check([str(bin_dir / "purld-train"), *SMALL, f"anchors.cache_path={elsewhere / 'anchors.sqlite'}", f"hydra.run.dir={run_dir}"],
          cwd=elsewhere, env=env)
    assert json.loads((run_dir / "summary.json").read_text())["global_step"] == 2
    listed = check([str(bin_dir / "purld-signal"), "--help"], cwd=elsewhere, env=env)  # reads conf/ranker through the package
    assert "ranker" in listed.stdout
