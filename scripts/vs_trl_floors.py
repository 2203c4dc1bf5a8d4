"""scripts/bench_vs_trl.py's floors: one plain batched `generate`, hand-written GRPO and DPO updates, and the
machine's matmul rate at one layer's update shapes."""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vs_trl_harness import (  # noqa: E402
    BETA_DPO,
    BETA_GRPO,
    EPSILON,
    MAX_POSITIONS,
    NUM_PROMPTS,
    SIZES,
    _sequence_inputs,
    as_read,
    build_model,
    dpo_texts,
    harness_items,
    median_after,
    parameter_count,
    precision_context,
    purld_optimizer,
    setup_torch,
    synchronize,
    timed_updates,
    update_flops,
)

def generate_floor(
    size: str, K: int, steps: int, warmup: int, threads: int, precision: str, device: str = "cpu", new_tokens: int = 32,
    cache: str | None = None, prompts: str = "arithmetic",
) -> dict:
    """One plain batched `generate` of the same batch; `cache` static: the same call with a preallocated KV cache."""
    torch = setup_torch(threads)
    model, tokenizer = build_model(size, device=device)
    model.eval()
    texts = [as_read(tokenizer, prompt) for prompt, _ in harness_items(prompts, NUM_PROMPTS, tokenizer, MAX_POSITIONS - new_tokens)]
    encoded = tokenizer(texts, padding=True, padding_side="left", add_special_tokens=False, return_tensors="pt").to(device)
    from purld.rollout.sampler import Sampler

    cache_kwargs = Sampler(cache_implementation=cache).cache_kwargs()  # the same generate arguments purld's rollout passes
    times = []
    for _ in range(steps + warmup):
        synchronize(device)
        start = time.perf_counter()
        with torch.no_grad(), precision_context(precision, device):
            model.generate(
                input_ids=encoded["input_ids"].repeat_interleave(K, 0),
                attention_mask=encoded["attention_mask"].repeat_interleave(K, 0),
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                **cache_kwargs,
            )
        synchronize(device)
        times.append(time.perf_counter() - start)
    generate_s = median_after(times, warmup)
    return {"generate_s": generate_s, "tokens_per_s": NUM_PROMPTS * K * new_tokens / generate_s}


def policy_and_reference(size: str, device: str):
    """A hand-written update's model and tokenizer, its frozen copy, and the harness's optimizer."""
    import copy

    model, tokenizer = build_model(size, device=device)
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    return model, tokenizer, reference, purld_optimizer(model.parameters())


def grpo_update_floor(
    size: str, K: int, steps: int, warmup: int, threads: int, precision: str, device: str = "cpu", new_tokens: int = 32,
    prompts: str = "arithmetic",
) -> dict:
    """One hand-written GRPO update on 8 × K full-length completions: policy + reference forward, k3 KL, clipped loss."""
    torch = setup_torch(threads)
    from purld.rollout.logprobs import completion_token_logps  # one forward, the same for every side

    model, tokenizer, reference, optimizer = policy_and_reference(size, device)
    rng = random.Random(0)
    rows = [p for p, _ in harness_items(prompts, NUM_PROMPTS, tokenizer, MAX_POSITIONS - new_tokens) for _ in range(K)]
    completions = ["".join(rng.choice("0123456789+= ans") for _ in range(new_tokens - 1)) for _ in rows]
    inputs = _sequence_inputs(tokenizer, rows, completions, device)
    mask = inputs[3]
    advantages = torch.randn(len(rows), device=device)[:, None]

    def loss() -> torch.Tensor:
        logps = completion_token_logps(model, *inputs)
        with torch.no_grad():
            ref_logps = completion_token_logps(reference, *inputs)
        ratio = torch.exp(logps - logps.detach())
        per_token = -torch.min(ratio * advantages, ratio.clamp(1 - EPSILON, 1 + EPSILON) * advantages)
        per_token = per_token + BETA_GRPO * (torch.exp(ref_logps - logps) - (ref_logps - logps) - 1)
        return (per_token * mask).sum() / mask.sum()

    update_s = timed_updates(model, optimizer, loss, steps, warmup, precision, device)
    num_tokens = inputs[0].numel() + inputs[2].numel()
    return {"update_s": update_s, "update_flops": update_flops(parameter_count(model), num_tokens)}


def dpo_update_floor(
    size: str, steps: int, warmup: int, threads: int, precision: str, device: str = "cpu", new_tokens: int = 32,
    prompts: str = "arithmetic",
) -> dict:
    torch = setup_torch(threads)
    import torch.nn.functional as F

    from purld.rollout.logprobs import completion_token_logps

    model, tokenizer, reference, optimizer = policy_and_reference(size, device)
    rows = dpo_texts(NUM_PROMPTS, new_tokens, prompts, tokenizer)
    answers = [r["chosen"] for r in rows] + [r["rejected"] for r in rows]
    inputs = _sequence_inputs(tokenizer, [r["prompt"] for r in rows] * 2, answers, device)
    mask = inputs[3]

    def loss() -> torch.Tensor:
        logps = (completion_token_logps(model, *inputs) * mask).sum(-1)
        with torch.no_grad():
            ref = (completion_token_logps(reference, *inputs) * mask).sum(-1)
        margin = BETA_DPO * ((logps[:NUM_PROMPTS] - ref[:NUM_PROMPTS]) - (logps[NUM_PROMPTS:] - ref[NUM_PROMPTS:]))
        return -F.logsigmoid(margin).mean()

    step_s = timed_updates(model, optimizer, loss, steps, warmup, precision, device)
    return {"step_s": step_s, "update_flops": update_flops(parameter_count(model), inputs[0].numel() + inputs[2].numel())}


# ------------------------------------------------------- the machine: its matmul rate
def matmul_rate(
    size: str, threads: int, precision: str, device: str = "cpu", K: int = 8, new_tokens: int = 32, steps: int = 6,
    warmup: int = 2, prompts: str = "arithmetic",
) -> dict:
    """FLOP/s of this machine's matmuls at one layer's update shapes, in the run's precision: the B·K·T completion
    rows through each weight of a `size` layer (q, k, v, o, gate, up, down) as forward (x·Wᵀ), input gradient (g·W)
    and weight gradient (gᵀ·x) — 6·(the layer's parameters) FLOPs per row, what an update's matmuls do. The rate
    the update's matmuls can reach here; the update's own rate is read against it (`grpo_update_vs_matmul_rate`).
    `prompts` is accepted for the common arguments; the shapes do not depend on it."""
    torch = setup_torch(threads)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    H, I = SIZES[size]["hidden_size"], SIZES[size]["intermediate_size"]
    rows = NUM_PROMPTS * K * new_tokens
    shapes = [(H, H)] * 4 + [(I, H)] * 2 + [(H, I)]  # (out, in) of q, k, v, o, gate, up, down
    operands = [(torch.randn(rows, d_in, dtype=dtype, device=device), torch.randn(d_out, d_in, dtype=dtype, device=device),
                 torch.randn(rows, d_out, dtype=dtype, device=device)) for d_out, d_in in shapes]
    flops = sum(6.0 * rows * d_out * d_in for d_out, d_in in shapes)
    times = []
    for _ in range(steps + warmup):
        synchronize(device)
        start = time.perf_counter()
        for x, weight, grad in operands:
            x @ weight.T, grad @ weight, grad.T @ x
        synchronize(device)
        times.append(time.perf_counter() - start)
    matmul_s = median_after(times, warmup)
    return {"matmul_s": matmul_s, "matmul_flops_per_s": flops / matmul_s, "matmul_rows": rows}
