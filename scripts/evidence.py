"""Does PU-RLD work? One command that trains every comparison row and writes the table, the JSON and the plot.

    python scripts/evidence.py            # toy students: 2 tasks × 9 rows × 3 seeds + an ablation (under 60 min on 2 cores)
    python scripts/evidence.py --quick    # the same code path: 1 seed, fewer steps (under 10 min), in outputs/evidence/quick
    python scripts/evidence.py --real     # SmolLM2-135M-Instruct: the signal tables, then 2 tasks × 12 rows × 3 seeds
    python scripts/evidence.py --real --quick   # word_problems, 1 seed, 4 rows of 4 steps, 16 signal prompts (10.5 min)

Two suites share the code. The toy one (`arithmetic`, 2-digit addition with worked
steps; `sort`, sorting a few digits) trains random-init students; `--real` trains
the pretrained SmolLM2-135M-Instruct (`experiment=smollm2`, full fine-tune, its chat
template) on `word_problems` (operands 2..19) and `constraints` (one sentence under
verifiable constraints), the tasks' reference answers as anchors.

For each task one SFT warm start is trained on the anchors (`purld-train
trainer.max_steps=0`) and saved. With `--real`, the frozen warm start's samples are
first scored by every ranker against the oracle with no training (`purld-signal`,
K = 8 on `--signal-prompts` train prompts: Kendall τ, top-1 oracle accuracy, q mass
on correct candidates, bootstrap intervals). Every row then starts from that saved
student (`student=hf student.model_name_or_path=<warm start>`, `warmstart.sft_steps=0`)
with the same budget: `--steps` optimizer steps of the suite's batch of prompts, and
K sampled candidates per prompt wherever a row samples:
  1. SFT only: continued SFT on the anchors (the distillation baseline);
  2–4. PU-RLD with DPO, GRPO and LDL, each with the suite's rankers (toy: the
     `likelihood` self-ranker and `lexical`, ROUGE-L to the anchor; real: the two
     self-rankers `self_judge` and `likelihood`, and `embedding`);
  5. GRPO on the oracle reward (an upper bound; not PU-RLD);
  6. GRPO with a random ranker (a lower bound: does the ranking carry signal?).
Seeds change sampling and prompt order, not the warm start. Held-out accuracy
is measured on the task's held-out split, which nothing here tunes on. The win
rate against the anchor is judged by one fixed judge for every row (`eval.judge`),
so rows are comparable: the lexical ranker by default (an answer equal to the anchor
is a tie, ½; none of the real suite's PU-RLD rows trains on it), or with
`--judge-model DIR` a local model asked which response is better in both orders
(`judge=hf`), with the length-controlled win rate beside it. SmolLM2-135M-Instruct
is not that judge: asked about 128 warm-start answers in both orders it replied
"A" to all 243 distinct questions, a pure position bias that the two orders turn
into 128 ties (win rate exactly ½). Ranking diagnostics are means over the
training steps (Kendall τ between ranker and oracle scores, how often the
top-ranked candidate is correct, the mass of q on correct candidates).

Runs go to `<out>/runs/<task>/<row>/seed<k>/` (plain `purld-train` run
directories: `purld-compare` reads them), the signal tables to
`<out>/signal/<task>/signal.json`. A run that finished (its summary.json or
signal.json exists) is not run again, so an interrupted command picks up where it
stopped; a failed run is reported and the others go on. Results:
`<out>/evidence.json`, `<out>/evidence.md` (the tables README.md shows, also
written between its evidence markers into the file `--readme` names: README.md for the
real suite, scripts/README.md for the toy one), and
`<out>/accuracy_curves.png` (held-out accuracy and, for ranked rows, Kendall τ over
the steps, mean over seeds).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


sys.path.insert(0, str(Path(__file__).resolve().parent))
from evidence_report import (  # noqa: E402, F401  (also what the tests and vs_trl_report.py read here)
    CRITERION,
    LEXICAL_JUDGE,
    criterion,
    criterion_lines,
    plot_curves,
    render,
    seed_result,
    summarize,
    write_readme,
)
from evidence_suites import (  # noqa: E402, F401  (also what the tests and vs_trl_report.py read here)
    JUDGE_REFERENCE_LAST,
    JUDGE_SAME_NUMBER,
    REAL,
    Row,
    SIGNAL_ABLATION_PROMPTS,
    SIGNAL_CANDIDATES,
    SUITES,
    SignalVariant,
    Suite,
    TOY,
    comparison_rows,
    lexical_judge,
    llm_judge,
    real_ablation_rows,
    real_signal_ablation,
)


@dataclass
class Settings:
    suite: Suite
    out: Path
    seeds: list[int]
    steps: int
    warmstart_steps: int
    num_candidates: int
    temperature: float
    eval_prompts: int
    eval_every: int
    signal_prompts: int  # train prompts of each task's signal table (0: none)
    judge_model: str | None  # a local model directory that judges the win rate (judge=hf); None: the lexical ranker
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
        *(llm_judge(s.judge_model, s.out) if s.judge_model else lexical_judge()),
        "checkpointing.enabled=false",
        "samples.every_n_steps=0",
    ]


def run_purld(entry_point: str, result: str, run_dir: Path, overrides: list[str], threads: int) -> dict[str, Any]:
    """One `purld-<entry_point>` in its own process; the JSON it writes (`result` in its run directory), or an error
    naming the run and the last lines it printed. A run whose result exists is not run again."""
    result_path = run_dir / result
    if result_path.exists():
        return json.loads(result_path.read_text())
    if run_dir.exists():  # a run that was cut short: start it again from nothing
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled"}
    command = [sys.executable, "-m", f"purld.cli.{entry_point}", *overrides, f"hydra.run.dir={run_dir}"]
    with (run_dir / "stdout.log").open("w") as log:
        process = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    if process.returncode != 0 or not result_path.exists():
        tail = (run_dir / "stdout.log").read_text().strip().splitlines()[-5:]
        raise RuntimeError(f"{run_dir}: purld-{entry_point} exited {process.returncode}:\n  " + "\n  ".join(tail))
    return json.loads(result_path.read_text())


def run_purld_train(run_dir: Path, overrides: list[str], threads: int) -> dict[str, Any]:
    return run_purld("train", "summary.json", run_dir, overrides, threads)


def run_purld_signal(run_dir: Path, overrides: list[str], threads: int) -> dict[str, Any]:
    return run_purld("signal", "signal.json", run_dir, overrides, threads)


def warm_start(s: Settings, task: str) -> Path:
    """The task's shared SFT warm start: trained once, saved as a student directory."""
    run_dir = s.out / "runs" / task / "warmstart"
    overrides = [*s.suite.tasks[task], *common_overrides(s), "trainer.max_steps=0", f"warmstart.sft_steps={s.warmstart_steps}", "seed=0"]
    run_purld_train(run_dir, overrides, threads=os.cpu_count() or 1)
    return run_dir / "student"


def signal_overrides(s: Settings, task: str, student: Path, num_prompts: int | None = None) -> list[str]:
    """`purld-signal` on the frozen warm start: every ranker that applies scores the same K = 8 samples."""
    return [
        *s.suite.tasks[task],
        f"anchors.cache_path={s.out / 'anchor_cache.sqlite'}",
        f"checkpoint={student}",
        f"rollout.num_candidates={SIGNAL_CANDIDATES}",
        f"rollout.temperature={s.temperature}",
        f"signal.num_prompts={num_prompts or s.signal_prompts}",
        "seed=0",
    ]


def signal_variant_overrides(s: Settings, task: str, student: Path, variant: SignalVariant) -> list[str]:
    prompts = min(SIGNAL_ABLATION_PROMPTS, s.signal_prompts)
    return [*signal_overrides(s, task, student, prompts), f"ranker={variant.ranker}", *variant.overrides, f"signal.rankers=[{variant.ranker}]"]


def row_overrides(s: Settings, task: str, row: Row, seed: int, student: Path) -> list[str]:
    return [
        *s.suite.tasks[task],
        *common_overrides(s),
        "student=hf",
        f"student.model_name_or_path={student}",
        "warmstart.sft_steps=0",
        "eval.before=false",  # the warm start's own evaluation is every row's "before"
        f"trainer.max_steps={s.steps}",
        f"rollout.num_candidates={s.num_candidates}",
        f"rollout.temperature={s.temperature}",
        f"eval.every_n_steps={s.eval_every}",
        f"seed={seed}",
        *row.overrides,  # last: an ablation row's own K or temperature wins
    ]


# ------------------------------------------------------------------------ reading


def parse_args(argv: list[str] | None) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", action="store_true", help="the SmolLM2-135M-Instruct suite (default: the toy students)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quick", action="store_true", help="one seed, fewer steps, no ablation: checks the code path")
    parser.add_argument("--seeds")
    parser.add_argument("--steps", type=int, help="optimizer steps of every row after the warm start")
    parser.add_argument("--warmstart-steps", type=int)
    parser.add_argument("--num-candidates", type=int, help="K for every row that samples")
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--eval-prompts", type=int)
    parser.add_argument("--eval-every", type=int, help="held-out accuracy every N steps, for the plot")
    parser.add_argument("--signal-prompts", type=int, help="train prompts of each task's signal table (the real suite)")
    parser.add_argument("--judge-model", default=None, help="a local model directory as the fixed judge of the win rate, both "
                        "orders (judge=hf); default: the lexical ranker (ROUGE-L to the anchor; equal to it = ½)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (each gets cores / jobs threads)")
    parser.add_argument("--tasks", help="comma-separated (default: the suite's)")
    parser.add_argument("--rows", default=None, help="comma-separated row names (default: all)")
    parser.add_argument("--no-ablation", action="store_true")
    parser.add_argument("--readme", type=Path, default=None, help="also write the tables into this README's evidence block")
    parser.add_argument("--render", type=Path, default=None, help="print the tables of this evidence.json (runs nothing); with "
                        "--readme, write them into its block")
    known, _ = parser.parse_known_args(argv)
    suite = REAL if known.real else TOY
    parser.set_defaults(**{"tasks": ",".join(suite.tasks), **suite.defaults, **(suite.quick if known.quick else {})})
    args = parser.parse_args(argv)
    tasks = args.tasks.split(",")
    unknown = [t for t in tasks if t not in suite.tasks]
    if unknown:
        parser.error(f"--tasks: unknown {unknown}; the {suite.name} suite's: {', '.join(suite.tasks)}")
    settings = Settings(
        suite=suite, out=args.out, seeds=[int(s) for s in args.seeds.split(",")], steps=args.steps,
        warmstart_steps=args.warmstart_steps, num_candidates=args.num_candidates, temperature=args.temperature,
        eval_prompts=args.eval_prompts, eval_every=args.eval_every, signal_prompts=args.signal_prompts if suite.signal else 0, judge_model=args.judge_model,
        jobs=args.jobs, tasks=tasks, ablation_task=None if args.no_ablation else tasks[0],
        rows=args.rows.split(",") if args.rows else None,
    )
    return settings, args


RUN_SHAPING = ("steps", "warmstart_steps", "num_candidates", "temperature", "eval_prompts", "eval_every", "signal_prompts", "judge_model")


def check_same_settings(s: Settings) -> None:
    """Finished runs are reused, so an output directory must hold one setting of what shapes a run."""
    path = s.out / "settings.json"
    current = {"suite": s.suite.name, **{key: getattr(s, key) for key in RUN_SHAPING}}
    if path.exists():
        saved = json.loads(path.read_text())
        saved.setdefault("suite", "toy")  # written before there were two suites
        saved.setdefault("signal_prompts", 0)
        saved.setdefault("judge_model", None)
        differing = [f"{key}: {saved.get(key)} there, {value} now" for key, value in current.items() if saved.get(key) != value]
        if differing:
            raise SystemExit(f"{path}: its runs were made with other settings ({'; '.join(differing)}); "
                             "pass another --out, or the same settings to reuse them")
    path.write_text(json.dumps(current, indent=2))


def render_command(path: Path) -> str:
    return f"python scripts/evidence.py --render {path}"


def main(argv: list[str] | None = None) -> int:
    s, args = parse_args(argv)
    if args.render:
        report = json.loads(args.render.read_text())
        tables = render(report)
        if args.readme:
            write_readme(args.readme, tables, render_command(args.render), SUITES[report.get("suite", "toy")].markers)
        print(tables)
        return 0
    s.out.mkdir(parents=True, exist_ok=True)
    check_same_settings(s)
    threads = max(1, (os.cpu_count() or 1) // s.jobs)
    plan: list[tuple[str, Row]] = [(task, row) for task in s.tasks for row in comparison_rows(s.suite.rankers)]
    if s.ablation_task:
        plan += [(s.ablation_task, row) for row in s.suite.ablation(s.num_candidates, s.temperature)]
    if s.rows:
        plan = [(task, row) for task, row in plan if row.name in s.rows]

    students, warm_metrics = {}, {}
    for task in s.tasks:
        print(f"[{time.perf_counter() - s.started:6.0f} s] {task}: warm start ({s.warmstart_steps} SFT steps)", flush=True)
        try:
            students[task] = warm_start(s, task)
        except RuntimeError as error:  # every row starts from it: nothing else of this task can run
            print(f"FAILED {error}\nfix it and run the same command again (finished runs are kept)", file=sys.stderr)
            return 1
        warm_summary = json.loads((students[task].parent / "summary.json").read_text())
        warm_metrics[task] = warm_summary["eval"]["before"]

    jobs = [(task, row, seed) for task, row in plan for seed in s.seeds]
    reused = sum((s.out / "runs" / task / row.name / f"seed{seed}" / "summary.json").exists() for task, row, seed in jobs)
    results: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    signals: dict[str, dict[str, Any]] = {}
    signal_ablation: dict[str, dict[str, Any]] = {}
    variants = s.suite.signal_ablation() if s.ablation_task and s.signal_prompts else []
    failures: list[str] = []

    def elapsed() -> str:
        return f"[{time.perf_counter() - s.started:6.0f} s]"

    def run_signal(task: str) -> None:
        try:
            signals[task] = run_purld_signal(s.out / "signal" / task, signal_overrides(s, task, students[task]), threads)
        except RuntimeError as error:
            failures.append(str(error))
            print(f"FAILED {error}", file=sys.stderr, flush=True)
            return
        best = max(signals[task]["rankers"].items(), key=lambda item: item[1]["kendall_tau"]["mean"] if item[1]["kendall_tau"]["n"] else -2)
        print(f"{elapsed()} {task} signal: best Kendall τ {best[1]['kendall_tau']['mean']:.2f} ({best[0]})", flush=True)

    def run_signal_variant(variant: SignalVariant) -> None:
        task = s.ablation_task
        try:
            report = run_purld_signal(s.out / "signal" / task / "ablation" / variant.name,
                                      signal_variant_overrides(s, task, students[task], variant), threads)
        except RuntimeError as error:
            failures.append(str(error))
            print(f"FAILED {error}", file=sys.stderr, flush=True)
            return
        figures = report["rankers"][variant.ranker]
        signal_ablation[variant.name] = {"task": task, "ranker": variant.ranker, "ablation": variant.ablation,
                                         "overrides": list(variant.overrides), "prompts": report["prompts"],
                                         "chance": report["chance"], **figures}
        print(f"{elapsed()} {task} signal ablation {variant.name}: Kendall τ {figures['kendall_tau']['mean']:.2f}", flush=True)

    def run(job: tuple[str, Row, int]) -> None:
        task, row, seed = job
        run_dir = s.out / "runs" / task / row.name / f"seed{seed}"
        try:
            summary = run_purld_train(run_dir, row_overrides(s, task, row, seed, students[task]), threads)
        except RuntimeError as error:
            failures.append(str(error))
            print(f"FAILED {error}", file=sys.stderr, flush=True)
            return
        results.setdefault((task, row.name), {})[seed] = seed_result(run_dir, summary, warm_metrics[task])
        accuracy = summary["eval"]["after"].get("accuracy")
        print(f"{elapsed()} {task} {row.name} seed {seed}: held-out accuracy {accuracy:.3f}", flush=True)

    def dispatch(job: str | tuple[str, Row, int] | SignalVariant) -> None:
        if isinstance(job, str):
            run_signal(job)
        elif isinstance(job, SignalVariant):
            run_signal_variant(job)
        else:
            run(job)

    with ThreadPoolExecutor(max_workers=s.jobs) as pool:  # the signal tables first: they need no training
        list(pool.map(dispatch, [*(s.tasks if s.signal_prompts else []), *jobs, *variants]))

    entries = [summarize(task, row, results[(task, row.name)]) for task, row in plan if (task, row.name) in results]
    signals = {task: signals[task] for task in s.tasks if task in signals}
    judge = f"`{s.judge_model}` asked which response is better, in both orders (judge=hf)" if s.judge_model else LEXICAL_JUDGE
    report = {
        "command": " ".join(["python", "scripts/evidence.py", *(argv if argv is not None else sys.argv[1:])]),
        "suite": s.suite.name,
        "judge": judge,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(s).items() if k not in ("started", "suite")},
        "warm_start_accuracy": {task: metrics.get("accuracy") for task, metrics in warm_metrics.items()},
        "warm_start": warm_metrics,
        "signal": {task: {key: value for key, value in report.items() if key != "examples"} for task, report in signals.items()},
        "rows": entries,
        "signal_ablation": [signal_ablation[v.name] for v in variants if v.name in signal_ablation],
        "criterion": {"text": CRITERION, "verdicts": criterion(entries)},
        "failed_runs": failures,
        "wall_minutes": round((time.perf_counter() - s.started) / 60, 1),  # this invocation; finished runs were reused
        "runs_reused": reused,
    }
    previous = s.out / "evidence.json"
    earlier = json.loads(previous.read_text()).get("invocations", []) if previous.exists() else []
    report["invocations"] = [*earlier, {"wall_minutes": report["wall_minutes"], "runs": len(jobs), "runs_reused": reused,
                                        "failed": len(failures)}]
    previous.write_text(json.dumps(report, indent=2))
    tables = render(report)
    (s.out / "evidence.md").write_text(tables + "\n")
    if entries:
        plot_curves(entries, s.out / "accuracy_curves.png")
    if args.readme:
        write_readme(args.readme, tables, render_command(previous), s.suite.markers)
    print(tables)
    print(f"{report['wall_minutes']} min · {len(jobs) - len(failures)}/{len(jobs)} runs ({reused} reused) · → {s.out / 'evidence.json'}")
    if failures:
        print(f"{len(failures)} run(s) failed; run the same command again to retry them (finished runs are kept)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
