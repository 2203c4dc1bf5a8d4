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
import itertools
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
from vs_trl_report import print_table  # noqa: E402

SIZES = {  # random-init Llama, char tokenizer (vocab 104)
    "tiny": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=688),  # 3.2 M
    "small": dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, intermediate_size=1376),  # 25.3 M
}
QWEN_SIZES = {  # random-init Qwen2, the char tokenizer padded to the vocabulary (GPU rows: scripts/gpu_bench.sh)
    "qwen05b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                    intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True, rope_theta=1e6),  # 494 M
    "qwen_test": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=128, vocab_size=1000, tie_word_embeddings=True),  # checks the path on CPU
}
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12}  # dense bf16 datasheet figures, the usual MFU denominator
NUM_PROMPTS = 8
PROMPT_SETS = ("arithmetic", "gsm8k")
MAX_POSITIONS = 256  # the Llama sizes' max_position_embeddings: a prompt and its completion must fit
BETA_GRPO, EPSILON, BETA_DPO, LR = 0.04, 0.2, 0.1, 1e-5


# ---------------------------------------------------------------------- shared
def setup_torch(threads: int, seed: int = 0):
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    random.seed(seed)
    return torch


ATTENTION = "eager"  # the Llama sizes' attention kernel, on every side: the faster one here (scripts/bench_attention.py)


def build_model(
    size: str, seed: int = 0, device: str = "cpu", attn_implementation: str = ATTENTION, lean_activations: bool = False,
    checkpointing: str | None = None,
):
    """`student=tiny` (random-init Llama, char tokenizer) at one of the harness's sizes, or a Qwen2 shape.
    `lean_activations`: purld's default `student.lean_activations` (purld's rows); TRL and the floors run
    transformers' own layers. `checkpointing`: purld's `student.gradient_checkpointing` (`full`, what TRL does by
    default, or `selective`)."""
    if size in QWEN_SIZES:
        model, tokenizer = build_qwen(size, seed, device)
        if lean_activations:
            from purld.students.lean_activations import use_lean_activations

            use_lean_activations(model)
    else:
        from purld.students.tiny import TinyLlamaStudent

        model, tokenizer = TinyLlamaStudent(
            **SIZES[size], max_position_embeddings=MAX_POSITIONS, seed=seed, attn_implementation=attn_implementation,
            lean_activations=lean_activations,
        ).load()
        model = model.to(device)
    if checkpointing:
        from purld.students.base import enable_gradient_checkpointing

        enable_gradient_checkpointing(model, selective=checkpointing == "selective")
    return model, tokenizer


def build_qwen(size: str, seed: int, device: str):
    """A random-init Qwen2 of that shape, and the char tokenizer with its vocabulary padded to the model's by
    one-character tokens (code points from U+0100 up), so that any sampled id decodes to one character."""
    import torch
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    from purld.students.tiny import ALPHABET, SPECIAL_TOKENS

    shape = QWEN_SIZES[size]
    filler = (chr(c) for c in range(0x100, 0x110000) if not 0xD800 <= c <= 0xDFFF)
    tokens = SPECIAL_TOKENS + ALPHABET
    tokens += [next(filler) for _ in range(shape["vocab_size"] - len(tokens))]
    backend = Tokenizer(models.BPE(vocab={token: index for index, token in enumerate(tokens)}, merges=[], unk_token="<unk>"))
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>", padding_side="left"
    )
    config = Qwen2Config(**shape, max_position_embeddings=2048, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id, model.generation_config.eos_token_id = 0, 2
    return model, tokenizer


def synchronize(device: str) -> None:
    """Wait for the GPU, so that host clocks time the work and not its launch."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def update_flops(num_parameters: int, num_tokens: int) -> float:
    """Model FLOPs of one update: policy forward + backward (6·N per token) and reference forward (2·N per token)."""
    return 8.0 * num_parameters * num_tokens


def grpo_step_work(num_parameters: int, B: int, K: int, prompt_tokens: int, new_tokens: int, side: str) -> float:
    """Model FLOPs of one GRPO step of B prompts × K completions (2·N per token read forward, 4·N backward; the
    attention scores and the output head left out), as each side's defaults do the work:

    - purld: the rollout reads each prompt once (B·(L − 1) tokens, then B·K·T: each row's last prompt token and
      T − 1 sampled ones), the reference forward and the update read each prompt once (B·L + B·K·T tokens):
      2N·(B·(L − 1) + B·K·T) + 8N·(B·L + B·K·T).
    - TRL (gradient checkpointing on, its default: the forward runs again in backward): `generate` reads the B·K
      rows in full, B·K·(L + T − 1) tokens, the reference and the update B·K·(L + T):
      2N·B·K·(L + T − 1) + 10N·B·K·(L + T).

    Their ratio is the step ratio at equal FLOP rates: what the comparison asks of purld beyond doing less work."""
    N, L, T = num_parameters, prompt_tokens, new_tokens
    update = grpo_update_work(N, B, K, L, T, side)  # checks `side`
    if side == "purld":
        return 2.0 * N * (B * (L - 1) + B * K * T) + update
    return 2.0 * N * B * K * (L + T - 1) + update


def grpo_update_work(num_parameters: int, B: int, K: int, prompt_tokens: int, new_tokens: int, side: str) -> float:
    """The update's part of `grpo_step_work`: the reference forward, the policy forward and backward (and TRL's
    checkpointed forward again)."""
    N, L, T = num_parameters, prompt_tokens, new_tokens
    if side == "purld":
        return update_flops(N, B * L + B * K * T)
    if side == "trl":
        return 10.0 * N * B * K * (L + T)
    raise ValueError(f"side {side!r}: 'purld' or 'trl'")


def arithmetic_task(count: int):
    """The harness's default prompts: `count` 3-digit additions of the embedded task, with worked answers."""
    from purld.tasks.arithmetic import ArithmeticTask

    return ArithmeticTask(num_train=count, num_heldout=1, min_digits=3, max_digits=3, seed=0)


def harness_task(prompts: str, count: int, tokenizer=None, max_prompt_tokens: int | None = None):
    """`count` training prompts of one prompt set, as a purld Task:
    - `arithmetic`: 3-digit additions (about 8 tokens with the char tokenizer);
    - `gsm8k`: the first `count` questions of the shipped GSM8K train split, in `task=gsm8k`'s template, whose
      prompt fits `max_prompt_tokens` under `tokenizer` (about 200 tokens with the char tokenizer)."""
    if prompts == "arithmetic":
        return arithmetic_task(count)
    if prompts != "gsm8k":
        raise ValueError(f"--prompts {prompts!r}: allowed values are {', '.join(PROMPT_SETS)}")
    from purld.tasks.gsm8k import GSM8KTask

    class FittingGSM8K(GSM8KTask):
        def examples(self, split):
            if split != "train":
                return super().examples(split)
            fits = (e for e in super().examples("train")
                    if len(tokenizer(e.prompt, add_special_tokens=False)["input_ids"]) <= max_prompt_tokens)
            return list(itertools.islice(fits, count))  # tokenizes only up to the count-th fitting prompt

    return FittingGSM8K(num_heldout=1)


def harness_items(prompts: str, count: int, tokenizer=None, max_prompt_tokens: int | None = None) -> list[tuple[str, str]]:
    """(prompt, anchor) pairs of `harness_task`."""
    return [(e.prompt, e.reference) for e in harness_task(prompts, count, tokenizer, max_prompt_tokens).examples("train")]


def arithmetic_items(count: int) -> list[tuple[str, str]]:
    """(prompt, anchor) pairs of `arithmetic_task`."""
    return harness_items("arithmetic", count)


def lexical_reward(completion: str, anchor: str) -> float:
    from purld.ranking.lexical import rouge_l

    return rouge_l(list(completion.strip()), list(anchor.strip()))


def dpo_texts(count: int, tokens: int = 32, prompts: str = "arithmetic", tokenizer=None) -> list[dict[str, str]]:
    """Chosen and rejected answers of random printable strings of `tokens` − 1 chars (`tokens` with EOS). Prompts:
    with the default prompt set, random strings of the same length (DPO is offline: no task to answer); with
    `gsm8k`, the GSM8K questions of `harness_task` that fit beside the answer."""
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz "
    word = lambda: "".join(rng.choice(letters) for _ in range(tokens - 1))  # noqa: E731
    rows = [{"prompt": word(), "chosen": word(), "rejected": word()} for _ in range(count)]
    if prompts == "gsm8k":
        for row, (prompt, _) in zip(rows, harness_items("gsm8k", count, tokenizer, MAX_POSITIONS - tokens), strict=True):
            row["prompt"] = prompt
    return rows


def purld_optimizer(params):
    """`purld-train`'s PU-RLD optimizer (conf/config.yaml) with `optimizer.fused=true`, at the harness's learning
    rate, for purld and the floors alike: fused AdamW is TRL's default, so every side runs the same step."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from purld.cli.train import CONFIG_DIR

    return instantiate(OmegaConf.load(Path(CONFIG_DIR) / "config.yaml").optimizer, lr=LR, fused=True)(params=params)


def median_after(times: list[float], warmup: int) -> float:
    return statistics.median(times[warmup:])


def precision_context(precision: str, device: str = "cpu"):
    import contextlib

    import torch

    return torch.autocast(device, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


# ------------------------------------------------------------- purld: GRPO step
def purld_grpo(
    size: str, K: int, steps: int, warmup: int, threads: int, precision: str, ranker: str = "lexical", checkpointing: str | None = None,
    device: str = "cpu", new_tokens: int = 32, cache: str | None = None, micro_batch_size: int | None = None,
    lean_activations: bool = True, prompts: str = "arithmetic", decoder: str = "generate",
) -> dict:
    setup_torch(threads)
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
    from purld.rollout.sampler import Sampler, StaticDecoderSampler
    from purld.teachers.reference import ReferenceTeacher

    model, tokenizer = build_model(size, device=device, lean_activations=lean_activations, checkpointing=checkpointing)
    if decoder == "static":  # rollout=static: purld's own decoder (a CUDA graph per token step on a GPU)
        sampler = StaticDecoderSampler(num_candidates=K, max_new_tokens=new_tokens, temperature=1.0, suppress_eos=True)
    else:
        sampler = Sampler(num_candidates=K, max_new_tokens=new_tokens, temperature=1.0, suppress_eos=True, cache_implementation=cache)
    task = harness_task(prompts, NUM_PROMPTS * (steps + warmup), tokenizer, MAX_POSITIONS - new_tokens)
    rankers = {"lexical": LexicalRanker, "likelihood": LikelihoodRanker, "self_judge": SelfJudgeRanker}
    with tempfile.TemporaryDirectory() as tmp:
        datamodule = AnchorDataModule(
            task=task,
            teacher=ReferenceTeacher(),
            anchor_cache=AnchorCache(Path(tmp) / "anchors.sqlite"),
            tokenizer=tokenizer,
            batch_size=NUM_PROMPTS,
            progress=False,
        )
        objective = GRPOObjective(beta=BETA_GRPO, epsilon=EPSILON, loss_type="dapo", preferences=GroupTargetBuilder())
        module = module_for(
            objective,
            model=model,
            tokenizer=tokenizer,
            optimizer=purld_optimizer,
            sampler=sampler,
            reference_model=copy.deepcopy(model),
            micro_batch_size=micro_batch_size,
            task=task,
            ranker=rankers[ranker](),
        )
        timer = StepTimer(device)
        trainer = L.Trainer(
            accelerator="gpu" if device == "cuda" else "cpu",
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
        prompt_tokens = datamodule.collate(datamodule.train_items[:NUM_PROMPTS]).prompt_ids.shape[1]
        trainer.fit(module, datamodule=datamodule)
    split = {name: median_after(values, warmup) for name, values in timer.parts.items()}
    step = median_after(timer.steps, warmup)
    completion_tokens = NUM_PROMPTS * K * new_tokens
    # The whole update (forward, backward, clip, optimizer): the step less what came before the loss.
    update_total = median_after([s - timer.parts["time/rollout"][i] - timer.parts["time/ranking"][i] for i, s in enumerate(timer.steps)], warmup)
    parameters = parameter_count(model)
    return {
        "step_s": step,
        "rollout_s": split.get("time/rollout"),
        "ranking_s": split.get("time/ranking"),
        "update_s": split.get("time/update"),
        "update_total_s": update_total,
        "update_flops": update_flops(parameters, NUM_PROMPTS * K * (prompt_tokens + new_tokens)),
        "parameters": parameters,
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "rollout_tokens_per_s": completion_tokens / split["time/rollout"],
        "ranking_fraction": split["time/ranking"] / step,
        # rollout=static on CUDA: whether its step was captured as a graph (a failed capture decodes eagerly)
        **({"cuda_graph": sampler.graph_captured} if decoder == "static" else {}),
    }


def StepTimer(device: str = "cpu"):  # noqa: N802 — built lazily so the module imports without lightning
    import lightning as L

    class _StepTimer(L.Callback):
        """Wall time of each whole training step (forward, backward, optimizer), and the module's own split."""

        def __init__(self) -> None:
            self.steps: list[float] = []
            self.parts: dict[str, list[float]] = {}

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            synchronize(device)
            self._start = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            synchronize(device)
            self.steps.append(time.perf_counter() - self._start)
            for name, value in module._timings.items():  # read before the module logs and clears them
                self.parts.setdefault(name, []).append(value)

    return _StepTimer()


# --------------------------------------------------------------- TRL: GRPO step
def trl_step_timer(device: str = "cpu"):
    from transformers import TrainerCallback

    class _Timer(TrainerCallback):
        def __init__(self) -> None:
            self.steps: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            synchronize(device)
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            synchronize(device)
            self.steps.append(time.perf_counter() - self._start)

    return _Timer()


def trl_common_args(output_dir: str, precision: str, device: str) -> dict[str, Any]:
    """What both TRL trainers get beyond their own options: precision and device (TRL's other defaults, gradient
    checkpointing included, stay as a user gets them), clipping, and no logging, saving or progress bars."""
    return {
        "output_dir": output_dir, "max_grad_norm": 1.0, "bf16": precision == "bf16", "use_cpu": device == "cpu",
        "logging_steps": 1, "report_to": "none", "save_strategy": "no", "disable_tqdm": True, "seed": 0,
    }


def trl_grpo(
    size: str, K: int, steps: int, warmup: int, threads: int, precision: str, device: str = "cpu", new_tokens: int = 32,
    prompts: str = "arithmetic",
) -> dict:
    setup_torch(threads)
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    model, tokenizer = build_model(size)  # on the CPU: TRL loads it from disk onto its device
    items = harness_items(prompts, NUM_PROMPTS * (steps + warmup), tokenizer, MAX_POSITIONS - new_tokens)
    dataset = Dataset.from_list([{"prompt": prompt, "anchor": anchor} for prompt, anchor in items])

    def reward(completions, anchor, **_):
        return [lexical_reward(c, a) for c, a in zip(completions, anchor)]

    timer = trl_step_timer(device)
    with tempfile.TemporaryDirectory() as tmp:
        args = GRPOConfig(
            **trl_common_args(tmp, precision, device),
            per_device_train_batch_size=NUM_PROMPTS * K,
            num_generations=K,
            max_completion_length=new_tokens,
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
            generation_kwargs={"suppress_tokens": [tokenizer.eos_token_id]},
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
def generate_floor(
    size: str, K: int, steps: int, warmup: int, threads: int, precision: str, device: str = "cpu", new_tokens: int = 32,
    cache: str | None = None, prompts: str = "arithmetic",
) -> dict:
    """One plain batched `generate` of the same batch; `cache` static: the same call with a preallocated KV cache."""
    torch = setup_torch(threads)
    model, tokenizer = build_model(size, device=device)
    model.eval()
    texts = [prompt for prompt, _ in harness_items(prompts, NUM_PROMPTS, tokenizer, MAX_POSITIONS - new_tokens)]
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


def _sequence_inputs(tokenizer, prompts: list[str], completions: list[str], device: str = "cpu"):
    """Left-padded prompts and right-padded completions (EOS appended): the four tensors the log-prob functions take."""
    p = tokenizer(prompts, padding=True, padding_side="left", add_special_tokens=False, return_tensors="pt").to(device)
    eos = tokenizer.eos_token
    c = tokenizer([text + eos for text in completions], padding=True, padding_side="right", add_special_tokens=False,
                  return_tensors="pt").to(device)
    return p["input_ids"], p["attention_mask"].bool(), c["input_ids"], c["attention_mask"].bool()


def timed_updates(model, optimizer, loss_fn, steps: int, warmup: int, precision: str, device: str = "cpu") -> float:
    """Median wall time of `steps` (after `warmup`) updates: loss_fn() under the precision, backward, clip 1.0, AdamW."""
    import torch

    times = []
    for _ in range(steps + warmup):
        synchronize(device)
        start = time.perf_counter()
        with precision_context(precision, device):
            loss = loss_fn()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return median_after(times, warmup)


def grpo_update_floor(
    size: str, K: int, steps: int, warmup: int, threads: int, precision: str, device: str = "cpu", new_tokens: int = 32,
    prompts: str = "arithmetic",
) -> dict:
    """One hand-written GRPO update on 8 × K full-length completions: policy + reference forward, k3 KL, clipped loss."""
    torch = setup_torch(threads)
    import copy

    from purld.rollout.logprobs import completion_token_logps  # one forward, the same for every side

    model, tokenizer = build_model(size, device=device)
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = purld_optimizer(model.parameters())
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
    import copy

    import torch.nn.functional as F

    from purld.rollout.logprobs import completion_token_logps

    model, tokenizer = build_model(size, device=device)
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = purld_optimizer(model.parameters())
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


# -------------------------------------------------------------- purld: DPO step
def purld_dpo(
    size: str, steps: int, warmup: int, threads: int, precision: str, device: str = "cpu", new_tokens: int = 32,
    micro_batch_size: int | None = None, lean_activations: bool = True, prompts: str = "arithmetic",
    checkpointing: str | None = None,
) -> dict:
    torch = setup_torch(threads)
    import copy

    from purld.modules import PairwiseModule
    from purld.objectives.dpo import DPOObjective
    from purld.types import Example, Pairs, PromptBatch, Rollout

    model, tokenizer = build_model(size, device=device, lean_activations=lean_activations, checkpointing=checkpointing)
    module = PairwiseModule(
        model=model,
        tokenizer=tokenizer,
        objective=DPOObjective(beta=BETA_DPO, loss_type="sigmoid"),
        optimizer=purld_optimizer,
        reference_model=copy.deepcopy(model),
        micro_batch_size=micro_batch_size,
    ).to(device)
    if precision == "bf16":  # what PolicyModule.setup does under trainer.precision=bf16-mixed (no Trainer here)
        from purld.modules.base import store_linear_weights_in

        store_linear_weights_in(module.reference, torch.bfloat16)
    optimizer = module.configure_optimizers()
    rows = dpo_texts(NUM_PROMPTS, new_tokens, prompts, tokenizer)
    prompt_tokens = tokenizer([r["prompt"] for r in rows], padding=True, padding_side="left", add_special_tokens=False, return_tensors="pt")
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
        prompt_ids=prompt_tokens["input_ids"],
        prompt_mask=prompt_tokens["attention_mask"].bool(),
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
    batch, rollout, pairs = batch.to(device), to_device(rollout, device), to_device(pairs, device)
    step_s = timed_updates(model, optimizer, lambda: module.dpo_step(batch, rollout, pairs).loss, steps, warmup, precision, device)
    num_tokens = 2 * prompt_tokens["input_ids"].numel() + answers["input_ids"].numel()  # chosen and rejected each see the prompt
    return {"step_s": step_s, "update_flops": update_flops(parameter_count(model), num_tokens)}


def to_device(record, device: str):
    """A copy of a dataclass of tensors (Rollout, Pairs) with every tensor on `device`."""
    import dataclasses

    import torch

    return dataclasses.replace(record, **{
        field.name: getattr(record, field.name).to(device)
        for field in dataclasses.fields(record) if isinstance(getattr(record, field.name), torch.Tensor)
    })


# --------------------------------------------------------------- TRL: DPO step
def trl_dpo(
    size: str, steps: int, warmup: int, threads: int, precision: str, device: str = "cpu", new_tokens: int = 32,
    prompts: str = "arithmetic",
) -> dict:
    setup_torch(threads)
    import copy

    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    model, tokenizer = build_model(size)  # TRL's Trainer moves it to its device
    dataset = Dataset.from_list(dpo_texts(NUM_PROMPTS, new_tokens, prompts, tokenizer) * (steps + warmup))
    timer = trl_step_timer(device)
    with tempfile.TemporaryDirectory() as tmp:
        args = DPOConfig(
            **trl_common_args(tmp, precision, device),
            per_device_train_batch_size=NUM_PROMPTS,
            max_steps=steps + warmup,
            learning_rate=LR,
            beta=BETA_DPO,
            loss_type="sigmoid",
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
        if rows == "gpu":
            # The rows the GPU targets divide first, the floors and `generate`-bound default rollout last: a run cut
            # short (--time-budget, or the device's) keeps the telling rows (the JSON is rewritten after each row).
            specs += [{"kind": "purld_grpo", "size": size, "K": 8, "decoder": "static"}, {"kind": "generate_floor", "size": size, "K": 8}]
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


ANY_VALUE = object()
VARIANT_KEYS = ("ranker", "checkpointing", "cache", "micro_batch_size", "lean_activations", "decoder")  # a row with one of these is a variant, not the comparison row
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
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--new-tokens", type=int, default=32, help="completion length (GRPO) and answer length (DPO)")
    parser.add_argument("--rows", choices=["cpu", "gpu"], help="which rows (default: those of --device); "
                        "`--rows gpu` on the CPU checks the GPU script's code paths")
    parser.add_argument("--keep-going", action="store_true", help="record a failed row and go on (the GPU script)")
    parser.add_argument("--time-budget", type=float, help="seconds for the whole run: a row still running then is "
                        "stopped, and the rows after it are recorded as not run (the GPU script: 5 minutes of device time)")
    parser.add_argument("--prompts", choices=PROMPT_SETS, default="arithmetic",
                        help="the GRPO rows' prompts (and the DPO rows'): 3-digit additions of about 8 tokens, or GSM8K "
                        "questions of about 200 (comparison rows only)")
    parser.add_argument("--micro-batch-passes", type=int, default=2,
                        help="the micro-batched rows split the update into this many passes (data.micro_batch_size = sequences / passes)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return run_worker(json.loads(args.worker))
    if args.quick:
        args.sizes = args.sizes if args.sizes != parser.get_default("sizes") else "tiny"
        args.ks, args.steps, args.warmup, args.rounds = "8", 1, 1, 1
    sizes = args.sizes.split(",")
    ks = sorted({int(k) for k in args.ks.split(",")} | {8})
    common = {"steps": args.steps, "warmup": args.warmup, "threads": args.threads, "precision": args.precision,
              "device": args.device, "new_tokens": args.new_tokens, "prompts": args.prompts}

    # Every row of a size is measured once per round, rounds interleaved (purld, TRL, floors, purld, …),
    # so slow drifts of a shared machine hit every side alike; a row's figures are medians over rounds.
    specs = row_specs(sizes, ks, args.rows or ("gpu" if args.device == "cuda" else "cpu"), with_trl=not args.no_trl,
                      micro_batch_passes=args.micro_batch_passes, prompts=args.prompts)
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
        static_checkpointed = find("purld_grpo", size, K=8, decoder="static", checkpointing="full")
        generate, update = find("generate_floor", size), find("grpo_update_floor", size)
        dpo, dpo_floor = find("purld_dpo", size), find("dpo_update_floor", size)
        trl_grpo_row, trl_dpo_row = find("trl_grpo", size), find("trl_dpo", size)
        checkpointed = find("purld_grpo", size, K=8, checkpointing="full")  # as TRL runs by default: memory for time
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
            "grpo_step_vs_floor": ratio((purld[8], "step_s"), (floor, "step_s")),
            "dpo_step_vs_floor": ratio((dpo, "step_s"), (dpo_floor, "step_s")),
            "rollout_vs_generate_floor": ratio((purld[8], "rollout_tokens_per_s"), (generate, "tokens_per_s")),
            "grpo_step_ratio_without_lean_activations": ratio((plain_layers, "step_s"), (trl_grpo_row, "step_s")),
            "grpo_rss_ratio_without_lean_activations": ratio((plain_layers, "peak_rss_mb"), (trl_grpo_row, "peak_rss_mb")),
            "dpo_step_ratio_without_lean_activations": ratio((dpo_plain_layers, "step_s"), (trl_dpo_row, "step_s")),
            "dpo_rss_ratio_without_lean_activations": ratio((dpo_plain_layers, "peak_rss_mb"), (trl_dpo_row, "peak_rss_mb")),
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
        if all(purld[K] for K in ks) and len(ks) > 1:
            values["grpo_step_by_K"] = {K: purld[K]["step_s"] for K in ks}
            values[f"grpo_step_per_K_vs_K{ks[0]}"] = {K: (purld[K]["step_s"] / K) / (purld[ks[0]]["step_s"] / ks[0]) for K in ks}
        figures.update({f"{size}_{name}": value for name, value in values.items() if value is not None})
    return figures


HEADLINE = ("grpo_step_ratio", "grpo_work_ratio", "dpo_step_ratio", "grpo_rss_ratio", "dpo_rss_ratio", "grpo_step_vs_floor", "dpo_step_vs_floor",
            "rollout_vs_generate_floor", "grpo_step_ratio_without_lean_activations", "grpo_rss_ratio_without_lean_activations",
            "dpo_step_ratio_without_lean_activations", "dpo_rss_ratio_without_lean_activations",
            "grpo_step_ratio_checkpointing", "grpo_rss_ratio_checkpointing", "dpo_step_ratio_checkpointing", "dpo_rss_ratio_checkpointing",
            "grpo_step_ratio_selective_checkpointing", "grpo_rss_ratio_selective_checkpointing",
            "grpo_step_ratio_micro_batch", "grpo_rss_ratio_micro_batch", "dpo_step_ratio_micro_batch", "dpo_rss_ratio_micro_batch",
            "grpo_step_ratio_static_decoder", "grpo_rss_ratio_static_decoder", "grpo_step_vs_floor_static_decoder",
            "rollout_vs_generate_floor_static_decoder", "grpo_step_ratio_static_decoder_checkpointing",
            "grpo_gpu_memory_ratio", "grpo_gpu_memory_ratio_static_decoder", "grpo_gpu_memory_ratio_static_decoder_checkpointing",
            "dpo_gpu_memory_ratio", "grpo_update_mfu", "grpo_update_mfu_static_decoder", "grpo_update_floor_mfu", "dpo_update_mfu",
            "dpo_update_floor_mfu", "grpo_update_vs_matmul_rate", "grpo_update_floor_vs_matmul_rate", "trl_grpo_update_vs_matmul_rate")


def machine_description(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    gpu = torch.cuda.get_device_name() if args.device == "cuda" else None
    return {
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "device": args.device,
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "trl": None if args.no_trl else __import__("trl").__version__,
        "transformers": __import__("transformers").__version__,
        "attention": ATTENTION,  # the Llama sizes' kernel (the Qwen2 shape keeps transformers' default)
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
