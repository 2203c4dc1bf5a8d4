"""Measure the embedded default: wall time and peak RSS of `purld-train`, and its held-out gain.

    python scripts/bench_quickstart.py [--repeats 1] [--out outputs/bench/quickstart.json] [-- extra overrides]

Runs `purld-train` (no arguments besides a run directory) as a user would, in a
subprocess, and reads the machine's CPU time from /proc/stat around it: CPU
time used by other processes during the run is reported as `outside_load`
(fraction of the machine's cores), so a run taken on a busy machine is visible
as such. Targets (issue 2): ≤ 300 s wall and ≤ 3 GB peak RSS on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


def machine_busy_seconds() -> float:
    """CPU-seconds all cores have spent busy since boot (user + nice + system + irq + softirq + steal)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def run_once(run_dir: Path, overrides: list[str]) -> dict:
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy_before, start = machine_busy_seconds(), time.perf_counter()
    subprocess.run([sys.executable, "-m", "purld.cli.train", f"hydra.run.dir={run_dir}", *overrides], check=True)
    wall = time.perf_counter() - start
    busy = machine_busy_seconds() - busy_before
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    own_cpu = (children.ru_utime - before_children.ru_utime) + (children.ru_stime - before_children.ru_stime)
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(children.ru_maxrss / 1024, 1),  # the largest child so far (Linux: KiB)
        "outside_load_cores": round(max(busy - own_cpu, 0.0) / wall, 3),
        "stage_seconds": summary["seconds"],
        "accuracy_before": summary["eval"]["before"].get("accuracy"),
        "accuracy_after": summary["eval"]["after"].get("accuracy"),
        "win_rate_before": summary["eval"]["before"].get("win_rate"),
        "win_rate_after": summary["eval"]["after"].get("win_rate"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/quickstart.json"))
    parser.add_argument("overrides", nargs="*", help="extra purld-train overrides (after --)")
    args = parser.parse_args()
    runs = []
    for repeat in range(args.repeats):
        run = run_once(args.out.with_suffix("") / f"run{repeat}", args.overrides)  # one folder per --out
        print(json.dumps(run), flush=True)
        runs.append(run)
    import torch

    report = {
        "command": "purld-train " + " ".join(args.overrides),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
        "median_wall_s": statistics.median(r["wall_s"] for r in runs),
        "max_peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"median wall {report['median_wall_s']} s · peak RSS {report['max_peak_rss_mb']} MB → {args.out}")


if __name__ == "__main__":
    main()
