"""bench_quickstart's figures of one run are that run's own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import pytest  # noqa: E402
from bench_quickstart import run_measured  # noqa: E402

ALLOCATE = "import time; block = bytearray({mb} << 20); time.sleep(0.2)"


def after_a_larger_run_a_run_reports_its_own_peak_rss() -> None:
    subprocess.run([sys.executable, "-c", ALLOCATE.format(mb=400)], check=True)  # reaped: this process's largest child
    wall, peak_rss_mb, cpu_seconds = run_measured([sys.executable, "-c", ALLOCATE.format(mb=100)])
    assert 100 <= peak_rss_mb < 300, peak_rss_mb
    assert wall >= 0.2 and cpu_seconds > 0


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss in KiB")
def test_a_run_after_a_larger_one_reports_its_own_peak_rss():
    # In a small process, as bench_quickstart is: a child's peak RSS starts from its parent's at the spawn (the
    # exec keeps the parent's high-water mark), and pytest's own is over a GB by the time this runs in the suite.
    result = subprocess.run([sys.executable, __file__], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_failed_run_raises_with_its_exit_status():
    with pytest.raises(subprocess.CalledProcessError) as failure:
        run_measured([sys.executable, "-c", "raise SystemExit(3)"])
    assert failure.value.returncode == 3


if __name__ == "__main__":
    after_a_larger_run_a_run_reports_its_own_peak_rss()
