"""scripts/bench_vs_trl.py's rows merged over rounds, and the ratios (figures) read from them."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vs_trl_harness import (  # noqa: E402
    NUM_PROMPTS,
    grpo_step_work,
    grpo_update_work,
)

ANY_VALUE = object()
VARIANT_KEYS = ("ranker", "checkpointing", "cache", "micro_batch_size", "lean_activations", "decoder", "lora")  # a row with one of these is a variant, not the comparison row

def merged_rows(specs: list[dict[str, Any]], results: dict[int, list[dict[str, Any]]], precision: str) -> list[dict[str, Any]]:
    rows = []
    for i, spec in enumerate(specs):
        measured = results[i]
        if not measured:
            continue
        merged = {}
        for key, value in measured[0].items():
            values = [r[key] for r in measured]
            if isinstance(value, bool):  # `cuda_graph`: captured in every round
                merged[key] = all(values)
            elif isinstance(value, int):  # counts fixed by the spec (parameters, prompt tokens)
                merged[key] = value if len(set(values)) == 1 else statistics.median(values)
            elif isinstance(value, float):
                merged[key] = statistics.median(values)
        step_key = next(k for k in ("step_s", "generate_s", "update_s", "matmul_s") if k in merged)
        rows.append({
            **spec, "precision": precision, **merged, "rounds": [r[step_key] for r in measured],
            "attempts": sum(r["attempts"] for r in measured), "under_outside_load": any(r["under_outside_load"] for r in measured),
        })
    return rows


def compute_figures(rows: list[dict[str, Any]], sizes: list[str], ks: list[int], peak_flops: float | None) -> dict[str, Any]:
    """Ratios from the rows measured; a figure whose rows are missing (a failed row) is left out."""

    def find(kind: str, size: str, **match: Any) -> dict[str, Any] | None:
        """The row of that kind and size with exactly these variant keys (a value of ANY_VALUE: set to anything)."""
        return next((r for r in rows if r["kind"] == kind and r["size"] == size
                     and all(k in r if v is ANY_VALUE else r.get(k) == v for k, v in match.items())
                     and all(key in match or key not in r for key in VARIANT_KEYS)), None)

    def ratio(numerator: tuple[dict | None, str], denominator: tuple[dict | None, str]) -> float | None:
        (a, a_key), (b, b_key) = numerator, denominator
        if a is None or b is None or a.get(a_key) is None or b.get(b_key) is None:
            return None
        return a[a_key] / b[b_key]

    figures: dict[str, Any] = {}
    for size in sizes:
        purld = {K: find("purld_grpo", size, K=K) for K in ks}
        static = find("purld_grpo", size, K=8, decoder="static")  # rollout=static: purld's own decoder
        vllm = find("purld_grpo", size, K=8, decoder="vllm")  # rollout=vllm
        static_checkpointed = find("purld_grpo", size, K=8, decoder="static", checkpointing="full")
        generate, update = find("generate_floor", size), find("grpo_update_floor", size)
        dpo, dpo_floor = find("purld_dpo", size), find("dpo_update_floor", size)
        trl_grpo_row, trl_dpo_row = find("trl_grpo", size), find("trl_dpo", size)
        lora, trl_lora = find("purld_grpo", size, K=8, lora=True), find("trl_grpo", size, lora=True)  # adapters on both sides
        dpo_lora, trl_dpo_lora = find("purld_dpo", size, lora=True), find("trl_dpo", size, lora=True)
        checkpointed = find("purld_grpo", size, K=8, checkpointing="full")  # as TRL runs by default: memory for time
        not_checkpointed = find("purld_grpo", size, K=8, checkpointing="none")  # a real student's rows without it
        dpo_checkpointed = find("purld_dpo", size, checkpointing="full")
        selective = find("purld_grpo", size, K=8, checkpointing="selective")
        micro = find("purld_grpo", size, K=8, micro_batch_size=ANY_VALUE)
        dpo_micro = find("purld_dpo", size, micro_batch_size=ANY_VALUE)
        plain_layers = find("purld_grpo", size, K=8, lean_activations=False)  # student.lean_activations=false
        dpo_plain_layers = find("purld_dpo", size, lean_activations=False)
        floor = {"step_s": generate["generate_s"] + update["update_s"]} if generate and update else None
        matmuls = find("matmul_rate", size, K=8)
        memory = "peak_gpu_mb" if any("peak_gpu_mb" in r for r in rows) else "peak_rss_mb"
        values = {
            "grpo_step_ratio": ratio((purld[8], "step_s"), (trl_grpo_row, "step_s")),
            "dpo_step_ratio": ratio((dpo, "step_s"), (trl_dpo_row, "step_s")),
            "grpo_rss_ratio": ratio((purld[8], "peak_rss_mb"), (trl_grpo_row, "peak_rss_mb")),
            "dpo_rss_ratio": ratio((dpo, "peak_rss_mb"), (trl_dpo_row, "peak_rss_mb")),
            "lora_grpo_step_ratio": ratio((lora, "step_s"), (trl_lora, "step_s")),
            "lora_dpo_step_ratio": ratio((dpo_lora, "step_s"), (trl_dpo_lora, "step_s")),
            "lora_grpo_rss_ratio": ratio((lora, "peak_rss_mb"), (trl_lora, "peak_rss_mb")),
            "lora_dpo_rss_ratio": ratio((dpo_lora, "peak_rss_mb"), (trl_dpo_lora, "peak_rss_mb")),
            "grpo_step_vs_floor": ratio((purld[8], "step_s"), (floor, "step_s")),
            "dpo_step_vs_floor": ratio((dpo, "step_s"), (dpo_floor, "step_s")),
            "rollout_vs_generate_floor": ratio((purld[8], "rollout_tokens_per_s"), (generate, "tokens_per_s")),
            "grpo_step_ratio_without_lean_activations": ratio((plain_layers, "step_s"), (trl_grpo_row, "step_s")),
            "grpo_rss_ratio_without_lean_activations": ratio((plain_layers, "peak_rss_mb"), (trl_grpo_row, "peak_rss_mb")),
            "dpo_step_ratio_without_lean_activations": ratio((dpo_plain_layers, "step_s"), (trl_dpo_row, "step_s")),
            "dpo_rss_ratio_without_lean_activations": ratio((dpo_plain_layers, "peak_rss_mb"), (trl_dpo_row, "peak_rss_mb")),
            "grpo_step_ratio_without_checkpointing": ratio((not_checkpointed, "step_s"), (trl_grpo_row, "step_s")),
            "grpo_rss_ratio_without_checkpointing": ratio((not_checkpointed, "peak_rss_mb"), (trl_grpo_row, "peak_rss_mb")),
            "grpo_step_ratio_checkpointing": ratio((checkpointed, "step_s"), (trl_grpo_row, "step_s")),
            "grpo_rss_ratio_checkpointing": ratio((checkpointed, "peak_rss_mb"), (trl_grpo_row, "peak_rss_mb")),
            "dpo_step_ratio_checkpointing": ratio((dpo_checkpointed, "step_s"), (trl_dpo_row, "step_s")),
            "dpo_rss_ratio_checkpointing": ratio((dpo_checkpointed, "peak_rss_mb"), (trl_dpo_row, "peak_rss_mb")),
            "grpo_step_ratio_selective_checkpointing": ratio((selective, "step_s"), (trl_grpo_row, "step_s")),
            "grpo_rss_ratio_selective_checkpointing": ratio((selective, "peak_rss_mb"), (trl_grpo_row, "peak_rss_mb")),
            # data.micro_batch_size: the update in passes of that many sequences (memory for some time)
            "grpo_step_ratio_micro_batch": ratio((micro, "step_s"), (trl_grpo_row, "step_s")),
            "grpo_rss_ratio_micro_batch": ratio((micro, "peak_rss_mb"), (trl_grpo_row, "peak_rss_mb")),
            "dpo_step_ratio_micro_batch": ratio((dpo_micro, "step_s"), (trl_dpo_row, "step_s")),
            "dpo_rss_ratio_micro_batch": ratio((dpo_micro, "peak_rss_mb"), (trl_dpo_row, "peak_rss_mb")),
            "grpo_step_ratio_static_decoder": ratio((static, "step_s"), (trl_grpo_row, "step_s")),
            "grpo_rss_ratio_static_decoder": ratio((static, "peak_rss_mb"), (trl_grpo_row, "peak_rss_mb")),
            "grpo_step_vs_floor_static_decoder": ratio((static, "step_s"), (floor, "step_s")),
            "rollout_vs_generate_floor_static_decoder": ratio((static, "rollout_tokens_per_s"), (generate, "tokens_per_s")),
            "grpo_step_ratio_static_decoder_checkpointing": ratio((static_checkpointed, "step_s"), (trl_grpo_row, "step_s")),
            "grpo_step_ratio_vllm": ratio((vllm, "step_s"), (trl_grpo_row, "step_s")),
            "rollout_vs_generate_floor_vllm": ratio((vllm, "rollout_tokens_per_s"), (generate, "tokens_per_s")),
        }
        if purld[8] is not None and "prompt_tokens" in purld[8]:  # the same batch on both sides
            shape = (purld[8]["parameters"], NUM_PROMPTS, purld[8]["K"], purld[8]["prompt_tokens"], purld[8]["new_tokens"])
            values["grpo_work_ratio"] = grpo_step_work(*shape, side="purld") / grpo_step_work(*shape, side="trl")
            if matmuls:  # each update's FLOP rate over the rate of its matmuls alone at these shapes (`matmul_rate`)
                rate = matmuls["matmul_flops_per_s"]
                values["grpo_update_vs_matmul_rate"] = grpo_update_work(*shape, side="purld") / purld[8]["update_total_s"] / rate
                if update:  # the hand-written update reads every row in full: its update_flops
                    values["grpo_update_floor_vs_matmul_rate"] = update["update_flops"] / update["update_s"] / rate
                if trl_grpo_row and generate:  # TRL's update time estimated as its step less the plain `generate`
                    trl_update_s = trl_grpo_row["step_s"] - generate["generate_s"]
                    values["trl_grpo_update_vs_matmul_rate"] = grpo_update_work(*shape, side="trl") / trl_update_s / rate
        if memory == "peak_gpu_mb":
            values["grpo_gpu_memory_ratio"] = ratio((purld[8], memory), (trl_grpo_row, memory))
            values["grpo_gpu_memory_ratio_static_decoder"] = ratio((static, memory), (trl_grpo_row, memory))
            values["grpo_gpu_memory_ratio_static_decoder_checkpointing"] = ratio((static_checkpointed, memory), (trl_grpo_row, memory))
            values["dpo_gpu_memory_ratio"] = ratio((dpo, memory), (trl_dpo_row, memory))
        if peak_flops:  # model-FLOPs utilisation of the updates
            for name, row, seconds in (("grpo_update_mfu", purld[8], "update_total_s"), ("grpo_update_mfu_static_decoder", static, "update_total_s"),
                                       ("grpo_update_floor_mfu", update, "update_s"), ("dpo_update_mfu", dpo, "step_s"),
                                       ("dpo_update_floor_mfu", dpo_floor, "step_s")):
                if row is not None and row.get("update_flops") and row.get(seconds):
                    values[name] = row["update_flops"] / row[seconds] / peak_flops
        for ranker in ("likelihood", "self_judge"):
            row = find("purld_grpo", size, K=8, ranker=ranker)
            values[f"ranking_fraction_{ranker}"] = row["ranking_fraction"] if row else None
            values[f"{ranker}_share"] = values[f"ranking_fraction_{ranker}"]  # the name the real-student report reads
        values["rollout_vs_generate"] = values["rollout_vs_generate_floor"]
        if all(purld[K] for K in ks) and len(ks) > 1:
            values["grpo_step_by_K"] = {K: purld[K]["step_s"] for K in ks}
            values[f"grpo_step_per_K_vs_K{ks[0]}"] = {K: (purld[K]["step_s"] / K) / (purld[ks[0]]["step_s"] / ks[0]) for K in ks}
        figures.update({f"{size}_{name}": value for name, value in values.items() if value is not None})
    return figures


HEADLINE = ("grpo_step_ratio", "grpo_work_ratio", "dpo_step_ratio", "grpo_rss_ratio", "dpo_rss_ratio", "grpo_step_vs_floor", "dpo_step_vs_floor",
            "lora_grpo_step_ratio", "lora_dpo_step_ratio", "lora_grpo_rss_ratio", "lora_dpo_rss_ratio", "rollout_vs_generate",
            "self_judge_share", "likelihood_share",
            "rollout_vs_generate_floor", "grpo_step_ratio_without_lean_activations", "grpo_rss_ratio_without_lean_activations",
            "dpo_step_ratio_without_lean_activations", "dpo_rss_ratio_without_lean_activations",
            "grpo_step_ratio_without_checkpointing", "grpo_rss_ratio_without_checkpointing",
            "grpo_step_ratio_checkpointing", "grpo_rss_ratio_checkpointing", "dpo_step_ratio_checkpointing", "dpo_rss_ratio_checkpointing",
            "grpo_step_ratio_selective_checkpointing", "grpo_rss_ratio_selective_checkpointing",
            "grpo_step_ratio_micro_batch", "grpo_rss_ratio_micro_batch", "dpo_step_ratio_micro_batch", "dpo_rss_ratio_micro_batch",
            "grpo_step_ratio_static_decoder", "grpo_rss_ratio_static_decoder", "grpo_step_vs_floor_static_decoder",
            "rollout_vs_generate_floor_static_decoder", "grpo_step_ratio_static_decoder_checkpointing",
            "grpo_step_ratio_vllm", "rollout_vs_generate_floor_vllm",
            "grpo_gpu_memory_ratio", "grpo_gpu_memory_ratio_static_decoder", "grpo_gpu_memory_ratio_static_decoder_checkpointing",
            "dpo_gpu_memory_ratio", "grpo_update_mfu", "grpo_update_mfu_static_decoder", "grpo_update_floor_mfu", "dpo_update_mfu",
            "dpo_update_floor_mfu", "grpo_update_vs_matmul_rate", "grpo_update_floor_vs_matmul_rate", "trl_grpo_update_vs_matmul_rate")
