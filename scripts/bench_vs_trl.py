"""purld against TRL on identical work: GRPO and DPO steps, rollout throughput, peak memory, scaling in K.

    pip install -e ".[bench]"            # TRL, as a user installs it
    python scripts/bench_vs_trl.py --out outputs/bench/vs_trl.json
    python scripts/bench_vs_trl.py --quick --out /tmp/vs_trl.json      # the smoke test's settings

Every measurement runs in its own subprocess (so peak RSS is that work's alone;
`--quick` runs them in one process to check the code paths only) with the same
number of torch threads, on the same random-init Llama, the same prompts and the
same lengths:
- GRPO: 8 prompts × K completions of exactly 32 new tokens (EOS suppressed on
  both sides), β 0.04, ε 0.2, loss_type dapo, group-scaled rewards, the same
  lexical (ROUGE-L to the anchor) reward, one optimisation step per rollout.
  purld: `purld-train`'s GroupModule under a Lightning Trainer. TRL: GRPOTrainer.
- DPO: 8 pairs of ~32-token prompts and ~32-token answers, β 0.1, sigmoid loss,
  a frozen reference model. purld: PairwiseModule.dpo_step + AdamW step (the
  update purld-train runs after ranking; rollout excluded, as TRL's DPO is offline).
  TRL: DPOTrainer.
- TRL runs with its own defaults except precision (it turns on gradient
  checkpointing); purld is measured without it (its default) and with
  `student.gradient_checkpointing=true`, in separate rows.
- Floors, in the same precision: one plain batched `model.generate` of the same
  batch, and hand-written updates (one forward of policy and reference, the
  loss, backward, clip, AdamW step) — what no framework can beat by much.
Step times are medians after `--warmup` steps. Around each subprocess the
machine's CPU time is read from /proc/stat; if other processes used more than
`--max-outside-load` cores meanwhile, the measurement is repeated (up to
`--retries` times) and the output says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quickstart import machine_busy_seconds  # noqa: E402

SIZES = {  # random-init Llama, char tokenizer (vocab 104)
    "tiny": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=688),  # 3.2 M
    "small": dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, intermediate_size=1376),  # 25.3 M
}
NUM_PROMPTS = 8
NEW_TOKENS = 32
BETA_GRPO, EPSILON, BETA_DPO, LR = 0.04, 0.2, 0.1, 1e-5


# ---------------------------------------------------------------------- shared
def setup_torch(threads: int, seed: int = 0):
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    random.seed(seed)
    return torch


def build_model(size: str, seed: int = 0):
    """`student=tiny` (random-init Llama, char tokenizer) at one of the harness's sizes."""
    from purld.students.tiny import TinyLlamaStudent

    return TinyLlamaStudent(**SIZES[size], max_position_embeddings=256, seed=seed).load()


def arithmetic_items(count: int) -> list[tuple[str, str]]:
    """(prompt, anchor) pairs of the embedded task: 3-digit additions with worked answers."""
    from purld.tasks.arithmetic import ArithmeticTask

    task = ArithmeticTask(num_train=count, num_heldout=1, min_digits=3, max_digits=3, seed=0)
    return [(e.prompt, e.reference) for e in task.examples("train")]


def lexical_reward(completion: str, anchor: str) -> float:
    from purld.ranking.lexical import rouge_l

    return rouge_l(list(completion.strip()), list(anchor.strip()))


def dpo_texts(count: int) -> list[dict[str, str]]:
    """Random printable strings: 31-char prompts, 31-char chosen / rejected (32 tokens with EOS)."""
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz "
    word = lambda: "".join(rng.choice(letters) for _ in range(31))  # noqa: E731
    return [{"prompt": word(), "chosen": word(), "rejected": word()} for _ in range(count)]


def median_after(times: list[float], warmup: int) -> float:
    return statistics.median(times[warmup:])


def precision_context(precision: str):
    import contextlib

    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


# ------------------------------------------------------------- purld: GRPO step
def purld_grpo(
    size: str, K: int, steps: int, warmup: int, threads: int, precision: str, ranker: str = "lexical", checkpointing: bool = False
) -> dict:
    torch = setup_torch(threads)
    import copy

    import lightning as L

    from purld.anchors.cache import AnchorCache
    from purld.data.datamodule import AnchorDataModule
    from purld.modules import module_for
    from purld.objectives.grpo import GRPOObjective
    from purld.preferences.group import GroupTargetBuilder
    from purld.ranking.lexical import LexicalRanker
    from purld.ranking.likelihood import LikelihoodRanker
    from purld.ranking.self_judge import SelfJudgeRanker
    from purld.rollout.sampler import Sampler
    from purld.tasks.arithmetic import ArithmeticTask
    from purld.teachers.reference import ReferenceTeacher

    model, tokenizer = build_model(size)
    if checkpointing:  # student.gradient_checkpointing=true, what TRL does by default
        from purld.students.base import enable_gradient_checkpointing

        enable_gradient_checkpointing(model)
    task = ArithmeticTask(num_train=NUM_PROMPTS * (steps + warmup), num_heldout=1, min_digits=3, max_digits=3, seed=0)
    rankers = {"lexical": LexicalRanker, "likelihood": LikelihoodRanker, "self_judge": SelfJudgeRanker}
    with tempfile.TemporaryDirectory() as tmp:
        datamodule = AnchorDataModule(
            task=task,
            teacher=ReferenceTeacher(),
            anchor_cache=AnchorCache(Path(tmp) / "anchors.sqlite"),
            ranker=rankers[ranker](),
            tokenizer=tokenizer,
            batch_size=NUM_PROMPTS,
            progress=False,
        )
        objective = GRPOObjective(beta=BETA_GRPO, epsilon=EPSILON, loss_type="dapo", preferences=GroupTargetBuilder())
        module = module_for(
            objective,
            model=model,
            tokenizer=tokenizer,
            optimizer=lambda params: torch.optim.AdamW(params, lr=LR),
            sampler=Sampler(num_candidates=K, max_new_tokens=NEW_TOKENS, temperature=1.0, suppress_eos=True),
            reference_model=copy.deepcopy(model),
        )
        timer = StepTimer()
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            max_steps=steps + warmup,
            precision="bf16-mixed" if precision == "bf16" else "32-true",
            gradient_clip_val=1.0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            use_distributed_sampler=False,
            callbacks=[timer],
        )
        datamodule.prepare_data()
        datamodule.setup("fit")
        trainer.fit(module, datamodule=datamodule)
    split = {name: median_after(values, warmup) for name, values in timer.parts.items()}
    step = median_after(timer.steps, warmup)
    completion_tokens = NUM_PROMPTS * K * NEW_TOKENS
    return {
        "step_s": step,
        "rollout_s": split.get("time/rollout"),
        "ranking_s": split.get("time/ranking"),
        "update_s": split.get("time/update"),
        "rollout_tokens_per_s": completion_tokens / split["time/rollout"],
        "ranking_fraction": split["time/ranking"] / step,
    }


def StepTimer():  # noqa: N802 — built lazily so the module imports without lightning
    import lightning as L

    class _StepTimer(L.Callback):
        """Wall time of each whole training step (forward, backward, optimizer), and the module's own split."""

        def __init__(self) -> None:
            self.steps: list[float] = []
            self.parts: dict[str, list[float]] = {}

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            self._start = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            self.steps.append(time.perf_counter() - self._start)
            for name, value in module._timings.items():  # read before the module logs and clears them
                self.parts.setdefault(name, []).append(value)

    return _StepTimer()


# --------------------------------------------------------------- TRL: GRPO step
def trl_step_timer():
    from transformers import TrainerCallback

    class _Timer(TrainerCallback):
        def __init__(self) -> None:
            self.steps: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.steps.append(time.perf_counter() - self._start)

    return _Timer()


def trl_grpo(size: str, K: int, steps: int, warmup: int, threads: int, precision: str) -> dict:
    setup_torch(threads)
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    model, tokenizer = build_model(size)
    items = arithmetic_items(NUM_PROMPTS * (steps + warmup))
    dataset = Dataset.from_list([{"prompt": prompt, "anchor": anchor} for prompt, anchor in items])

    def reward(completions, anchor, **_):
        return [lexical_reward(c, a) for c, a in zip(completions, anchor)]

    timer = trl_step_timer()
    with tempfile.TemporaryDirectory() as tmp:
        args = GRPOConfig(
            output_dir=tmp,
            per_device_train_batch_size=NUM_PROMPTS * K,
            num_generations=K,
            max_completion_length=NEW_TOKENS,
            max_steps=steps + warmup,
            learning_rate=LR,
            beta=BETA_GRPO,
            epsilon=EPSILON,
            loss_type="dapo",
            scale_rewards="group",
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            num_iterations=1,
            max_grad_norm=1.0,
            generation_kwargs={"suppress_tokens": [tokenizer.eos_token_id]},
            bf16=precision == "bf16",  # TRL's other defaults (gradient checkpointing) stay as a user gets them
            use_cpu=True,
            logging_steps=1,
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
            seed=0,
            shuffle_dataset=False,
        )
        # TRL builds its reference model from the policy's path, so the policy goes through disk as a user's would.
        model.save_pretrained(Path(tmp) / "model")
        tokenizer.save_pretrained(Path(tmp) / "model")
        trainer = GRPOTrainer(
            model=str(Path(tmp) / "model"), reward_funcs=reward, args=args, train_dataset=dataset,
            processing_class=tokenizer, callbacks=[timer],
        )
        trainer.train()
    return {"step_s": median_after(timer.steps, warmup)}


# ----------------------------------------------------------------------- floors
def generate_floor(size: str, K: int, steps: int, warmup: int, threads: int, precision: str) -> dict:
    torch = setup_torch(threads)
    model, tokenizer = build_model(size)
    model.eval()
    prompts = [prompt for prompt, _ in arithmetic_items(NUM_PROMPTS)]
    encoded = tokenizer(prompts, padding=True, padding_side="left", add_special_tokens=False, return_tensors="pt")
    times = []
    for _ in range(steps + warmup):
        start = time.perf_counter()
        with torch.no_grad(), precision_context(precision):
            model.generate(
                input_ids=encoded["input_ids"].repeat_interleave(K, 0),
                attention_mask=encoded["attention_mask"].repeat_interleave(K, 0),
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
            )
        times.append(time.perf_counter() - start)
    generate_s = median_after(times, warmup)
    return {"generate_s": generate_s, "tokens_per_s": NUM_PROMPTS * K * NEW_TOKENS / generate_s}


def _sequence_inputs(tokenizer, prompts: list[str], completions: list[str]):
    """Left-padded prompts and right-padded completions (EOS appended): the four tensors the log-prob functions take."""
    p = tokenizer(prompts, padding=True, padding_side="left", add_special_tokens=False, return_tensors="pt")
    eos = tokenizer.eos_token
    c = tokenizer([text + eos for text in completions], padding=True, padding_side="right", add_special_tokens=False, return_tensors="pt")
    return p["input_ids"], p["attention_mask"].bool(), c["input_ids"], c["attention_mask"].bool()


def timed_updates(model, optimizer, loss_fn, steps: int, warmup: int, precision: str) -> float:
    """Median wall time of `steps` (after `warmup`) updates: loss_fn() under the precision, backward, clip 1.0, AdamW."""
    import torch

    times = []
    for _ in range(steps + warmup):
        start = time.perf_counter()
        with precision_context(precision):
            loss = loss_fn()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return median_after(times, warmup)


def grpo_update_floor(size: str, K: int, steps: int, warmup: int, threads: int, precision: str) -> dict:
    """One hand-written GRPO update on 8 × K full-length completions: policy + reference forward, k3 KL, clipped loss."""
    torch = setup_torch(threads)
    import copy

    from purld.rollout.logprobs import completion_token_logps  # one forward, the same for every side

    model, tokenizer = build_model(size)
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    rng = random.Random(0)
    prompts = [p for p, _ in arithmetic_items(NUM_PROMPTS) for _ in range(K)]
    completions = ["".join(rng.choice("0123456789+= ans") for _ in range(NEW_TOKENS - 1)) for _ in prompts]
    inputs = _sequence_inputs(tokenizer, prompts, completions)
    mask = inputs[3]
    advantages = torch.randn(len(prompts))[:, None]

    def loss() -> torch.Tensor:
        logps = completion_token_logps(model, *inputs)
        with torch.no_grad():
            ref_logps = completion_token_logps(reference, *inputs)
        ratio = torch.exp(logps - logps.detach())
        per_token = -torch.min(ratio * advantages, ratio.clamp(1 - EPSILON, 1 + EPSILON) * advantages)
        per_token = per_token + BETA_GRPO * (torch.exp(ref_logps - logps) - (ref_logps - logps) - 1)
        return (per_token * mask).sum() / mask.sum()

    return {"update_s": timed_updates(model, optimizer, loss, steps, warmup, precision)}


def dpo_update_floor(size: str, steps: int, warmup: int, threads: int, precision: str) -> dict:
    torch = setup_torch(threads)
    import copy

    import torch.nn.functional as F

    from purld.rollout.logprobs import completion_token_logps

    model, tokenizer = build_model(size)
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    rows = dpo_texts(NUM_PROMPTS)
    prompts = [r["prompt"] for r in rows] * 2
    inputs = _sequence_inputs(tokenizer, prompts, [r["chosen"] for r in rows] + [r["rejected"] for r in rows])
    mask = inputs[3]

    def loss() -> torch.Tensor:
        logps = (completion_token_logps(model, *inputs) * mask).sum(-1)
        with torch.no_grad():
            ref = (completion_token_logps(reference, *inputs) * mask).sum(-1)
        margin = BETA_DPO * ((logps[:NUM_PROMPTS] - ref[:NUM_PROMPTS]) - (logps[NUM_PROMPTS:] - ref[NUM_PROMPTS:]))
        return -F.logsigmoid(margin).mean()

    return {"step_s": timed_updates(model, optimizer, loss, steps, warmup, precision)}


# -------------------------------------------------------------- purld: DPO step
def purld_dpo(size: str, steps: int, warmup: int, threads: int, precision: str) -> dict:
    torch = setup_torch(threads)
    import copy

    from purld.modules import PairwiseModule
    from purld.objectives.dpo import DPOObjective
    from purld.types import Example, Pairs, PromptBatch, Rollout

    model, tokenizer = build_model(size)
    module = PairwiseModule(
        model=model,
        tokenizer=tokenizer,
        objective=DPOObjective(beta=BETA_DPO, loss_type="sigmoid"),
        optimizer=lambda params: torch.optim.AdamW(params, lr=LR),
        reference_model=copy.deepcopy(model),
    )
    optimizer = module.configure_optimizers()
    rows = dpo_texts(NUM_PROMPTS)
    prompts = tokenizer([r["prompt"] for r in rows], padding=True, padding_side="left", add_special_tokens=False, return_tensors="pt")
    answers = tokenizer(
        [text + tokenizer.eos_token for r in rows for text in (r["chosen"], r["rejected"])],
        padding=True, padding_side="right", add_special_tokens=False, return_tensors="pt",
    )
    B = NUM_PROMPTS
    completion_ids = answers["input_ids"].reshape(B, 2, -1)
    completion_mask = answers["attention_mask"].bool().reshape(B, 2, -1)
    batch = PromptBatch(
        examples=[Example(prompt_id=str(i), prompt=r["prompt"], reference=r["chosen"]) for i, r in enumerate(rows)],
        anchors=[r["chosen"] for r in rows],
        prompt_ids=prompts["input_ids"],
        prompt_mask=prompts["attention_mask"].bool(),
        anchor_ids=completion_ids[:, 0],
        anchor_mask=completion_mask[:, 0],
    )
    rollout = Rollout(
        texts=[[r["chosen"], r["rejected"]] for r in rows],
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        sampling_token_logps=torch.zeros(completion_ids.shape),
        is_truncated=torch.zeros(B, 2, dtype=torch.bool),
    )
    pairs = Pairs(
        prompt_index=torch.arange(B), chosen_index=torch.zeros(B, dtype=torch.long),
        rejected_index=torch.ones(B, dtype=torch.long), score_margin=torch.ones(B),
    )
    step_s = timed_updates(model, optimizer, lambda: module.dpo_step(batch, rollout, pairs).loss, steps, warmup, precision)
    return {"step_s": step_s}


# --------------------------------------------------------------- TRL: DPO step
def trl_dpo(size: str, steps: int, warmup: int, threads: int, precision: str) -> dict:
    setup_torch(threads)
    import copy

    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    model, tokenizer = build_model(size)
    dataset = Dataset.from_list(dpo_texts(NUM_PROMPTS) * (steps + warmup))
    timer = trl_step_timer()
    with tempfile.TemporaryDirectory() as tmp:
        args = DPOConfig(
            output_dir=tmp,
            per_device_train_batch_size=NUM_PROMPTS,
            max_steps=steps + warmup,
            learning_rate=LR,
            beta=BETA_DPO,
            loss_type="sigmoid",
            max_grad_norm=1.0,
            bf16=precision == "bf16",
            use_cpu=True,
            logging_steps=1,
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
            seed=0,
        )
        trainer = DPOTrainer(
            model=model, ref_model=copy.deepcopy(model), args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=[timer]
        )
        trainer.train()
    return {"step_s": median_after(timer.steps, warmup)}


WORKERS = {
    "purld_grpo": purld_grpo,
    "trl_grpo": trl_grpo,
    "generate_floor": generate_floor,
    "grpo_update_floor": grpo_update_floor,
    "purld_dpo": purld_dpo,
    "trl_dpo": trl_dpo,
    "dpo_update_floor": dpo_update_floor,
}


def run_worker(spec: dict[str, Any]) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    kind = spec.pop("kind")
    result = WORKERS[kind](**spec)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


# ------------------------------------------------------------------ orchestrator
def measure(spec: dict[str, Any], max_outside_load: float, retries: int, in_process: bool = False) -> dict[str, Any]:
    """Run one worker in a subprocess; repeat it while other processes loaded the machine.

    `in_process` (the --quick smoke run) skips the subprocess: it checks the code paths, not the figures."""
    if in_process:
        spec = dict(spec)
        result = WORKERS[spec.pop("kind")](**spec)
        return {**result, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "outside_load_cores": 0.0, "wall_s": 0.0, "attempts": 1, "under_outside_load": False}
    attempts = []
    for _ in range(retries + 1):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy, start = machine_busy_seconds(), time.perf_counter()
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(spec["threads"])}
        process = subprocess.run(
            [sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True, env=env
        )
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        own = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        outside = max(machine_busy_seconds() - busy - own, 0.0) / wall
        lines = [line for line in process.stdout.splitlines() if line.startswith("RESULT ")]
        if process.returncode != 0 or not lines:
            raise RuntimeError(f"{spec['kind']} failed (exit {process.returncode}):\n{process.stderr[-3000:]}")
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
    parser.add_argument("--sizes", default="tiny,small")
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
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return run_worker(json.loads(args.worker))
    if args.quick:
        args.sizes, args.ks, args.steps, args.warmup, args.rounds = "tiny", "8", 1, 1, 1
    sizes = args.sizes.split(",")
    ks = sorted({int(k) for k in args.ks.split(",")} | {8})
    common = {"steps": args.steps, "warmup": args.warmup, "threads": args.threads, "precision": args.precision}
    rows: list[dict[str, Any]] = []

    # Every row of a size is measured once per round, rounds interleaved (purld, TRL, floors, purld, …),
    # so slow drifts of a shared machine hit every side alike; a row's figures are medians over rounds.
    specs: list[dict[str, Any]] = []
    for size in sizes:
        specs += [{"kind": "purld_grpo", "size": size, "K": K} for K in ks]
        specs += [{"kind": "generate_floor", "size": size, "K": 8}, {"kind": "grpo_update_floor", "size": size, "K": 8}]
        specs += [{"kind": "purld_grpo", "size": size, "K": 8, "ranker": r} for r in ("likelihood", "self_judge")]
        specs += [{"kind": "purld_grpo", "size": size, "K": 8, "checkpointing": True}]
        specs += [{"kind": "purld_dpo", "size": size}, {"kind": "dpo_update_floor", "size": size}]
        if not args.no_trl:
            specs += [{"kind": "trl_grpo", "size": size, "K": 8}, {"kind": "trl_dpo", "size": size}]
    results: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(specs))}
    for round_number in range(args.rounds):
        for i, spec in enumerate(specs):
            result = measure({**spec, **common}, args.max_outside_load, args.retries, in_process=args.quick)
            results[i].append(result)
            print(f"round {round_number + 1}/{args.rounds} {json.dumps({**spec, **result})}", file=sys.stderr)
    for i, spec in enumerate(specs):
        measured = results[i]
        merged = {key: statistics.median(r[key] for r in measured) for key, value in measured[0].items() if isinstance(value, float)}
        step_key = next(k for k in ("step_s", "generate_s", "update_s") if k in merged)
        rows.append({
            **spec, "precision": args.precision, **merged, "rounds": [r[step_key] for r in measured],
            "attempts": sum(r["attempts"] for r in measured), "under_outside_load": any(r["under_outside_load"] for r in measured),
        })

    def find(kind: str, size: str, **match: Any) -> dict[str, Any]:
        return next(r for r in rows if r["kind"] == kind and r["size"] == size and all(r.get(k) == v for k, v in match.items())
                    and all(key in match or key not in r for key in ("ranker", "checkpointing")))

    figures: dict[str, Any] = {}
    for size in sizes:
        purld = {K: find("purld_grpo", size, K=K) for K in ks}
        generate, update = find("generate_floor", size), find("grpo_update_floor", size)
        dpo, dpo_floor = find("purld_dpo", size), find("dpo_update_floor", size)
        for ranker in ("likelihood", "self_judge"):
            figures[f"{size}_ranking_fraction_{ranker}"] = find("purld_grpo", size, K=8, ranker=ranker)["ranking_fraction"]
        figures[f"{size}_grpo_step_vs_floor"] = purld[8]["step_s"] / (generate["generate_s"] + update["update_s"])
        figures[f"{size}_dpo_step_vs_floor"] = dpo["step_s"] / dpo_floor["step_s"]
        figures[f"{size}_rollout_vs_generate_floor"] = purld[8]["rollout_tokens_per_s"] / generate["tokens_per_s"]
        figures[f"{size}_grpo_step_by_K"] = {K: purld[K]["step_s"] for K in ks}
        figures[f"{size}_grpo_step_per_K_vs_K{ks[0]}"] = {K: (purld[K]["step_s"] / K) / (purld[ks[0]]["step_s"] / ks[0]) for K in ks}
        if not args.no_trl:
            trl_grpo_row, trl_dpo_row = find("trl_grpo", size), find("trl_dpo", size)
            figures[f"{size}_grpo_step_ratio"] = purld[8]["step_s"] / trl_grpo_row["step_s"]
            figures[f"{size}_dpo_step_ratio"] = dpo["step_s"] / trl_dpo_row["step_s"]
            figures[f"{size}_grpo_rss_ratio"] = purld[8]["peak_rss_mb"] / trl_grpo_row["peak_rss_mb"]
            figures[f"{size}_dpo_rss_ratio"] = dpo["peak_rss_mb"] / trl_dpo_row["peak_rss_mb"]
            # With student.gradient_checkpointing=true, as TRL runs by default: memory for time.
            checkpointed = find("purld_grpo", size, K=8, checkpointing=True)
            figures[f"{size}_grpo_step_ratio_checkpointing"] = checkpointed["step_s"] / trl_grpo_row["step_s"]
            figures[f"{size}_grpo_rss_ratio_checkpointing"] = checkpointed["peak_rss_mb"] / trl_grpo_row["peak_rss_mb"]

    first = sizes[0]  # the headline figures: the tiny model
    headline = {
        name: figures.get(f"{first}_{name}")
        for name in ("grpo_step_ratio", "dpo_step_ratio", "grpo_rss_ratio", "dpo_rss_ratio", "grpo_step_vs_floor", "dpo_step_vs_floor",
                     "rollout_vs_generate_floor", "grpo_step_ratio_checkpointing", "grpo_rss_ratio_checkpointing")
    }
    report = {
        **headline,
        "figures": figures,
        "rows": rows,
        "machine": {
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "python": platform.python_version(),
            "torch": __import__("torch").__version__,
            "trl": None if args.no_trl else __import__("trl").__version__,
            "transformers": __import__("transformers").__version__,
        },
        "command": " ".join(["python", "scripts/bench_vs_trl.py", *sys.argv[1:]]),
        "any_under_outside_load": any(r["under_outside_load"] for r in rows),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print_table(report)
    print(f"→ {args.out}")


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"purld vs TRL · {report['machine']['threads']} threads · torch {report['machine']['torch']} · trl {report['machine']['trl']}")
    for column in ("work", "size", "K", "precision", "step / gen s", "peak RSS MB", "outside load", "note"):
        table.add_column(column)
    for r in report["rows"]:
        seconds = r.get("step_s", r.get("generate_s", r.get("update_s")))
        note = f"ranker {r['ranker']}, ranking {r['ranking_fraction']:.0%}" if r.get("ranker") else ""
        if r.get("checkpointing"):
            note = "student.gradient_checkpointing=true"
        elif r["kind"] == "purld_grpo" and not r.get("ranker"):
            note = f"rollout {r['rollout_s']:.3f} + rank {r['ranking_s']:.3f} + update {r['update_s']:.3f}; {r['rollout_tokens_per_s']:.0f} tok/s"
        if r["kind"] == "generate_floor":
            note = f"{r['tokens_per_s']:.0f} tok/s"
        table.add_row(r["kind"], r["size"], str(r.get("K", "")), r["precision"], f"{seconds:.3f}", f"{r['peak_rss_mb']:.0f}",
                      f"{r['outside_load_cores']:.2f}{' !' if r['under_outside_load'] else ''}", note)
    console = Console()
    console.print(table)
    for name in ("grpo_step_ratio", "dpo_step_ratio", "grpo_rss_ratio", "dpo_rss_ratio", "grpo_step_vs_floor", "dpo_step_vs_floor",
                 "rollout_vs_generate_floor", "grpo_step_ratio_checkpointing", "grpo_rss_ratio_checkpointing"):
        value = report.get(name)
        console.print(f"{name}: {'—' if value is None else f'{value:.3f}'}")


if __name__ == "__main__":
    main()
