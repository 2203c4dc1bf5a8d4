"""scripts/bench_vs_trl.py's reports as tables: the console table of one run, and README's short performance table.

    python scripts/vs_trl_report.py outputs/bench/vs_trl_bf16.json outputs/bench/vs_trl.json            # print it
    python scripts/vs_trl_report.py outputs/bench/vs_trl_bf16.json outputs/bench/vs_trl.json --readme README.md
    python scripts/vs_trl_report.py outputs/bench/vs_trl_smollm2.json outputs/bench/vs_trl_smollm2_dpo.json \
        outputs/bench/vs_trl_smollm2_grpo.json outputs/bench/vs_trl_smollm2_dpo_bf16.json --real --readme README.md

The README table is rendered from the committed JSON only (a test checks README against it); scripts/README.md gives
the method and the history of these runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evidence import write_readme  # noqa: E402

PERFORMANCE_MARKERS = ("<!-- performance:start -->", "<!-- performance:end -->")
REAL_PERFORMANCE_MARKERS = ("<!-- performance-real:start -->", "<!-- performance-real:end -->")
SIZE_NAMES = {"tiny": "3.2 M", "small": "25.3 M"}  # bench_vs_trl.SIZES: random-init Llama, character tokenizer
README_FIGURES = (  # (figure name in the report, what README calls it)
    ("grpo_step_ratio", "GRPO step time, purld ÷ TRL"),
    ("dpo_step_ratio", "DPO step time, purld ÷ TRL"),
    ("grpo_rss_ratio", "GRPO peak RSS, purld ÷ TRL"),
    ("dpo_rss_ratio", "DPO peak RSS, purld ÷ TRL"),
    ("rollout_vs_generate_floor", "rollout throughput, purld ÷ one plain `generate` (above 1: faster)"),
)


REAL_FIGURES = (  # the real student's comparison (`--model smollm2`), the targets beside each
    ("grpo_step_ratio", "GRPO step time, purld ÷ TRL, full fine-tune", "≤ 0.7"),
    ("lora_grpo_step_ratio", "GRPO step time, purld ÷ TRL, LoRA r 16", "≤ 0.7"),
    ("dpo_step_ratio", "DPO step time, purld ÷ TRL, full fine-tune", "≤ 0.8"),
    ("lora_dpo_step_ratio", "DPO step time, purld ÷ TRL, LoRA r 16", "≤ 0.8"),
    ("grpo_rss_ratio", "GRPO peak RSS, purld ÷ TRL, full fine-tune", "≤ 1.0"),
    ("lora_grpo_rss_ratio", "GRPO peak RSS, purld ÷ TRL, LoRA", "≤ 1.0"),
    ("dpo_rss_ratio", "DPO peak RSS, purld ÷ TRL, full fine-tune", "≤ 1.0"),
    ("lora_dpo_rss_ratio", "DPO peak RSS, purld ÷ TRL, LoRA", "≤ 1.0"),
    ("grpo_step_ratio_without_checkpointing", "GRPO step time, purld `student.gradient_checkpointing=false` ÷ TRL", ""),
    ("grpo_rss_ratio_without_checkpointing", "GRPO peak RSS, purld `student.gradient_checkpointing=false` ÷ TRL", ""),
    ("rollout_vs_generate", "rollout throughput, purld ÷ one plain `generate`", "≥ 1.0"),
    ("self_judge_share", "`ranker=self_judge`: share of the GRPO step", "≤ 0.2"),
    ("likelihood_share", "`ranker=likelihood`: share of the GRPO step", ""),
)


STEP_NAMES = {"purld_grpo": "purld GRPO", "trl_grpo": "TRL GRPO", "purld_dpo": "purld DPO", "trl_dpo": "TRL DPO"}


def measured_kinds(report: dict[str, Any]) -> str:
    """'' for a whole run; else the kinds of row it measured (`--kinds`), for its column's header."""
    kinds = sorted({row["kind"] for row in report["rows"]})
    return "" if set(STEP_NAMES) <= set(kinds) else " + ".join(kinds) + " only"


def real_student_table(reports: list[dict[str, Any]]) -> str:
    """The real student's figures, one column per report (a precision, or a later run of some rows: `--kinds`),
    the target beside each; the caption says what each column ran and when its memory setting differed."""
    size = "smollm2"
    headers = [(report["rows"][0]["precision"] if report["rows"] else "?") + (f", {kinds}" if (kinds := measured_kinds(report)) else "")
               for report in reports]
    lines = [f"| SmolLM2-135M-Instruct, {reports[0]['machine']['threads']} CPU threads | {' | '.join(headers)} | target |",
             "| --- |" + " --- |" * (len(reports) + 1)]
    for name, label, target in REAL_FIGURES:
        values = [report["figures"].get(f"{size}_{name}") for report in reports]
        if all(v is None for v in values):
            continue
        lines.append(f"| {label} | " + " | ".join("—" if v is None else f"{v:.2f}" for v in values) + f" | {target} |")
    first = reports[0]
    machine = first["machine"]
    captions = [
        f"torch {machine['torch']}, TRL {machine['trl']}, transformers {machine['transformers']}; GRPO on 8 GSM8K "
        f"prompts (through the chat template on both sides) × K 8 × {first['rows'][0].get('new_tokens', 64)} new tokens, "
        f"DPO on 8 pairs; each row the median of its measured steps."]
    for header, report in zip(headers, reports):
        steps = {r["kind"]: r["step_s"] for r in report["rows"]
                 if not any(k in r for k in ("lora", "ranker", "checkpointing")) and "step_s" in r}
        step_text = ", ".join(f"{name} {steps[kind]:.1f} s" for kind, name in STEP_NAMES.items() if kind in steps)
        # Reports from before `release_freed_memory` have no such machine key: glibc kept freed memory in every row.
        if "malloc_trim_threshold" not in report["machine"]:
            memory = "measured before `release_freed_memory`: glibc's default malloc on both sides"
        elif report["machine"]["malloc_trim_threshold"] is None:
            memory = "purld's rows at its default `release_freed_memory: true`, TRL's at glibc's default"
        else:
            memory = f"`MALLOC_TRIM_THRESHOLD_={report['machine']['malloc_trim_threshold']}` for every row"
        loads = [r["outside_load_cores"] for r in report["rows"]]
        cpu = report["machine"].get("cpu")  # recorded since some runs landed on a CPU without native bf16
        where = f" on {cpu} ({report['machine']['cpu_capability']}{'' if report['machine']['native_bf16'] else ', no native bf16'})" if cpu else ""
        captions.append(
            f"The *{header}* column: `{report['command']}`, {len(report['rows'][0]['rounds'])} round(s){where}; full-fine-tune "
            f"steps {step_text}; {memory}; other processes used at most {max(loads):.2f} cores during a row.")
    return "\n".join(lines) + "\n\n" + "\n\n".join(captions)


def readme_table(reports: list[dict[str, Any]]) -> str:
    """One column per (report, model size), one row per figure; lower is better for time and memory."""
    columns = [(report, size) for report in reports for size in SIZE_NAMES if any(key.startswith(f"{size}_") for key in report["figures"])]
    header = " | ".join(f"{SIZE_NAMES[size]}, {report['rows'][0]['precision'] if report['rows'] else '?'}" for report, size in columns)
    lines = [f"| same work, {reports[0]['machine']['threads']} CPU threads | {header} |", "| --- |" + " --- |" * len(columns)]
    for name, label in README_FIGURES:
        cells = []
        for report, size in columns:
            value = report["figures"].get(f"{size}_{name}")
            cells.append("—" if value is None else f"{value:.2f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    machine = reports[0]["machine"]
    return "\n".join(lines) + (f"\n\ntorch {machine['torch']}, TRL {machine['trl']}, transformers {machine['transformers']}; "
                               "a random-init Llama of that many parameters on both sides, GRPO on 8 prompts × K 8 × 32 new tokens, "
                               "DPO on 8 pairs; medians of 6 steps in 2 interleaved rounds.")


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    machine = report["machine"]
    where = machine["gpu"] or f"{machine['threads']} threads"
    table = Table(title=f"purld vs TRL · {report['prompts']} prompts · {where} · torch {machine['torch']} · trl {machine['trl']}")
    for column in ("work", "size", "K", "precision", "step / gen s", "peak RSS MB", "peak GPU MB", "outside load", "note"):
        table.add_column(column)
    for r in report["rows"]:
        seconds = r.get("step_s", r.get("generate_s", r.get("update_s", r.get("matmul_s"))))
        note = f"ranker {r['ranker']}, ranking {r['ranking_fraction']:.0%}" if r.get("ranker") else ""
        if r.get("checkpointing"):
            note = f"student.gradient_checkpointing={r['checkpointing']}"
        elif r["kind"] == "purld_grpo" and not r.get("ranker"):
            note = f"rollout {r['rollout_s']:.3f} + rank {r['ranking_s']:.3f} + update {r['update_s']:.3f}; {r['rollout_tokens_per_s']:.0f} tok/s"
        if r["kind"] == "generate_floor":
            note = f"{r['tokens_per_s']:.0f} tok/s"
        if r["kind"] == "matmul_rate":
            note = f"{r['matmul_flops_per_s'] / 1e9:.0f} GFLOP/s: one layer's update matmuls on {r['matmul_rows']} rows"
        if r.get("cache"):
            note = f"{r['cache']} KV cache; " + note
        if r.get("decoder"):
            graph = (", CUDA graph" if r.get("cuda_graph") else ", eager") if machine["device"] == "cuda" else ""
            note = f"rollout={r['decoder']}{graph}; " + note
        if r.get("micro_batch_size"):
            note = f"data.micro_batch_size={r['micro_batch_size']}; " + note
        if r.get("lora"):
            note = "LoRA r 16; " + note
        if r.get("lean_activations") is False:
            note = "student.lean_activations=false; " + note
        gpu_mb = f"{r['peak_gpu_mb']:.0f}" if "peak_gpu_mb" in r else ""
        table.add_row(r["kind"], r["size"], str(r.get("K", "")), r["precision"], f"{seconds:.3f}", f"{r['peak_rss_mb']:.0f}", gpu_mb,
                      f"{r['outside_load_cores']:.2f}{' !' if r['under_outside_load'] else ''}", note)
    console = Console(width=200)
    console.print(table)
    for name, value in report.items():  # the headline figures: the first size's ratios
        if isinstance(value, float):
            console.print(f"{name}: {value:.3f}")
    for failure in report["failed_rows"]:
        console.print(f"FAILED {failure['kind']} {failure['size']}: {failure['error'].splitlines()[-1] if failure['error'] else ''}")



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", type=Path, nargs="+", help="bench_vs_trl.py's JSON reports, one per precision (--real: or per later run of some rows)")
    parser.add_argument("--readme", type=Path, default=None, help="write the table into this README's performance block")
    parser.add_argument("--real", action="store_true", help="the real student's reports (`--model smollm2`): its own table")
    args = parser.parse_args(argv)
    reports = [json.loads(path.read_text()) for path in args.reports]
    table = real_student_table(reports) if args.real else readme_table(reports)
    if args.readme:
        command = "python scripts/vs_trl_report.py " + " ".join(map(str, args.reports)) + (" --real" if args.real else "")
        write_readme(args.readme, table, command, REAL_PERFORMANCE_MARKERS if args.real else PERFORMANCE_MARKERS)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
