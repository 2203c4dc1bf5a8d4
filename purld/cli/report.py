"""Console tables for the entry points."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

METRIC_ORDER = ("accuracy", "oracle_score", "win_rate", "length")


def _ordered(names) -> list[str]:
    return [m for m in METRIC_ORDER if m in names] + sorted(set(names) - set(METRIC_ORDER))


def print_before_after(before: dict[str, float], after: dict[str, float], summary: dict[str, Any]) -> None:
    table = Table(title=f"held-out evaluation ({summary['choices'].get('loss')} · ranker={summary['choices'].get('ranker')})")
    table.add_column("metric")
    if before:
        table.add_column("after warm start", justify="right")
    table.add_column("after PU-RLD", justify="right")
    if before:  # eval.before=false: only the student as trained
        table.add_column("Δ", justify="right")
    for name in _ordered(before.keys() | after.keys()):
        b, a = before.get(name, float("nan")), after.get(name, float("nan"))
        table.add_row(name, *([f"{b:.4f}", f"{a:.4f}", f"{a - b:+.4f}"] if before else [f"{a:.4f}"]))
    console = Console()
    console.print(table)
    seconds = summary["seconds"]
    console.print(
        f"teacher calls {summary['teacher_calls']} · "
        + (f"anchors from the task's references {summary['reference_answers']} · " if summary.get("reference_answers") else "")
        + f"cache hits {summary['cache_hits']} · "
        + (f"judge calls {summary['judge']['calls']} · " if "calls" in summary.get("judge", {}) else "")
        + f"steps {summary['global_step']} · {seconds['total']:.1f} s · {summary['run_dir']}/summary.json"
    )


def print_metrics(title: str, metrics: dict[str, float]) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in _ordered(metrics.keys()):
        value = metrics[name]
        table.add_row(name, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console().print(table)


def print_signal(report: dict[str, Any], path) -> None:
    """purld-signal's table: one row per ranker, each figure with its bootstrap interval, best τ first."""

    def cell(figure: dict[str, float]) -> str:
        return f"{figure['mean']:.2f} [{figure['low']:.2f}, {figure['high']:.2f}]" if figure["n"] else "undefined"

    level = round(100 * report["bootstrap"]["confidence"])
    table = Table(title=f"ranking signal: {report['prompts']} prompts × {report['candidates_per_prompt']} samples, "
                        f"mean [{level} % interval]")
    for column in ("ranker", "Kendall τ", "prompts with τ", "top-1 accuracy", f"q mass on correct (τ {report['temperature']:g})", "s"):
        table.add_column(column, justify="left" if column == "ranker" else "right")
    for name, figures in sorted(report["rankers"].items(), key=lambda item: -_or_minus_inf(item[1]["kendall_tau"]["mean"])):
        table.add_row(name, cell(figures["kendall_tau"]), str(figures["kendall_tau"]["n"]), cell(figures["top1_oracle_accuracy"]),
                      cell(figures["q_mass_on_correct"]), f"{figures['seconds']:.0f}")
    console = Console()
    console.print(table)
    console.print(
        f"chance (the samples' own oracle accuracy) {cell(report['chance'])} · teacher calls {report['teacher_calls']} · "
        f"cache hits {report['cache_hits']} · rollout {report['seconds']['rollout']:.0f} s · {path}"
    )


def _or_minus_inf(value: float) -> float:
    return float("-inf") if value != value else value
