"""Each of purld's speed and memory mechanisms on the real student, on versus off, in one run.

    python scripts/bench_mechanisms.py --out outputs/bench/mechanisms_smollm2.json
    python scripts/bench_mechanisms.py --render outputs/bench/mechanisms_smollm2.json   # the table again

Every variant is one `purld-train` GRPO run of SmolLM2-135M-Instruct (`experiment=smollm2`, full fine-tune,
its chat template) on GSM8K prompts, ranked by `self_judge` (the ranker that reads the most text): 4 prompts ×
K 4 × 64 new tokens, EOS suppressed (every variant does the same work), `--steps` steps of which the first is
warm-up. A variant runs in its own process, so its peak RSS is its own (`os.wait4`). The variants run in
`--rounds` interleaved rounds (odd rounds in reverse order); a variant's figure is its median over steps and
rounds, and each is read against the `default` variant of the same run. The machine's load outside the
benchmark is recorded per variant (cores used by other processes while it ran).

What a variant turns off, and how:
- `checkpointed_prompts_repeated`: under `student.gradient_checkpointing=full`, each prompt repeated K times
  instead of its KV cache shared through the checkpointed layers' replay (`ReadOnlyPrefixCache.replaying`),
  against `checkpointed` (no config key: the benchmark patches `prompts_can_be_shared`);
- `no_lean_activations`: `student.lean_activations=false`;
- `micro_batch`: `data.micro_batch_size=8` (the update in two passes of precomputed gradients);
- `generate_static_cache`: `rollout.cache_implementation=static`, and `static_decoder`: `rollout=static` (purld's
  own decoder), both against the default dynamic cache.
- `keep_freed_memory`: `release_freed_memory=false` (glibc keeps freed heap memory, its default), against
  `default`, and the same against LoRA (`lora`: `student=smollm2_lora`), DPO (`dpo`: `loss=dpo`, the pairs from
  the same ranking) and LoRA DPO (`dpo_lora`); measured in outputs/bench/mechanisms_smollm2_freed_memory.json.
  `mmap_threshold` and `lora_mmap_threshold`: glibc's mmap threshold fixed at 1 MB instead (the benchmark calls
  `mallopt(M_MMAP_THRESHOLD, 1 MB)`, what `MALLOC_MMAP_THRESHOLD_=1048576` sets), with `release_freed_memory=false`.
  `release_while_decoding`: `release_freed_memory`'s setting kept through the rollout and the ranking too (the
  benchmark turns `purld.memory.heap_while_decoding` off), as it was before that phase-wise setting.
- `--eval-prompts N` evaluates N held-out GSM8K prompts (greedy) before and after the steps: the `eval s` column,
  both evaluations' seconds. Commit edbc1cd had the variant `release_while_evaluating`, against the evaluation
  under `heap_while_decoding` too: it did not pay, and the evaluation stays as it was (scripts/README.md).

The committed report was measured when `student.gradient_checkpointing` defaulted to false; it is `full` for the
pretrained students since (0.91 of the step and 0.73 of the peak RSS there, the `checkpointed` row), so a new
run's `checkpointed` variant is its `default`, and `student.gradient_checkpointing=false` is the one to add.

The committed report (outputs/bench/mechanisms_smollm2.json) also holds two variants of mechanisms that it
measured as costing rather than saving, and that were removed after it (commit 0613976 has them):
`no_last_position` (the last decoder layer run at the last position only, `rollout/last_position.py`: the step
0.949 of the default without it) and `no_common_head` (`split_common_head`, tokens every prefix starts with run
once for the batch: 0.965, peak RSS 1.015).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quickstart import machine_busy_seconds  # noqa: E402

VARIANTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {  # name: (patches, overrides)
    "default": ((), ()),
    "no_lean_activations": ((), ("student.lean_activations=false",)),
    "micro_batch": ((), ("data.micro_batch_size=8",)),
    "checkpointed": ((), ("student.gradient_checkpointing=full",)),
    "checkpointed_prompts_repeated": (("prompt_sharing_under_checkpointing",), ("student.gradient_checkpointing=full",)),
    "generate_static_cache": ((), ("rollout.cache_implementation=static",)),
    "static_decoder": ((), ("rollout=static", "rollout.num_candidates=4", "rollout.max_new_tokens=64",
                            "rollout.temperature=0.7", "rollout.suppress_eos=true")),
    "keep_freed_memory": ((), ("release_freed_memory=false",)),
    "lora": ((), ("student=smollm2_lora",)),
    "lora_keep_freed_memory": ((), ("student=smollm2_lora", "release_freed_memory=false")),
    "dpo": ((), ("loss=dpo",)),
    "dpo_keep_freed_memory": ((), ("loss=dpo", "release_freed_memory=false")),
    "dpo_lora": ((), ("loss=dpo", "student=smollm2_lora")),
    "dpo_lora_keep_freed_memory": ((), ("loss=dpo", "student=smollm2_lora", "release_freed_memory=false")),
    "mmap_threshold": (("mmap_threshold",), ("release_freed_memory=false",)),
    "release_while_decoding": (("release_while_decoding",), ()),
    "lora_mmap_threshold": (("mmap_threshold",), ("student=smollm2_lora", "release_freed_memory=false")),
}
BASELINE_OF = {  # read against this variant, not `default`
    "checkpointed_prompts_repeated": "checkpointed",
    **{f"{base}_keep_freed_memory": base for base in ("lora", "dpo", "dpo_lora")},
    "lora_mmap_threshold": "lora",
}
MMAP_THRESHOLD_BYTES = 1 << 20  # the mmap_threshold variants' (MALLOC_MMAP_THRESHOLD_=1048576)
PARTS = ("time/rollout", "time/ranking", "time/update", "time/step")


def overrides(run_dir: Path, cache: Path, steps: int, threads: int, prompts: int = 4, candidates: int = 4,
              eval_prompts: int = 0) -> list[str]:
    evaluation = [f"eval.before={bool(eval_prompts)}".lower(), f"eval.num_prompts={max(eval_prompts, 1)}"]
    return [
        "experiment=smollm2", "task=gsm8k", "~task.max_operand", "ranker=self_judge", f"data.batch_size={prompts}",
        f"rollout.num_candidates={candidates}", "rollout.max_new_tokens=64", "rollout.suppress_eos=true",
        "warmstart.sft_steps=0", *evaluation, f"trainer.max_steps={steps}",
        "logger=csv", "checkpointing.enabled=false", "samples.every_n_steps=0", f"num_threads={threads}",
        f"anchors.cache_path={cache}", f"hydra.run.dir={run_dir}",
    ]


def apply_patches(patches: list[str]) -> None:
    """Turn mechanisms off in this process, before `purld-train` runs in it."""
    from purld.rollout import logprobs

    if "mmap_threshold" in patches:  # blocks of 1 MB and more mapped and unmapped on their own, the heap trimmed as glibc does
        from purld.memory import M_MMAP_THRESHOLD, glibc_mallopt

        glibc_mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    if "release_while_decoding" in patches:  # no heap blocks in the rollout and the ranking: memory released in every phase
        from contextlib import nullcontext

        from purld.modules import group, pairwise

        group.heap_while_decoding = pairwise.heap_while_decoding = nullcontext
    if "prompt_sharing_under_checkpointing" in patches:
        shared = logprobs.prompts_can_be_shared
        logprobs.prompts_can_be_shared = lambda model: not logprobs.checkpointed(model) and shared(model)


def worker(patches: list[str], arguments: list[str]) -> None:
    apply_patches(patches)
    from purld.cli.train import main as train

    sys.argv = ["purld-train", *arguments]
    train()


def step_times(run_dir: Path) -> dict[str, list[float]]:
    with (run_dir / "logs" / "purld" / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    return {part: [float(row[part]) for row in rows if row.get(part)] for part in PARTS}


def run_variant(name: str, scratch: Path, steps: int, threads: int, round_: int, prompts: int = 4, candidates: int = 4,
                eval_prompts: int = 0) -> dict[str, Any]:
    patches, extra = VARIANTS[name]
    run_dir = scratch / f"{name}-{round_}"
    arguments = [*overrides(run_dir, scratch / "anchors.sqlite", steps, threads, prompts, candidates, eval_prompts), *extra]
    command = [sys.executable, __file__, "--worker", json.dumps({"patches": list(patches), "arguments": arguments})]
    busy_before, start = machine_busy_seconds(), time.perf_counter()
    with tempfile.TemporaryFile("w+") as errors:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own resource usage: its peak RSS
        process.returncode = os.waitstatus_to_exitcode(status)
        errors.seek(0)
        stderr = errors.read()
    wall = time.perf_counter() - start
    if process.returncode:
        raise RuntimeError(f"variant {name}: purld-train failed:\n{stderr[-3000:]}")
    own_cpu = usage.ru_utime + usage.ru_stime
    stages = json.loads((run_dir / "summary.json").read_text())["seconds"]
    return {"times": step_times(run_dir), "peak_rss_mb": usage.ru_maxrss / 1024, "wall_s": round(wall, 1),  # Linux: KB
            "eval_s": round(stages.get("eval_before", 0.0) + stages.get("eval_after", 0.0), 2),
            "outside_load_cores": round((machine_busy_seconds() - busy_before - own_cpu) / wall, 2)}


def summarise(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per variant: medians over rounds of the per-round medians (warm-up step left out), and ratios to its baseline."""
    table: dict[str, Any] = {}
    for name, runs in results.items():
        medians = {part: statistics.median(statistics.median(run["times"][part][1:]) for run in runs) for part in PARTS}
        table[name] = {
            **{part.removeprefix("time/") + "_s": round(value, 3) for part, value in medians.items()},
            "peak_rss_mb": round(statistics.median(run["peak_rss_mb"] for run in runs), 1),
            "eval_s": round(statistics.median(run.get("eval_s", float("nan")) for run in runs), 2),
            "outside_load_cores": round(max(run["outside_load_cores"] for run in runs), 2),
        }
    for name, row in table.items():
        baseline = table.get(BASELINE_OF.get(name, "default"))
        if baseline is not None and name != "default":
            row["against"] = BASELINE_OF.get(name, "default")
            row["step_ratio"] = round(row["step_s"] / baseline["step_s"], 3)
            row["rss_ratio"] = round(row["peak_rss_mb"] / baseline["peak_rss_mb"], 3)
            row["eval_ratio"] = round(row["eval_s"] / baseline["eval_s"], 3)
    return table


def render(report: dict[str, Any]) -> str:
    lines = [
        f"SmolLM2-135M-Instruct, GRPO + self_judge, {report['settings']}",
        "",
        "| variant | against | step s | rollout s | ranking s | update s | step ratio | eval s | eval ratio | peak RSS MB | "
        "RSS ratio | outside load |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in report["variants"].items():
        lines.append(
            f"| {name} | {row.get('against', '')} | {row['step_s']:.2f} | {row['rollout_s']:.2f} | {row['ranking_s']:.2f} | "
            f"{row['update_s']:.2f} | {row.get('step_ratio', '')} | {row.get('eval_s', '')} | {row.get('eval_ratio', '')} | "
            f"{row['peak_rss_mb']:.0f} | {row.get('rss_ratio', '')} | "
            f"{row['outside_load_cores']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/mechanisms_smollm2.json"))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--steps", type=int, default=3, help="steps per run, the first one warm-up")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step (bench_vs_trl.py's GRPO rows: 8)")
    parser.add_argument("--candidates", type=int, default=4, help="K per prompt (bench_vs_trl.py's GRPO rows: 8)")
    parser.add_argument("--eval-prompts", type=int, default=0,
                        help="held-out GSM8K prompts evaluated before and after the steps (0: one, after them)")
    parser.add_argument("--render", type=Path, help="print the table of a written report and stop")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        return worker(spec["patches"], spec["arguments"])
    if args.render:
        return print(render(json.loads(args.render.read_text())))
    names = args.variants.split(",")
    if unknown := set(names) - set(VARIANTS):
        parser.error(f"--variants: unknown {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(args.rounds):
            for name in names if round_ % 2 == 0 else reversed(names):
                results[name].append(run_variant(name, Path(scratch), args.steps, args.threads, round_, args.prompts, args.candidates,
                                                 args.eval_prompts))
                row = results[name][-1]
                print(f"[{time.perf_counter() - started:6.0f} s] round {round_} {name}: step "
                      f"{statistics.median(row['times']['time/step'][1:]):.2f} s, eval {row['eval_s']:.1f} s, "
                      f"peak RSS {row['peak_rss_mb']:.0f} MB", flush=True)
    report = {
        "settings": f"{args.prompts} prompts x K {args.candidates} x 64 new tokens, GSM8K prompts, fp32, {args.threads} threads, "
                    f"{args.steps - 1} measured steps x {args.rounds} rounds"
                    + (f", {args.eval_prompts} held-out prompts evaluated before and after" if args.eval_prompts else ""),
        "variants": summarise(results),
        "runs": results,
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(render(report))


if __name__ == "__main__":
    main()
