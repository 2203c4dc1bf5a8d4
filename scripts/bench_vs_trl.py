"""purld against TRL on identical work: GRPO and DPO steps, rollout throughput, peak memory, scaling in K.

    pip install -e ".[bench]"            # TRL, as a user installs it
    python scripts/bench_vs_trl.py --out outputs/bench/vs_trl.json
    python scripts/bench_vs_trl.py --quick --out /tmp/vs_trl.json      # the smoke test's settings
    python scripts/bench_vs_trl.py --prompts gsm8k --precision bf16 --out outputs/bench/vs_trl_gsm8k_bf16.json
    bash scripts/gpu_bench.sh                                           # one CUDA GPU, bf16, a 0.49 B Qwen2 shape

Every measurement runs in its own subprocess (so peak RSS is that work's alone;
`--quick` runs them in one process to check the code paths only) with the same
number of torch threads, on the same random-init Llama, the same prompts and the
same lengths, and the same attention kernel (eager: on this CPU the faster one at
these sizes, for every side; `scripts/bench_attention.py` compares it with sdpa):
- GRPO: 8 prompts × K completions of exactly 32 new tokens (EOS suppressed on
  both sides); the prompts are 3-digit additions of about 8 tokens, or with
  `--prompts gsm8k` GSM8K questions of about 200 (the comparison rows only);
  β 0.04, ε 0.2, loss_type dapo, group-scaled rewards, the same lexical
  (ROUGE-L to the anchor) reward, one optimisation step per rollout.
  purld: `purld-train`'s GroupModule under a Lightning Trainer. TRL: GRPOTrainer.
- DPO: 8 pairs of ~32-token prompts and ~32-token answers, β 0.1, sigmoid loss,
  a frozen reference model. purld: PairwiseModule.dpo_step + AdamW step (the
  update purld-train runs after ranking; rollout excluded, as TRL's DPO is offline).
  TRL: DPOTrainer.
- TRL runs with its own defaults except precision (it turns on gradient
  checkpointing); purld is measured without it (its default) and with
  `student.gradient_checkpointing=full` (GRPO and DPO) and `=selective` (GRPO), in separate rows, and with
  `data.micro_batch_size` (the update in passes of that many sequences). purld's
  rows run its default `student.lean_activations` (RMSNorm and SwiGLU layers that
  save only their inputs: the same numbers), and one row each without it; TRL and
  the floors run transformers' own layers.
- Floors, in the same precision: one plain batched `model.generate` of the same
  batch, and hand-written updates (one forward of policy and reference over
  every prompt + completion row, the loss, backward, clip, AdamW step) — the
  plain way. purld's update reads each prompt once for its K completions (DPO:
  its 2 answers), so it can beat that floor by the prompt's share of the tokens.
- The machine's matmul rate at one layer's update shapes (`matmul_rate`: the B·K·T
  completion rows through each weight, forward and both backward products, in the
  run's precision). Each update's FLOP rate is read against it
  (`grpo_update_vs_matmul_rate`, the floor's, and TRL's, whose update is estimated
  as its step less the plain `generate`): how close an update is to what this
  machine's matmuls allow, beside how much work it does (`grpo_work_ratio`).
Step times are medians after `--warmup` steps; every row runs once per round,
odd rounds in reverse order, and rows report medians over rounds. Around each subprocess the
machine's CPU time is read from /proc/stat; if other processes used more than
`--max-outside-load` cores meanwhile, the measurement is repeated (up to
`--retries` times) and the output says so.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quickstart import cpu_description, machine_busy_seconds  # noqa: E402
from vs_trl_dpo import purld_dpo, trl_dpo  # noqa: E402
from vs_trl_figures import HEADLINE, compute_figures, merged_rows  # noqa: E402
from vs_trl_floors import dpo_update_floor, generate_floor, grpo_update_floor, matmul_rate  # noqa: E402
from vs_trl_grpo import purld_grpo, trl_grpo  # noqa: E402
from vs_trl_harness import (  # noqa: E402, F401  (also what the tests read here)
    ATTENTION,
    MAX_POSITIONS,
    NUM_PROMPTS,
    PEAK_BF16_FLOPS,
    PROMPT_SETS,
    REAL_STUDENTS,
    SIZES,
    build_model,
    dpo_texts,
    grpo_step_work,
    harness_items,
    harness_task,
    purld_checkpointing,
)
from vs_trl_report import print_table  # noqa: E402

WORKERS = {
    "purld_grpo": purld_grpo,
    "trl_grpo": trl_grpo,
    "generate_floor": generate_floor,
    "grpo_update_floor": grpo_update_floor,
    "purld_dpo": purld_dpo,
    "trl_dpo": trl_dpo,
    "matmul_rate": matmul_rate,
    "dpo_update_floor": dpo_update_floor,
}


def run_worker(spec: dict[str, Any]) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    kind = spec.pop("kind")
    result = WORKERS[kind](**spec)
    result.update(peak_memory())
    print("RESULT " + json.dumps(result))


def peak_memory() -> dict[str, float]:
    """Peak RSS of this process, and on a GPU the peak of torch's allocations there (TRL's and purld's alike)."""
    import torch

    memory = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        memory["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return memory


# ------------------------------------------------------------------ orchestrator
class WorkerFailed(RuntimeError):
    """A row's subprocess exited without a result; its stderr tail is the message."""


class TimeBudgetSpent(WorkerFailed):
    """--time-budget ran out before or while a row ran."""


def row_specs(
    sizes: list[str], ks: list[int], rows: str, with_trl: bool, micro_batch_passes: int = 2, prompts: str = "arithmetic"
) -> list[dict[str, Any]]:
    """The rows of one round. On a GPU: the comparison rows and purld's own decoder (`rollout=static`), also
    checkpointed, no scaling rows (the GPU script has a 5-minute budget). With the GSM8K prompts: the comparison rows, the floors and purld
    checkpointed as TRL is (each GRPO step of the small model takes TRL about 26 s there in bf16, 54 s in fp32)."""
    specs: list[dict[str, Any]] = []
    trl = (lambda *rows: list(rows)) if with_trl else (lambda *rows: [])  # noqa: E731
    for size in sizes:
        if size in REAL_STUDENTS and rows != "gpu":
            # The comparison rows at purld's defaults (checkpointed, `student.gradient_checkpointing=full`), full
            # fine-tune and LoRA, each beside TRL's; purld without checkpointing (the default before); one plain
            # `generate` of the batch; the self-rankers' share of the step; DPO full and LoRA.
            for lora in ({}, {"lora": True}):
                specs += [{"kind": "purld_grpo", "size": size, "K": 8, **lora}, *trl({"kind": "trl_grpo", "size": size, "K": 8, **lora})]
            specs += [{"kind": "purld_grpo", "size": size, "K": 8, "checkpointing": "none"}, {"kind": "generate_floor", "size": size, "K": 8}]
            specs += [{"kind": "purld_grpo", "size": size, "K": 8, "ranker": r} for r in ("self_judge", "likelihood")]
            for lora in ({}, {"lora": True}):
                specs += [{"kind": "purld_dpo", "size": size, **lora}, *trl({"kind": "trl_dpo", "size": size, **lora})]
        elif rows == "gpu":
            # The rows the GPU targets divide first, the floors and `generate`-bound default rollout last: a run cut
            # short (--time-budget, or the device's) keeps the telling rows (the JSON is rewritten after each row).
            specs += [{"kind": "purld_grpo", "size": size, "K": 8, "decoder": "static"}, {"kind": "generate_floor", "size": size, "K": 8}]
            if importlib.util.find_spec("vllm") is not None:  # rollout=vllm, where this environment has vLLM
                specs += [{"kind": "purld_grpo", "size": size, "K": 8, "decoder": "vllm"}]
            specs += trl({"kind": "trl_grpo", "size": size, "K": 8})
            specs += [{"kind": "purld_dpo", "size": size}, *trl({"kind": "trl_dpo", "size": size})]
            specs += [{"kind": "purld_grpo", "size": size, "K": 8, "decoder": "static", "checkpointing": "full"}]
            specs += [{"kind": "grpo_update_floor", "size": size, "K": 8}, {"kind": "dpo_update_floor", "size": size}]
            specs += [{"kind": "purld_grpo", "size": size, "K": 8}]
        elif prompts != "arithmetic":
            specs += [{"kind": "purld_grpo", "size": size, "K": 8}, *trl({"kind": "trl_grpo", "size": size, "K": 8})]
            specs += [{"kind": "purld_grpo", "size": size, "K": 8, "checkpointing": "full"}]
            specs += [{"kind": "generate_floor", "size": size, "K": 8}, {"kind": "grpo_update_floor", "size": size, "K": 8}]
            specs += [{"kind": "matmul_rate", "size": size, "K": 8}]  # what the update's matmuls can reach here
            specs += [{"kind": "purld_grpo", "size": size, "K": 8, "decoder": "static"}]
            specs += [{"kind": "purld_dpo", "size": size}, *trl({"kind": "trl_dpo", "size": size}), {"kind": "dpo_update_floor", "size": size}]
            specs += [{"kind": "purld_dpo", "size": size, "checkpointing": "full"}]
        else:
            # Each row beside the rows it is divided by: this shared machine's speed drifts within minutes (the small
            # model's generate floor took 1.52 s in one round and 1.05 s in the next), neighbours drift less.
            specs += [{"kind": "purld_grpo", "size": size, "K": 8}, *trl({"kind": "trl_grpo", "size": size, "K": 8})]
            specs += [{"kind": "purld_grpo", "size": size, "K": 8, "lean_activations": False}]
            specs += [{"kind": "purld_grpo", "size": size, "K": 8, "checkpointing": c} for c in ("full", "selective")]
            specs += [{"kind": "purld_grpo", "size": size, "K": 8, "micro_batch_size": NUM_PROMPTS * 8 // micro_batch_passes}]
            specs += [{"kind": "generate_floor", "size": size, "K": 8}, {"kind": "grpo_update_floor", "size": size, "K": 8}]
            specs += [{"kind": "matmul_rate", "size": size, "K": 8}]  # what the update's matmuls can reach here
            specs += [{"kind": "purld_grpo", "size": size, "K": 8, "decoder": "static"}]
            specs += [{"kind": "purld_grpo", "size": size, "K": K} for K in ks if K != 8]
            specs += [{"kind": "purld_grpo", "size": size, "K": 8, "ranker": r} for r in ("likelihood", "self_judge")]
            specs += [{"kind": "purld_dpo", "size": size}, *trl({"kind": "trl_dpo", "size": size}), {"kind": "dpo_update_floor", "size": size}]
            specs += [{"kind": "purld_dpo", "size": size, "lean_activations": False}, {"kind": "purld_dpo", "size": size, "checkpointing": "full"}]
            specs += [{"kind": "purld_dpo", "size": size, "micro_batch_size": NUM_PROMPTS * 2 // micro_batch_passes}]
    return specs


def measure(
    spec: dict[str, Any], max_outside_load: float, retries: int, in_process: bool = False, deadline: float | None = None
) -> dict[str, Any]:
    """Run one worker in a subprocess; repeat it while other processes loaded the machine.

    `in_process` (the --quick smoke run) skips the subprocess: it checks the code paths, not the figures.
    `deadline` (`time.perf_counter()` seconds, --time-budget): a worker still running then is killed, and the row
    fails saying so."""
    if in_process:
        spec = dict(spec)
        result = WORKERS[spec.pop("kind")](**spec)
        return {**result, **peak_memory(), "outside_load_cores": 0.0, "wall_s": 0.0, "attempts": 1, "under_outside_load": False}
    attempts = []
    for _ in range(retries + 1):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy, start = machine_busy_seconds(), time.perf_counter()
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(spec["threads"])}
        timeout = None if deadline is None else deadline - start
        if timeout is not None and timeout <= 0:
            raise TimeBudgetSpent("not run: the --time-budget was spent")
        try:
            process = subprocess.run(
                [sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True, env=env, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise TimeBudgetSpent(f"stopped by the --time-budget after {timeout:.0f} s of this row") from None
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        own = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        outside = max(machine_busy_seconds() - busy - own, 0.0) / wall
        lines = [line for line in process.stdout.splitlines() if line.startswith("RESULT ")]
        if process.returncode != 0 or not lines:
            raise WorkerFailed(f"{spec['kind']} failed (exit {process.returncode}):\n{process.stderr}")
        result = {**json.loads(lines[-1][len("RESULT ") :]), "outside_load_cores": round(outside, 3), "wall_s": round(wall, 1)}
        attempts.append(result)
        if outside <= max_outside_load:
            break
        print(f"  {spec['kind']}: {outside:.2f} cores of outside load, measuring again", file=sys.stderr)
    best = min(attempts, key=lambda r: r["outside_load_cores"])
    best["attempts"] = len(attempts)
    best["under_outside_load"] = best["outside_load_cores"] > max_outside_load
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/vs_trl.json"))
    parser.add_argument("--sizes", "--model", dest="sizes", default="tiny,small",
                        help=f"random-init sizes ({', '.join(SIZES)}) or a real student ({', '.join(REAL_STUDENTS)}: GSM8K "
                        "prompts through its chat template, 64 new tokens unless --prompts / --new-tokens say otherwise)")
    parser.add_argument("--ks", default="4,8,16", help="K values for the scaling rows (K=8 is the comparison)")
    parser.add_argument("--steps", type=int, default=6, help="measured steps per row (after --warmup)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--no-trl", action="store_true", help="purld and the floors only")
    parser.add_argument("--max-outside-load", type=float, default=0.25, help="cores used by other processes")
    parser.add_argument("--retries", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions of every row (medians reported)")
    parser.add_argument("--quick", action="store_true", help="tiny model, K 8, 1 step, in one process: checks the harness, not the numbers")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--new-tokens", type=int, help="completion length (GRPO) and answer length (DPO); default 32, "
                        "64 for a real student")
    parser.add_argument("--rows", choices=["cpu", "gpu"], help="which rows (default: those of --device); "
                        "`--rows gpu` on the CPU checks the GPU script's code paths")
    parser.add_argument("--keep-going", action="store_true", help="record a failed row and go on (the GPU script)")
    parser.add_argument("--time-budget", type=float, help="seconds for the whole run: a row still running then is "
                        "stopped, and the rows after it are recorded as not run (the GPU script: 5 minutes of device time)")
    parser.add_argument("--prompts", choices=PROMPT_SETS,
                        help="the GRPO rows' prompts (and the DPO rows'): 3-digit additions of about 8 tokens, or GSM8K "
                        "questions of about 200 (comparison rows only); default arithmetic, gsm8k for a real student")
    parser.add_argument("--micro-batch-passes", type=int, default=2,
                        help="the micro-batched rows split the update into this many passes (data.micro_batch_size = sequences / passes)")
    parser.add_argument("--kinds", help="only the rows of these kinds, comma-separated (e.g. purld_dpo,trl_dpo)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return run_worker(json.loads(args.worker))
    if args.quick:
        args.sizes = args.sizes if args.sizes != parser.get_default("sizes") else "tiny"
        args.ks, args.steps, args.warmup, args.rounds = "8", 1, 1, 1
    sizes = args.sizes.split(",")
    if args.precision == "bf16" and args.device == "cpu" and not (cpu := cpu_description())["native_bf16"]:
        print(f"warning: this CPU ({cpu['cpu']}, {cpu['cpu_capability']}) has no native bf16 (AVX-512 BF16, AMX): "
              "bf16 matmuls run slower than fp32 here (3.6x on an AVX2 EPYC), and the real student's GRPO rows take hours",
              file=sys.stderr)
    real = any(size in REAL_STUDENTS for size in sizes)
    args.prompts = args.prompts or ("gsm8k" if real else "arithmetic")
    args.new_tokens = args.new_tokens or (64 if real else 32)
    ks = sorted({int(k) for k in args.ks.split(",")} | {8})
    common = {"steps": args.steps, "warmup": args.warmup, "threads": args.threads, "precision": args.precision,
              "device": args.device, "new_tokens": args.new_tokens, "prompts": args.prompts}

    # Every row of a size is measured once per round, rounds interleaved (purld, TRL, floors, purld, …),
    # so slow drifts of a shared machine hit every side alike; a row's figures are medians over rounds.
    specs = row_specs(sizes, ks, args.rows or ("gpu" if args.device == "cuda" else "cpu"), with_trl=not args.no_trl,
                      micro_batch_passes=args.micro_batch_passes, prompts=args.prompts)
    if args.kinds:
        kinds = set(args.kinds.split(","))
        if unknown := kinds - set(WORKERS):
            parser.error(f"--kinds: unknown {sorted(unknown)}; known: {', '.join(WORKERS)}")
        specs = [spec for spec in specs if spec["kind"] in kinds]
    results: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(specs))}
    errors: list[dict[str, Any]] = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    deadline = None if args.time_budget is None else time.perf_counter() + args.time_budget
    for round_number in range(args.rounds):
        # Odd rounds run the rows in reverse, so that a drift, or a row slowed by the one before it, hits every side alike.
        order = list(enumerate(specs))
        for i, spec in (reversed(order) if round_number % 2 else order):
            try:
                result = measure({**spec, **common}, args.max_outside_load, args.retries, in_process=args.quick, deadline=deadline)
            except TimeBudgetSpent as spent:  # this row and every one after it: recorded, and the run reports
                errors.append({**spec, "round": round_number + 1, "error": str(spent)})
                print(f"round {round_number + 1}/{args.rounds} {spent}: {json.dumps(spec)}", file=sys.stderr)
                continue
            except WorkerFailed as failure:
                if not args.keep_going:
                    raise
                errors.append({**spec, "error": str(failure)[-2000:]})
                print(f"round {round_number + 1}/{args.rounds} FAILED {json.dumps(spec)}\n{str(failure)[-3000:]}", file=sys.stderr)
                with args.out.with_suffix(".failures.log").open("a") as log:  # the whole stderr of each failed row
                    log.write(f"===== {json.dumps(spec)}\n{failure}\n")
                continue
            results[i].append(result)
            print(f"round {round_number + 1}/{args.rounds} {json.dumps({**spec, **result})}", file=sys.stderr)
            write_report(args, sizes, ks, specs, results, errors)  # a run cut short still leaves what it measured
    report = write_report(args, sizes, ks, specs, results, errors)
    print_table(report)
    print(f"→ {args.out}")


def machine_description(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    gpu = torch.cuda.get_device_name() if args.device == "cuda" else None
    return {
        "cpus": os.cpu_count(),
        **cpu_description(),
        "threads": args.threads,
        "device": args.device,
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "trl": None if args.no_trl else __import__("trl").__version__,
        "transformers": __import__("transformers").__version__,
        "attention": ATTENTION,  # the Llama sizes' kernel (the Qwen2 shape keeps transformers' default)
        # glibc's trim threshold for every row where set in the environment; else purld's rows set it to 0 themselves
        # (`release_freed_memory`) and TRL's and the floors' keep glibc's default
        "malloc_trim_threshold": os.environ.get("MALLOC_TRIM_THRESHOLD_"),
    }


def write_report(args, sizes, ks, specs, results, errors) -> dict[str, Any]:
    rows = merged_rows(specs, results, args.precision)
    machine = machine_description(args)
    peak_flops = next((flops for name, flops in PEAK_BF16_FLOPS.items() if machine["gpu"] and name in machine["gpu"]), None)
    figures = compute_figures(rows, sizes, ks, peak_flops if args.precision == "bf16" else None)
    first = sizes[0]  # the headline figures: the first size (tiny on the CPU)
    report = {
        **{name: figures.get(f"{first}_{name}") for name in HEADLINE},
        "figures": figures,
        "rows": rows,
        "failed_rows": errors,
        "machine": {**machine, "peak_bf16_flops": peak_flops},
        "prompts": args.prompts,
        "command": " ".join(["python", "scripts/bench_vs_trl.py", *sys.argv[1:]]),
        "any_under_outside_load": any(r["under_outside_load"] for r in rows),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
