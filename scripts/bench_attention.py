"""Which attention kernel `student=tiny` should default to on a CPU: eager against transformers' sdpa.

    python scripts/bench_attention.py --out outputs/bench/attention.json

On the harness's models (`bench_vs_trl.py`: tiny and small, 2 torch threads), for each kernel and precision:
one batched `generate` of 8 prompts × 8 samples × 32 new tokens (the GRPO rollout), the update's policy
forward + backward, and its no-grad reference forward over the same 64 completions (each prompt read once, as
purld's update does). Medians of `--steps` after one warm-up. The machine's load is read around each
measurement; a measurement under outside load is repeated (up to `--retries`) and flagged.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quickstart import machine_busy_seconds
from vs_trl_harness import NUM_PROMPTS, _sequence_inputs, arithmetic_items, build_model, precision_context, setup_torch

K, NEW_TOKENS = 8, 32


def timed(fn, steps: int, max_outside_load: float, retries: int) -> dict:
    """Median seconds of `steps` calls after one warm-up, and the outside load while they ran."""
    for attempt in range(1, retries + 2):
        fn()
        busy_before, cpu_before, start = machine_busy_seconds(), time.process_time(), time.perf_counter()
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        wall = time.perf_counter() - start
        outside = max(machine_busy_seconds() - busy_before - (time.process_time() - cpu_before), 0.0) / wall
        if outside <= max_outside_load:
            break
    return {"s": statistics.median(times), "outside_load_cores": round(outside, 3), "attempts": attempt,
            "under_outside_load": outside > max_outside_load}


def measure(size: str, kernel: str, precision: str, args) -> dict:
    torch = setup_torch(args.threads)
    from purld.rollout.logprobs import completion_token_logps

    model, tokenizer = build_model(size, attn_implementation=kernel)
    rng = random.Random(0)
    answers = ["".join(rng.choice("0123456789+= ans") for _ in range(NEW_TOKENS - 1)) for _ in range(NUM_PROMPTS * K)]
    inputs = _sequence_inputs(tokenizer, [p for p, _ in arithmetic_items(NUM_PROMPTS)], answers)  # 8 prompts, 64 answers
    prompt_ids, prompt_mask = inputs[0], inputs[1]

    def generate():
        model.eval()
        with torch.no_grad(), precision_context(precision):
            model.generate(input_ids=prompt_ids.repeat_interleave(K, 0),
                           attention_mask=prompt_mask.long().repeat_interleave(K, 0), do_sample=True, top_k=0,
                           top_p=1.0, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)

    def forward_backward():
        model.train()
        with precision_context(precision):
            loss = (completion_token_logps(model, *inputs) * inputs[3]).sum() / inputs[3].sum()
        loss.backward()
        model.zero_grad(set_to_none=True)

    def reference_forward():
        model.eval()
        with torch.no_grad(), precision_context(precision):
            completion_token_logps(model, *inputs)

    work = {"generate": generate, "forward_backward": forward_backward, "reference_forward": reference_forward}
    return {name: timed(fn, args.steps, args.max_outside_load, args.retries) for name, fn in work.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sizes", default="tiny,small")
    parser.add_argument("--precisions", default="bf16,fp32")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-outside-load", type=float, default=0.25, help="cores used by other processes")
    parser.add_argument("--retries", type=int, default=2)
    args = parser.parse_args()
    rows = []
    for size in args.sizes.split(","):
        for precision in args.precisions.split(","):
            results = {kernel: measure(size, kernel, precision, args) for kernel in ("sdpa", "eager")}
            for work in results["sdpa"]:
                row = {"size": size, "precision": precision, "work": work, "sdpa_s": results["sdpa"][work]["s"],
                       "eager_s": results["eager"][work]["s"],
                       "under_outside_load": results["sdpa"][work]["under_outside_load"] or results["eager"][work]["under_outside_load"]}
                row["eager_vs_sdpa"] = row["eager_s"] / row["sdpa_s"]
                rows.append(row)
                print(f"{size:5} {precision:4} {work:17} sdpa {row['sdpa_s']:.3f} s  eager {row['eager_s']:.3f} s  "
                      f"eager/sdpa {row['eager_vs_sdpa']:.2f}{'  (outside load)' if row['under_outside_load'] else ''}", flush=True)
    import torch

    report = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "rows": rows,
              "machine": {"cpu_count": os.cpu_count(), "threads": args.threads, "torch": torch.__version__}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"→ {args.out}")


if __name__ == "__main__":
    main()
