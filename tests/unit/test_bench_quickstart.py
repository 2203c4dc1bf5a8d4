"""bench_quickstart's figures of one run are that run's own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import pytest  # noqa: E402
from bench_quickstart import run_measured  # noqa: E402

ALLOCATE = "import time; block = bytearray({mb} << 20); time.sleep(0.2)"


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss in KiB, /proc")
def test_a_run_after_a_larger_one_reports_its_own_peak_rss():
    subprocess.run([sys.executable, "-c", ALLOCATE.format(mb=400)], check=True)  # reaped: this process's largest child
    wall, peak_rss_mb, cpu_seconds = run_measured([sys.executable, "-c", ALLOCATE.format(mb=100)])
    assert 100 <= peak_rss_mb < 300
    assert wall >= 0.2 and cpu_seconds > 0


def test_a_failed_run_raises_with_its_exit_status():
    with pytest.raises(subprocess.CalledProcessError) as failure:
        run_measured([sys.executable, "-c", "raise SystemExit(3)"])
    assert failure.value.returncode == 3
