"""Does PU-RLD work? One command that trains every comparison row and writes the table, the JSON and the plot.

    python scripts/evidence.py            # 2 tasks × 9 rows × 3 seeds + an ablation (under 60 min on 2 cores)
    python scripts/evidence.py --quick    # the same code path: 1 seed, fewer steps (under 10 min), in outputs/evidence/quick

For each task (`arithmetic`, 2-digit addition with worked steps; `sort`, sorting a
few digits) one SFT warm start is trained on the anchors (`purld-train
trainer.max_steps=0`) and saved. Every row then starts from that saved student
(`student=hf student.model_name_or_path=<warm start>`, `warmstart.sft_steps=0`)
with the same budget: `--steps` optimizer steps of 8 prompts, and K sampled
candidates per prompt wherever a row samples:
  1. SFT only: continued SFT on the anchors (the distillation baseline);
  2–4. PU-RLD with DPO, GRPO and LDL, each with the `likelihood` self-ranker
     and the `lexical` ranker (ROUGE-L to the anchor);
  5. GRPO on the oracle reward (an upper bound; not PU-RLD);
  6. GRPO with a random ranker (a lower bound: does the ranking carry signal?).
Seeds change sampling and prompt order, not the warm start. Held-out accuracy
is measured on the task's held-out split, which nothing here tunes on; the
win rate against the anchor is judged by the lexical ranker for every row
(`eval.judge`), so rows are comparable (an answer equal to the anchor is a tie:
½). Ranking diagnostics are means over the training steps (Kendall τ between
ranker and oracle scores, how often the top-ranked candidate is correct, the
mass of q on correct candidates).

Runs go to `<out>/runs/<task>/<row>/seed<k>/` (plain `purld-train` run
directories: `purld-compare` reads them). A run that finished (its
summary.json exists) is not run again, so an interrupted command picks up
where it stopped; a failed run is reported and the others go on. Results:
`<out>/evidence.json`, `<out>/evidence.md` (the table README.md shows, also
written into README.md between its evidence markers with `--readme`), and
`<out>/accuracy_curves.png` (held-out accuracy over the steps, mean over seeds).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from purld.cli.compare import read_curves

TASKS = {"arithmetic": ["task=arithmetic"], "sort": ["task=sort"]}
PU_RLD_RANKERS = ("likelihood", "lexical")  # a self-ranker and one other
DIAGNOSTICS = ("rank/kendall_tau", "rank/top1_oracle_accuracy", "rank/q_mass_on_correct")
FINAL_METRICS = ("accuracy", "oracle_score", "win_rate", "length")
README_MARKERS = ("<!-- evidence:start -->", "<!-- evidence:end -->")


@dataclass(frozen=True)
class Row:
    name: str  # the run directory's name
    method: str  # what the table calls it
    ranker: str | None
    overrides: tuple[str, ...]
    ablation: str | None = None  # what this row changes from its base row, for the ablation table


def comparison_rows() -> list[Row]:
    rows = [Row("sft", "SFT only (continued)", None, ("loss=sft",))]
    for loss, label in (("dpo", "PU-RLD + DPO"), ("grpo", "PU-RLD + GRPO"), ("ldl", "PU-RLD + LDL")):
        rows += [Row(f"{loss}-{ranker}", label, ranker, (f"loss={loss}", f"ranker={ranker}")) for ranker in PU_RLD_RANKERS]
    rows.append(Row("grpo-oracle", "GRPO, oracle reward (upper bound)", "oracle", ("loss=grpo", "ranker=oracle", "ranker.baseline=true")))
    rows.append(Row("grpo-random", "GRPO, random ranker (lower bound)", "random", ("loss=grpo", "ranker=random")))
    return rows


def ablation_rows(num_candidates: int, temperature: float) -> list[Row]:
    """What might move PU-RLD GRPO against SFT: the self-ranker's judge, K, sampling temperature, the KL weight,
    the learning rate, τ (each changes one thing of the lexical or likelihood GRPO row)."""
    base = ("loss=grpo", "ranker=lexical")
    return [
        Row("grpo-likelihood-frozen", "PU-RLD + GRPO", "likelihood", ("loss=grpo", "ranker=likelihood", "ranker.judge_model=reference"),
            "likelihood ranker read by the frozen warm start (vs the current policy)"),
        Row(f"grpo-lexical-K{2 * num_candidates}", "PU-RLD + GRPO", "lexical", (*base, f"rollout.num_candidates={2 * num_candidates}"),
            f"K = {2 * num_candidates} (vs {num_candidates})"),
        Row("grpo-lexical-T1.0", "PU-RLD + GRPO", "lexical", (*base, "rollout.temperature=1.0"), f"sampling temperature 1.0 (vs {temperature})"),
        Row("grpo-lexical-beta0", "PU-RLD + GRPO", "lexical", (*base, "loss.beta=0.0"), "β = 0, no KL to the reference (vs 0.04)"),
        Row("grpo-lexical-lr1e-4", "PU-RLD + GRPO", "lexical", (*base, "optimizer.lr=1.0e-4"), "learning rate 1e-4 (vs 3e-5)"),
        Row("grpo-lexical-tau1.0", "PU-RLD + GRPO", "lexical", (*base, "loss.preferences.temperature=1.0"),
            "τ = 1.0 in q = softmax(s/τ) (vs 0.1)"),
    ]


@dataclass
class Settings:
    out: Path
    seeds: list[int]
    steps: int
    warmstart_steps: int
    num_candidates: int
    temperature: float
    eval_prompts: int
    eval_every: int
    jobs: int
    tasks: list[str]
    ablation_task: str | None
    rows: list[str] | None = None  # only these rows (tests, partial reruns)
    started: float = field(default_factory=time.perf_counter)


# ------------------------------------------------------------------------ running
def common_overrides(s: Settings) -> list[str]:
    return [
        "logger=csv",
        f"anchors.cache_path={s.out / 'anchor_cache.sqlite'}",
        f"eval.num_prompts={s.eval_prompts}",
        "eval.judge={_target_:purld.ranking.LexicalRanker}",
        "checkpointing.enabled=false",
        "samples.every_n_steps=0",
    ]


def run_purld_train(run_dir: Path, overrides: list[str], threads: int) -> dict[str, Any]:
    """One `purld-train` in its own process; its summary, or an error naming the run and the last lines it printed."""
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        return json.loads(summary_path.read_text())
    if run_dir.exists():  # a run that was cut short: start it again from nothing
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled"}
    command = [sys.executable, "-m", "purld.cli.train", *overrides, f"hydra.run.dir={run_dir}"]
    with (run_dir / "stdout.log").open("w") as log:
        process = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    if process.returncode != 0 or not summary_path.exists():
        tail = (run_dir / "stdout.log").read_text().strip().splitlines()[-5:]
        raise RuntimeError(f"{run_dir}: purld-train exited {process.returncode}:\n  " + "\n  ".join(tail))
    return json.loads(summary_path.read_text())


def warm_start(s: Settings, task: str) -> Path:
    """The task's shared SFT warm start: trained once, saved as a student directory."""
    run_dir = s.out / "runs" / task / "warmstart"
    overrides = [*TASKS[task], *common_overrides(s), "trainer.max_steps=0", f"warmstart.sft_steps={s.warmstart_steps}", "seed=0"]
    run_purld_train(run_dir, overrides, threads=os.cpu_count() or 1)
    return run_dir / "student"


def row_overrides(s: Settings, task: str, row: Row, seed: int, student: Path) -> list[str]:
    return [
        *TASKS[task],
        *common_overrides(s),
        "student=hf",
        f"student.model_name_or_path={student}",
        "warmstart.sft_steps=0",
        f"trainer.max_steps={s.steps}",
        f"rollout.num_candidates={s.num_candidates}",
        f"rollout.temperature={s.temperature}",
        f"eval.every_n_steps={s.eval_every}",
        f"seed={seed}",
        *row.overrides,  # last: an ablation row's own K or temperature wins
    ]


# ------------------------------------------------------------------------ reading
def diagnostics(run_dir: Path) -> dict[str, float]:
    """Means over the training steps of the ranking diagnostics that this run logged, over the steps where each
    was defined (`read_curves` leaves out the NaN steps), and how many those were (`<name>/steps_defined`)."""
    curves = read_curves(run_dir / "logs" / "purld" / "metrics.csv", DIAGNOSTICS)
    means = {name: statistics.mean(v for _, v in points) for name, points in curves.items() if points}
    return {**means, **{f"{name}/steps_defined": len(curves.get(name, [])) for name in DIAGNOSTICS}}


def accuracy_curve(run_dir: Path, before: float | None) -> list[tuple[int, float]]:
    """(optimizer steps done, held-out accuracy). Lightning logs a validation run with the index of the batch that
    triggered it, one less than the steps done."""
    points = read_curves(run_dir / "logs" / "purld" / "metrics.csv", ("eval/accuracy",)).get("eval/accuracy", [])
    return ([(0, before)] if before is not None else []) + [(step + 1, value) for step, value in points]


def seed_result(run_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    after, before = summary["eval"]["after"], summary["eval"]["before"]
    result: dict[str, Any] = {name: after.get(name) for name in FINAL_METRICS}
    result["accuracy_before"] = before.get("accuracy")
    result.update(diagnostics(run_dir))
    final_step = summary.get("global_step")
    curve = accuracy_curve(run_dir, before.get("accuracy"))
    if final_step and (not curve or curve[-1][0] != final_step):
        curve.append((final_step, after.get("accuracy")))
    result["accuracy_curve"] = curve
    result["seconds"] = summary.get("seconds", {}).get("total")
    return result


def mean_std(values: list[float]) -> dict[str, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None}
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else None}


def summarize(task: str, row: Row, per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    names = [*FINAL_METRICS, *DIAGNOSTICS]
    return {
        "task": task,
        "row": row.name,
        "method": row.method,
        "ranker": row.ranker,
        "ablation": row.ablation,
        "overrides": list(row.overrides),
        "seeds": {str(seed): result for seed, result in per_seed.items()},
        **{name: mean_std([result.get(name) for result in per_seed.values()]) for name in names},
    }


# ------------------------------------------------------------------------ reporting
def cell(stat: dict[str, float | None], percent: bool = False, digits: int = 2) -> str:
    if stat["mean"] is None:
        return "—"
    scale, unit = (100.0, "") if percent else (1.0, "")
    text = f"{stat['mean'] * scale:.1f}" if percent else f"{stat['mean']:.{digits}f}"
    if stat["std"] is not None:
        text += f" ± {stat['std'] * scale:.1f}" if percent else f" ± {stat['std']:.{digits}f}"
    return text + unit


def markdown_table(entries: list[dict[str, Any]], warm: dict[str, float | None]) -> str:
    lines = [
        "| task | method | ranker | held-out accuracy % | win rate vs anchor % | mean length | Kendall τ | top-1 correct % | q mass on correct |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for task in dict.fromkeys(e["task"] for e in entries):
        if warm.get(task) is not None:
            lines.append(f"| {task} | warm start (shared) | | {warm[task] * 100:.1f} | | | | | |")
        for e in (e for e in entries if e["task"] == task and not e["ablation"]):
            lines.append(
                f"| {task} | {e['method']} | {e['ranker'] or '—'} | {cell(e['accuracy'], True)} | {cell(e['win_rate'], True)} "
                f"| {cell(e['length'], digits=1)} | {cell(e['rank/kendall_tau'])} | {cell(e['rank/top1_oracle_accuracy'], True)} "
                f"| {cell(e['rank/q_mass_on_correct'])} |"
            )
    ablations = [e for e in entries if e["ablation"]]
    if ablations:
        lines += ["", "| task | ablation of PU-RLD + GRPO | ranker | held-out accuracy % | Kendall τ | top-1 correct % |",
                  "| --- | --- | --- | --- | --- | --- |"]
        lines += [
            f"| {e['task']} | {e['ablation']} | {e['ranker']} | {cell(e['accuracy'], True)} | {cell(e['rank/kendall_tau'])} "
            f"| {cell(e['rank/top1_oracle_accuracy'], True)} |"
            for e in ablations
        ]
    return "\n".join(lines)


def plot_curves(entries: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(e["task"] for e in entries))
    figure, axes = plt.subplots(1, len(tasks), figsize=(7 * len(tasks), 5), squeeze=False)
    for axis, task in zip(axes[0], tasks):
        for e in (e for e in entries if e["task"] == task and not e["ablation"]):
            by_step: dict[int, list[float]] = {}
            for result in e["seeds"].values():
                for step, value in result["accuracy_curve"]:
                    by_step.setdefault(step, []).append(value)
            steps = sorted(by_step)
            style = "--" if e["ranker"] in ("oracle", "random") or e["row"] == "sft" else "-"
            label = f"{e['method']} ({e['ranker']})" if e["ranker"] else e["method"]
            axis.plot(steps, [100 * statistics.mean(by_step[s]) for s in steps], style, label=label, linewidth=1.3)
        axis.set_title(f"{task}: held-out accuracy (mean over seeds)")
        axis.set_xlabel("optimizer steps after the warm start")
        axis.set_ylabel("accuracy %")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_readme(readme: Path, table: str, command: str, markers: tuple[str, str] = README_MARKERS) -> None:
    text = readme.read_text()
    start, end = markers
    if start not in text or end not in text:
        raise SystemExit(f"{readme}: no {start} … {end} block to replace")
    before, rest = text.split(start, 1)
    after = rest.split(end, 1)[1]
    readme.write_text(f"{before}{start}\n<!-- written by `{command}`; do not edit by hand -->\n\n{table}\n\n{end}{after}")


# ------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("outputs/evidence"))
    parser.add_argument("--quick", action="store_true", help="1 seed, 40 steps, no ablation: checks the code path (under 10 min)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps of every row after the warm start")
    parser.add_argument("--warmstart-steps", type=int, default=500)
    parser.add_argument("--num-candidates", type=int, default=8, help="K for every row that samples")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--eval-prompts", type=int, default=512)
    parser.add_argument("--eval-every", type=int, default=25, help="held-out accuracy every N steps, for the plot")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (each gets cores / jobs threads)")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--rows", default=None, help="comma-separated row names (default: all)")
    parser.add_argument("--no-ablation", action="store_true")
    parser.add_argument("--readme", type=Path, default=None, help="also write the table into this README's evidence block")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.steps, args.eval_prompts, args.eval_every, args.no_ablation = "0", 40, 256, 20, True
        args.out = args.out if args.out != parser.get_default("out") else Path("outputs/evidence/quick")
    tasks = args.tasks.split(",")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        parser.error(f"--tasks: unknown {unknown}; known: {', '.join(TASKS)}")
    settings = Settings(
        out=args.out, seeds=[int(s) for s in args.seeds.split(",")], steps=args.steps, warmstart_steps=args.warmstart_steps,
        num_candidates=args.num_candidates, temperature=args.temperature, eval_prompts=args.eval_prompts, eval_every=args.eval_every,
        jobs=args.jobs, tasks=tasks, ablation_task=None if args.no_ablation else tasks[0],
        rows=args.rows.split(",") if args.rows else None,
    )
    return settings, args


RUN_SHAPING = ("steps", "warmstart_steps", "num_candidates", "temperature", "eval_prompts", "eval_every")


def check_same_settings(s: Settings) -> None:
    """Finished runs are reused, so an output directory must hold one setting of what shapes a run."""
    path = s.out / "settings.json"
    current = {key: getattr(s, key) for key in RUN_SHAPING}
    if path.exists():
        saved = json.loads(path.read_text())
        differing = [f"{key}: {saved.get(key)} there, {value} now" for key, value in current.items() if saved.get(key) != value]
        if differing:
            raise SystemExit(f"{path}: its runs were made with other settings ({'; '.join(differing)}); "
                             "pass another --out, or the same settings to reuse them")
    path.write_text(json.dumps(current, indent=2))


def main(argv: list[str] | None = None) -> int:
    s, args = parse_args(argv)
    s.out.mkdir(parents=True, exist_ok=True)
    check_same_settings(s)
    threads = max(1, (os.cpu_count() or 1) // s.jobs)
    plan: list[tuple[str, Row]] = [(task, row) for task in s.tasks for row in comparison_rows()]
    if s.ablation_task:
        plan += [(s.ablation_task, row) for row in ablation_rows(s.num_candidates, s.temperature)]
    if s.rows:
        plan = [(task, row) for task, row in plan if row.name in s.rows]

    students, warm_accuracy = {}, {}
    for task in s.tasks:
        print(f"[{time.perf_counter() - s.started:6.0f} s] {task}: warm start ({s.warmstart_steps} SFT steps)", flush=True)
        students[task] = warm_start(s, task)
        warm_summary = json.loads((students[task].parent / "summary.json").read_text())
        warm_accuracy[task] = warm_summary["eval"]["before"].get("accuracy")

    jobs = [(task, row, seed) for task, row in plan for seed in s.seeds]
    reused = sum((s.out / "runs" / task / row.name / f"seed{seed}" / "summary.json").exists() for task, row, seed in jobs)
    results: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    failures: list[str] = []

    def run(job: tuple[str, Row, int]) -> None:
        task, row, seed = job
        run_dir = s.out / "runs" / task / row.name / f"seed{seed}"
        try:
            summary = run_purld_train(run_dir, row_overrides(s, task, row, seed, students[task]), threads)
        except RuntimeError as error:
            failures.append(str(error))
            print(f"FAILED {error}", file=sys.stderr, flush=True)
            return
        results.setdefault((task, row.name), {})[seed] = seed_result(run_dir, summary)
        accuracy = summary["eval"]["after"].get("accuracy")
        print(f"[{time.perf_counter() - s.started:6.0f} s] {task} {row.name} seed {seed}: held-out accuracy {accuracy:.3f}", flush=True)

    with ThreadPoolExecutor(max_workers=s.jobs) as pool:
        list(pool.map(run, jobs))

    entries = [summarize(task, row, results[(task, row.name)]) for task, row in plan if (task, row.name) in results]
    table = markdown_table(entries, warm_accuracy)
    command = "python scripts/evidence.py" + (" --quick" if args.quick else "")
    report = {
        "command": " ".join(["python", "scripts/evidence.py", *(argv if argv is not None else sys.argv[1:])]),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(s).items() if k != "started"},
        "warm_start_accuracy": warm_accuracy,
        "rows": entries,
        "failed_runs": failures,
        "wall_minutes": round((time.perf_counter() - s.started) / 60, 1),  # this invocation; finished runs were reused
        "runs_reused": reused,
    }
    previous = s.out / "evidence.json"
    earlier = json.loads(previous.read_text()).get("invocations", []) if previous.exists() else []
    report["invocations"] = [*earlier, {"wall_minutes": report["wall_minutes"], "runs": len(jobs), "runs_reused": reused,
                                        "failed": len(failures)}]
    previous.write_text(json.dumps(report, indent=2))
    (s.out / "evidence.md").write_text(table + "\n")
    plot_curves(entries, s.out / "accuracy_curves.png")
    if args.readme:
        write_readme(args.readme, table, command)
    print(table)
    print(f"{report['wall_minutes']} min · {len(jobs) - len(failures)}/{len(jobs)} runs ({reused} reused) · → {s.out / 'evidence.json'}")
    if failures:
        print(f"{len(failures)} run(s) failed; run the same command again to retry them (finished runs are kept)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
