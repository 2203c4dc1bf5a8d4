"""Rollout throughput: purld's `Sampler.sample` (and `rollout=static`'s decoder) against one plain batched `generate`
with num_return_sequences=K.

    python scripts/bench_rollout.py --out outputs/bench/rollout.json [--precision bf16] [--sizes tiny,small]
    python scripts/bench_rollout.py --sizes smollm2 --tasks gsm8k --new-tokens 64 --repeats 2 --vllm \
        --out outputs/bench/rollout_smollm2_vllm.json          # in the vLLM environment (README: rollout=vllm)
    python scripts/bench_rollout.py --render outputs/bench/rollout_smollm2_vllm.json --readme README.md

`generate` with num_return_sequences=K repeats each prompt K times before reading it. purld's rollout reads
each prompt once and repeats its KV cache (`purld.rollout.sampler.prompt_cache_for_samples`), so its prefill
costs B·L prompt positions instead of B·K·L. Measured on two prompt sets of the shipped tasks: the embedded
arithmetic task (3-digit additions, about 8 tokens, the bench_vs_trl harness's prompts) and GSM8K questions
(`task=gsm8k`'s template, the first 8 that fit the model's 256 positions with the new tokens: about 200
tokens with the character tokenizer). Same model (the harness's random-init
Llama, `student=tiny` at its sizes, or `--sizes smollm2`: SmolLM2-135M-Instruct, its prompts through its chat
template), same 8 prompts × K completions of exactly `--new-tokens` tokens (EOS
suppressed on every side), the same sampling settings (temperature 1, no top-k / top-p). A third side is
`rollout=static` (`StaticDecoderSampler`: purld's own decoder over a preallocated KV cache, eager on a CPU), a
fourth the plain `generate` with transformers' static cache (`cache_implementation="static"`), and with `--vllm`
(where vLLM is installed: the second environment of README's rollout=vllm) a fifth, `rollout=vllm` (`VLLMSampler`:
vLLM colocated, its weights pushed before every rollout but the first, as in training). The sides alternate
in one process, `--repeats` times after one warm-up each; medians are reported, with the CPU time other
processes used during the run (/proc/stat).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vs_trl_harness as harness  # noqa: E402
from bench_quickstart import cpu_description, machine_busy_seconds  # noqa: E402
from evidence_report import write_readme  # noqa: E402

VLLM_MARKERS = ("<!-- vllm-rollout:start -->", "<!-- vllm-rollout:end -->")


def prompt_batch(task_name: str, tokenizer, count: int, max_prompt_tokens: int):
    from purld.types import PromptBatch

    examples = harness.harness_task(task_name, count, tokenizer, max_prompt_tokens).examples("train")
    encoded = tokenizer(
        [harness.as_read(tokenizer, e.prompt) for e in examples], padding=True, padding_side="left",
        add_special_tokens=False, return_tensors="pt",
    )
    ids, mask = encoded["input_ids"], encoded["attention_mask"].bool()
    anchors = [e.reference for e in examples]  # unused: the rollout reads only the prompts
    return PromptBatch(examples, anchors, prompt_ids=ids, prompt_mask=mask, anchor_ids=ids, anchor_mask=mask)


def measure(size: str, task_name: str, args: argparse.Namespace) -> dict:
    import torch

    from purld.rollout.sampler import Sampler, StaticDecoderSampler

    model, tokenizer = harness.build_model(size, lean_activations=True)  # purld's default layers (off when grad is)
    K, T = args.K, args.new_tokens
    batch = prompt_batch(task_name, tokenizer, args.prompts, model.config.max_position_embeddings - T)
    sampler = Sampler(num_candidates=K, max_new_tokens=T, temperature=1.0, suppress_eos=True)
    static_sampler = StaticDecoderSampler(num_candidates=K, max_new_tokens=T, temperature=1.0, suppress_eos=True)

    def plain_generate(**cache):
        model.eval()
        with torch.no_grad():
            model.generate(
                input_ids=batch.prompt_ids, attention_mask=batch.prompt_mask.long(), num_return_sequences=K,
                do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=T, min_new_tokens=T,
                pad_token_id=tokenizer.pad_token_id, **cache,
            )

    def purld_rollout():
        sampler.sample(model, tokenizer, batch)

    def static_rollout():
        static_sampler.sample(model, tokenizer, batch)

    sides = [("purld", purld_rollout), ("generate", plain_generate), ("static", static_rollout),
             ("generate_static", lambda: plain_generate(cache_implementation="static"))]
    if args.vllm:
        from purld.rollout import VLLMSampler

        vllm_sampler = VLLMSampler(num_candidates=K, max_new_tokens=T, temperature=1.0, suppress_eos=True)
        sides.append(("vllm", lambda: vllm_sampler.sample(model, tokenizer, batch)))
    times: dict[str, list[float]] = {name: [] for name, _ in sides}
    busy_before, cpu_before, start = machine_busy_seconds(), time.process_time(), time.perf_counter()
    with harness.precision_context(args.precision):
        for repeat in range(args.repeats + 1):
            for name, run in sides if repeat % 2 == 0 else sides[::-1]:
                began = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - began)
    wall = time.perf_counter() - start
    outside = max(machine_busy_seconds() - busy_before - (time.process_time() - cpu_before), 0.0) / wall
    purld_s, generate_s, static_s, generate_static_s = (
        statistics.median(times[name][1:]) for name in ("purld", "generate", "static", "generate_static"))
    tokens = len(batch) * K * T
    return {
        "size": size, "task": task_name, "precision": args.precision, "K": K, "prompts": len(batch),
        "prompt_tokens": batch.prompt_ids.shape[1], "new_tokens": T,
        "purld_s": round(purld_s, 4), "generate_s": round(generate_s, 4),
        "purld_tokens_per_s": round(tokens / purld_s, 1), "generate_tokens_per_s": round(tokens / generate_s, 1),
        "purld_vs_generate": round(generate_s / purld_s, 3),  # throughput ratio: > 1 is faster than the floor
        "static_s": round(static_s, 4), "static_vs_generate": round(generate_s / static_s, 3),
        # transformers' own static KV cache, the same generate call otherwise
        "generate_static_s": round(generate_static_s, 4), "generate_static_vs_generate": round(generate_s / generate_static_s, 3),
        "purld_rounds_s": [round(t, 4) for t in times["purld"][1:]],
        "generate_rounds_s": [round(t, 4) for t in times["generate"][1:]],
        "static_rounds_s": [round(t, 4) for t in times["static"][1:]],
        "generate_static_rounds_s": [round(t, 4) for t in times["generate_static"][1:]],
        **({"vllm_s": round(statistics.median(times["vllm"][1:]), 4),
            "vllm_vs_generate": round(generate_s / statistics.median(times["vllm"][1:]), 3),
            "vllm_vs_purld": round(purld_s / statistics.median(times["vllm"][1:]), 3),
            "vllm_rounds_s": [round(t, 4) for t in times["vllm"][1:]]} if args.vllm else {}),
        "outside_load_cores": round(outside, 3),
    }


def render(report: dict) -> str:
    """README's rollout table: every side of a `--vllm` row, fastest first, against one plain `generate`."""
    row = report["rows"][0]
    sides = [("`rollout=vllm`", "vllm_s"), ("`rollout=static`", "static_s"), ("`rollout=default`", "purld_s"),
             ("`generate`, static cache", "generate_static_s"), ("one plain `generate`", "generate_s")]
    sides = sorted((s for s in sides if s[1] in row), key=lambda side: row[side[1]])
    machine = report["machine"]
    lines = [f"| {row['prompts']} GSM8K prompts × K {row['K']} × {row['new_tokens']} tokens, {row['precision']} | seconds | "
             "throughput ÷ plain `generate` |", "| --- | --- | --- |"]
    lines += [f"| {name} | {row[key]:.1f} | {row['generate_s'] / row[key]:.2f} |" for name, key in sides]
    return "\n".join(lines) + (
        f"\n\nSmolLM2-135M-Instruct, {machine['threads']} CPU threads, torch {machine['torch']}, transformers "
        f"{machine['transformers']}, vLLM {machine.get('vllm', '—')} (the weights pushed before each rollout, as in "
        f"training); prompts of {row['prompt_tokens']} tokens; medians of {len(row['purld_rounds_s'])} rounds; other "
        f"processes used {row['outside_load_cores']:.2f} cores.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--render", type=Path, help="print (with --readme: write) the table of this report, measure nothing")
    parser.add_argument("--readme", type=Path, help="with --render: the README whose rollout block it rewrites")
    parser.add_argument("--sizes", default="tiny,small")
    parser.add_argument("--tasks", default="arithmetic,gsm8k")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("-K", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vllm", action="store_true", help="add rollout=vllm as a fifth side (vLLM installed)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.render:
        table = render(json.loads(args.render.read_text()))
        if args.readme:
            write_readme(args.readme, table, f"python scripts/bench_rollout.py --render {args.render}", VLLM_MARKERS)
        print(table)
        return
    torch = harness.setup_torch(args.threads)
    rows = [measure(size, task, args) for size in args.sizes.split(",") for task in args.tasks.split(",")]
    print("| model | prompts | prompt tokens | purld rollout | plain generate | throughput, purld / generate "
          "| `rollout=static` | static / generate | generate, static cache / generate | outside load |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['size']} | {r['task']} | {r['prompt_tokens']} | {r['purld_s']:.3f} s | {r['generate_s']:.3f} s "
              f"| {r['purld_vs_generate']:.2f} | {r['static_s']:.3f} s | {r['static_vs_generate']:.2f} "
              f"| {r['generate_static_vs_generate']:.2f} | {r['outside_load_cores']:.2f} cores |"
              + (f" rollout=vllm {r['vllm_s']:.3f} s, {r['vllm_vs_generate']:.2f}x generate" if args.vllm else ""))
    report = {
        "machine": {
            "cpus": os.cpu_count(), **cpu_description(), "threads": args.threads, "torch": torch.__version__,
            "transformers": __import__("transformers").__version__, "python": sys.version.split()[0],
            **({"vllm": __import__("vllm").__version__} if args.vllm else {}),
        },
        "rows": rows,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
