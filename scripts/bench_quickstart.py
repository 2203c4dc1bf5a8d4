"""Measure a preset end to end: wall time and peak RSS of `purld-train`, and its held-out gain.

    python scripts/bench_quickstart.py [--repeats 1] [--out outputs/bench/quickstart.json] [-- extra overrides]
    python scripts/bench_quickstart.py --out outputs/bench/smollm2.json -- experiment=smollm2
    python scripts/bench_quickstart.py --out outputs/bench/smollm2_lora.json -- experiment=smollm2_lora
    python scripts/bench_quickstart.py --render outputs/bench/smollm2.json outputs/bench/smollm2_lora.json --readme README.md
    python scripts/bench_quickstart.py --out outputs/bench/vlm_quickstart.json -- experiment=vlm_quickstart
    python scripts/bench_quickstart.py --render outputs/bench/vlm_quickstart.json --readme README.md --markers vlm

Runs `purld-train` (the given overrides besides a run directory) as a user would, in a
subprocess, and reads the machine's CPU time from /proc/stat around it: CPU
time used by other processes during the run is reported as `outside_load`
(fraction of the machine's cores), so a run taken on a busy machine is visible
as such. Targets on 2 CPU cores: the quickstart ≤ 300 s wall and ≤ 3 GB peak
RSS; `experiment=smollm2` ≤ 15 minutes. `--render` writes the real-student
table README.md shows (between its `presets` markers, or `--markers NAME`'s) from the reports.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from evidence import write_readme


def machine_busy_seconds() -> float:
    """CPU-seconds all cores have spent busy since boot (user + nice + system + irq + softirq + steal)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cpu_description() -> dict[str, object]:
    """The CPU a figure was measured on: its model, torch's kernel level, and whether it does bf16 natively
    (AVX-512 BF16 or AMX; without them a bf16 matmul is slower than fp32's, 3.6x on an AVX2-only EPYC)."""
    import torch

    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []

    def field(name: str) -> str | None:  # the first core's
        return next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith(name)), None)

    flags = set((field("flags") or "").split())
    return {"cpu": field("model name") or platform.processor() or None,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "native_bf16": bool(flags & {"avx512_bf16", "amx_bf16"})}


def run_measured(command: list[str]) -> tuple[float, float, float]:
    """Run `command`: its wall seconds, its own peak RSS in MB and its CPU seconds, from `os.wait4` on it.
    Not `getrusage(RUSAGE_CHILDREN)`: its peak RSS is the largest of every child reaped so far, this process's
    earlier runs' and even those of the shell that started it (a preset run after a larger one reported that
    one's peak). A child's peak starts from this process's own at the spawn (the exec keeps it), a few tens of MB
    here."""
    start = time.perf_counter()
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command)
    return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime  # Linux: ru_maxrss in KiB


def run_once(run_dir: Path, overrides: list[str]) -> dict:
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run, not one beside an earlier run's checkpoints and logs
    busy_before = machine_busy_seconds()
    wall, peak_rss_mb, own_cpu = run_measured([sys.executable, "-m", "purld.cli.train", f"hydra.run.dir={run_dir}", *overrides])
    busy = machine_busy_seconds() - busy_before
    summary = json.loads((run_dir / "summary.json").read_text())
    with (run_dir / "logs" / "purld" / "metrics.csv").open() as metrics:
        step_seconds = [float(row["time/step"]) for row in csv.DictReader(metrics) if row.get("time/step")]
    return {
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "outside_load_cores": round(max(busy - own_cpu, 0.0) / wall, 3),
        "stage_seconds": summary["seconds"],
        "accuracy_before": summary["eval"]["before"].get("accuracy"),
        "accuracy_after": summary["eval"]["after"].get("accuracy"),
        "win_rate_before": summary["eval"]["before"].get("win_rate"),
        "win_rate_after": summary["eval"]["after"].get("win_rate"),
        "length_before": summary["eval"]["before"].get("length"),
        "length_after": summary["eval"]["after"].get("length"),
        **{f"accuracy_by_kind_{when}": {name.removeprefix("accuracy/"): value for name, value in summary["eval"][when].items()
                                         if name.startswith("accuracy/")} for when in ("before", "after")},
        "steps": summary["global_step"],
        "median_step_s": round(statistics.median(step_seconds), 2) if step_seconds else None,
        "rank_means": summary.get("rank_means", {}),
    }


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


PRESET_MARKERS = markers("presets")  # the real-student presets
VLM_MARKERS = markers("vlm")  # experiment=vlm_quickstart


def median_run(report: dict) -> dict:
    """The report's run of median wall time (the one its table row shows)."""
    return sorted(report["runs"], key=lambda r: r["wall_s"])[len(report["runs"]) // 2]


def render(reports: list[dict]) -> str:
    """The markdown table of the reports' median runs (one row each)."""
    rows = [
        "| command | PU-RLD steps | held-out accuracy before → after | win rate vs anchor | answer length (tokens) | "
        "median step | wall | peak RSS | outside load |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for report in reports:
        run = median_run(report)
        rows.append(
            f"| `{report['command']}` | {run['steps']} | {100 * run['accuracy_before']:.1f} % → {100 * run['accuracy_after']:.1f} % "
            f"| {run['win_rate_before']:.3f} → {run['win_rate_after']:.3f} | {run['length_before']:.1f} → {run['length_after']:.1f} "
            f"| {run['median_step_s']} s | {run['wall_s'] / 60:.1f} min | {run['peak_rss_mb'] / 1024:.1f} GB "
            f"| {run['outside_load_cores']:.2f} cores |"
        )
    for report in reports:  # tasks that mix kinds of question (Task.question_kinds): each kind's accuracy
        run = median_run(report)
        before, after = run.get("accuracy_by_kind_before") or {}, run.get("accuracy_by_kind_after") or {}
        if after:
            kinds = ", ".join(f"{kind} {100 * before[kind]:.1f} % → {100 * after[kind]:.1f} %" if kind in before
                              else f"{kind} {100 * after[kind]:.1f} %" for kind in after)
            rows.append(f"\nHeld-out accuracy by question, `{report['command']}`: {kinds}.")
    machines = sorted({f"{cpu} ({report['machine'].get('cpu_capability')})" for report in reports
                       if (cpu := report.get("machine", {}).get("cpu"))})
    if machines:  # reports from before the CPU was recorded say nothing
        rows.append(f"\nMeasured on {' and '.join(machines)}.")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/quickstart.json"))
    parser.add_argument("--render", type=Path, nargs="+", default=None, help="print the table of these reports (runs nothing)")
    parser.add_argument("--readme", type=Path, default=None, help="with --render: also write it into this README's presets block")
    parser.add_argument("--markers", default="presets", help="with --readme: the README block's name (presets, vlm)")
    parser.add_argument("overrides", nargs="*", help="extra purld-train overrides (after --)")
    args = parser.parse_args()
    if args.render:
        table = render([json.loads(path.read_text()) for path in args.render])
        print(table)
        if args.readme:
            command = "python scripts/bench_quickstart.py --render " + " ".join(str(path) for path in args.render)
            write_readme(args.readme, table, command, markers(args.markers))
        return
    runs = []
    for repeat in range(args.repeats):
        run = run_once(args.out.with_suffix("") / f"run{repeat}", args.overrides)  # one folder per --out
        print(json.dumps(run), flush=True)
        runs.append(run)
    import torch

    report = {
        "command": "purld-train " + " ".join(args.overrides),
        "machine": {"cores": os.cpu_count(), **cpu_description(), "python": platform.python_version(), "torch": torch.__version__},
        "median_wall_s": statistics.median(r["wall_s"] for r in runs),
        "max_peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"median wall {report['median_wall_s']} s · peak RSS {report['max_peak_rss_mb']} MB → {args.out}")


if __name__ == "__main__":
    main()
