"""`purld-compare`: a table of runs' choices and final metrics, and PNG plots — no dashboard needed.

    purld-compare outputs/multiruns/2026-11-26/23-50-00            # a sweep directory
    purld-compare outputs/runs/a outputs/runs/b --metric win_rate   # any runs
    purld-compare SWEEP --out plots/                                 # where the PNGs go (default: the first path)

Reads each run's `summary.json` and `logs/purld/metrics.csv`. Runs are sorted
by the chosen held-out metric after PU-RLD. Plots: `curves.png` (per PU-RLD
step, one line per run: the ranker's raw score of the samples, their oracle
accuracy where the task has one, and held-out accuracy when logged) and
`final_<metric>.png` (one bar per configuration, mean over seeds, the seeds'
standard deviation as error bars). A directory that holds no run, or a run
that is half-written (no summary, broken JSON), is named with the reason; the
readable runs are still shown. Exit status 2 only when no run is readable.
"""

from __future__ import annotations

import argparse
import csv
import math
import json
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

# reward/mean is not among them: rewards are q = softmax(s/τ), whose mean is 1/K by construction.
CURVES = ("rank/score_mean", "rollout/oracle_accuracy", "eval/accuracy")
CHOICE_KEYS = ("task", "student", "teacher", "ranker", "loss", "loss/preferences", "rollout.num_candidates", "loss.beta")


@dataclass
class Run:
    path: Path
    summary: dict[str, Any]
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    @property
    def choices(self) -> dict[str, Any]:
        return self.summary.get("choices", {})

    def configuration(self) -> str:
        """The run's choices without its seed: runs that differ only by seed share it."""
        return " ".join(f"{k}={self.choices[k]}" for k in CHOICE_KEYS if self.choices.get(k) is not None)

    def final(self, metric: str) -> float | None:
        return self.summary.get("eval", {}).get("after", {}).get(metric)

    def before(self, metric: str) -> float | None:
        return self.summary.get("eval", {}).get("before", {}).get(metric)


def read_curves(metrics_csv: Path, names: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
    curves: dict[str, list[tuple[int, float]]] = defaultdict(list)
    if not metrics_csv.exists():
        return curves
    with metrics_csv.open() as handle:
        for row in csv.DictReader(handle):
            for name in names:
                if row.get(name) and not math.isnan(value := float(row[name])):  # NaN: undefined at that step
                    curves[name].append((int(row["step"]), value))
    return curves


def find_runs(paths: list[Path]) -> tuple[list[Run], list[str]]:
    """Readable runs, and one line per path or run directory that could not be read."""
    runs, problems = [], []
    for root in paths:
        if not root.exists():
            problems.append(f"{root}: no such directory")
            continue
        candidates = {p.parent for p in root.rglob("summary.json")} | {p.parent for p in root.rglob(".hydra")}
        if (root / "summary.json").exists() or (root / ".hydra").exists():
            candidates.add(root)
        if not candidates:
            problems.append(f"{root}: no run found (no summary.json or .hydra/ below it)")
        for directory in sorted(candidates):
            summary_path = directory / "summary.json"
            if not summary_path.exists():
                problems.append(f"{directory}: no summary.json (the run did not finish, or was not a purld-train run)")
                continue
            try:
                summary = json.loads(summary_path.read_text())
            except json.JSONDecodeError as error:
                problems.append(f"{summary_path}: unreadable JSON ({error.msg}, line {error.lineno})")
                continue
            curves = read_curves(directory / "logs" / "purld" / "metrics.csv", CURVES)
            runs.append(Run(directory, summary, curves))
    return runs, problems


def _format(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("—" if value is None else str(value))


def print_table(runs: list[Run], metric: str, console: Console) -> None:
    """Columns for the choices that differ between runs; the shared ones go in the caption."""
    keys = (*CHOICE_KEYS, "seed")
    varying = [k for k in keys if len({str(run.choices.get(k)) for run in runs}) > 1]
    shared = [f"{k}={runs[0].choices.get(k)}" for k in keys if k not in varying and runs[0].choices.get(k) is not None]
    table = Table(title=f"{len(runs)} run(s), sorted by held-out {metric} after PU-RLD", caption="shared: " + " ".join(shared))
    for column in ("run", *varying, f"{metric} before", f"{metric} after", "Δ"):
        table.add_column(column, justify="left" if column == "run" else "right")
    for run, label in zip(runs, run_labels(runs)):
        after, before = run.final(metric), run.before(metric)
        delta = after - before if after is not None and before is not None else None
        table.add_row(
            label,
            *(_format(run.choices.get(k)) for k in varying),
            _format(before),
            _format(after),
            f"{delta:+.4f}" if delta is not None else "—",
        )
    console.print(table)


def run_labels(runs: list[Run]) -> list[str]:
    """The shortest path suffixes that tell the runs apart (sweep jobs are all called 0, 1, …; bench runs run0)."""
    for depth in range(1, 6):
        labels = ["/".join(run.path.parts[-depth:]) for run in runs]
        if len(set(labels)) == len(labels):
            return labels
    return [str(run.path) for run in runs]


def moving_average(values: tuple[float, ...], window: int) -> list[float]:
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def plot(runs: list[Run], metric: str, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    labels = run_labels(runs)
    figure, axes = plt.subplots(1, len(CURVES), figsize=(6 * len(CURVES), 4.5))
    for run, label in zip(runs, labels):
        for axis, name in zip(axes, CURVES):
            if run.curves.get(name):
                steps, values = zip(*run.curves[name])
                axis.plot(steps, moving_average(values, 1 if name.startswith("eval/") else 10), label=label, linewidth=1)
    titles = {
        "rank/score_mean": "ranker score of samples (moving avg 10)",
        "rollout/oracle_accuracy": "oracle accuracy of samples (moving avg 10)",
        "eval/accuracy": "held-out accuracy",
    }
    for axis, name in zip(axes, CURVES):
        axis.set_title(titles[name])
        axis.set_xlabel("PU-RLD step")
        if axis.lines:
            axis.legend(fontsize=7)
        else:
            axis.text(0.5, 0.5, f"no {name} logged", ha="center", va="center", transform=axis.transAxes)
    figure.tight_layout()
    figure.savefig(out / "curves.png", dpi=110)
    plt.close(figure)
    written.append(out / "curves.png")

    groups: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        if run.final(metric) is not None:
            groups[run.configuration()].append(run.final(metric))
    if groups:
        labels = sorted(groups, key=lambda k: -statistics.mean(groups[k]))
        means = [statistics.mean(groups[k]) for k in labels]
        errors = [statistics.stdev(groups[k]) if len(groups[k]) > 1 else 0.0 for k in labels]
        figure, axis = plt.subplots(figsize=(max(6, 1.2 * len(labels)), 5))
        axis.bar(range(len(labels)), means, yerr=errors, capsize=4)
        axis.set_xticks(range(len(labels)), [label.replace(" ", "\n") for label in labels], fontsize=6)
        axis.set_ylabel(f"held-out {metric} after PU-RLD (mean ± std over seeds)")
        figure.tight_layout()
        figure.savefig(out / f"final_{metric.replace('/', '_')}.png", dpi=110)
        plt.close(figure)
        written.append(out / f"final_{metric.replace('/', '_')}.png")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="purld-compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="sweep directories or run directories")
    parser.add_argument("--metric", default="accuracy", help="held-out metric to sort and plot (default: accuracy)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the PNGs (default: the first path)")
    args = parser.parse_args(argv)
    console = Console()
    runs, problems = find_runs(args.paths)
    for problem in problems:
        print(f"purld-compare: skipped {problem}", file=sys.stderr)
    if not runs:
        print(f"purld-compare: no readable run under {', '.join(map(str, args.paths))}", file=sys.stderr)
        return 2
    runs.sort(key=lambda run: (run.final(args.metric) is None, -(run.final(args.metric) or 0.0)))
    print_table(runs, args.metric, console)
    for path in plot(runs, args.metric, args.out or args.paths[0]):
        console.print(f"wrote {path}")
    return 0


def entry_point() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
