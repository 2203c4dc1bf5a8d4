"""Students loaded by path, as a user with a local checkpoint loads them; LoRA's reference without a copy."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from purld.rollout import Sampler, completion_token_logps
from purld.students import HFStudent, LoRAStudent, build_char_tokenizer

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def save_tiny(directory, architecture: str, chat_template: str | None = None):
    tokenizer = build_char_tokenizer()
    if chat_template:
        tokenizer.chat_template = chat_template
    ids = dict(vocab_size=len(tokenizer), pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    if architecture == "llama":
        model = LlamaForCausalLM(LlamaConfig(**SMALL, num_key_value_heads=2, **ids))
    elif architecture == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**SMALL, num_key_value_heads=1, **ids))
    else:
        model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=256, **ids))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module", params=["llama", "qwen2", "gpt2"])
def saved(request, tmp_path_factory):
    return request.param, save_tiny(tmp_path_factory.mktemp(request.param), request.param)


def test_loads_by_path_and_samples_consistently(saved, task, make_batch, tmp_path):
    """Left padding and position ids must make the training forward pass reproduce the sampling log-probs."""
    _, directory = saved
    model, tokenizer = HFStudent(str(directory)).load()
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    batch = make_batch(task, tmp_path, size=3)
    rollout = Sampler(num_candidates=2, max_new_tokens=6, temperature=0.8).sample(model, tokenizer, batch)
    B, K, T = rollout.completion_ids.shape
    forward = completion_token_logps(
        model, batch.prompt_ids.repeat_interleave(K, 0), batch.prompt_mask.repeat_interleave(K, 0),
        rollout.completion_ids.reshape(B * K, T), rollout.completion_mask.reshape(B * K, T), temperature=0.8,
    ).reshape(B, K, T)
    assert ((forward - rollout.sampling_token_logps).masked_fill(~rollout.completion_mask, 0).abs().max()) < 1e-4


def test_dtype_is_honoured(tmp_path):
    model, _ = HFStudent(str(save_tiny(tmp_path, "llama")), dtype="bfloat16").load()
    assert next(model.parameters()).dtype == torch.bfloat16


def test_chat_template_decides_rendering(tmp_path):
    template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
    student = HFStudent(str(save_tiny(tmp_path, "llama", chat_template=template)))
    _, tokenizer = student.load()
    assert student.chat_template_enabled(tokenizer)
    assert not HFStudent(str(tmp_path), use_chat_template="never").chat_template_enabled(tokenizer)
    from purld.anchors import AnchorCache
    from purld.data import AnchorDataModule
    from purld.teachers import ReferenceTeacher
    from purld.types import Example

    dm = AnchorDataModule(None, ReferenceTeacher(), AnchorCache(tmp_path / "c.sqlite"), tokenizer, use_chat_template=True)
    assert dm.prompt_text(Example("x", "2+2=")) == "<user>2+2=<assistant>"


def test_always_needs_a_template(tmp_path):
    with pytest.raises(ValueError, match="has no chat template"):
        HFStudent(str(save_tiny(tmp_path, "llama")), use_chat_template="always").load()


def test_lora_reference_is_the_base_without_a_copy(tmp_path, task, make_batch):
    """Adapters disabled reproduce the base model exactly; merging the warm start makes it the new reference."""
    from purld.modules.base import PolicyModule

    directory = save_tiny(tmp_path, "llama")
    base, _ = HFStudent(str(directory)).load()
    student = LoRAStudent(str(directory), r=4)
    model, tokenizer = student.load()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0 < trainable < sum(p.numel() for p in base.parameters()) // 4
    batch = make_batch(task, tmp_path, size=2)
    inputs = (batch.prompt_ids, batch.prompt_mask, batch.anchor_ids, batch.anchor_mask)
    with torch.no_grad():  # pretend a warm start moved the adapters
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.add_(0.05)
    module = PolicyModule(model, tokenizer, objective=None, optimizer=None)
    with torch.no_grad():
        base_logps = completion_token_logps(base, *inputs)
        assert torch.allclose(module.reference_token_logps(*inputs), base_logps, atol=1e-5)
        warm_logps = module.policy_token_logps(*inputs)
        assert not torch.allclose(warm_logps, base_logps, atol=1e-3)
        merged = student.merge_warm_start(model)
        after = PolicyModule(merged, tokenizer, objective=None, optimizer=None)
        assert torch.allclose(after.reference_token_logps(*inputs), warm_logps, atol=1e-4)
        assert torch.allclose(after.policy_token_logps(*inputs), warm_logps, atol=1e-4)


def test_reference_needs_a_copy_or_adapters(student, task, make_batch, tmp_path):
    from purld.modules.base import PolicyModule

    model, tokenizer = student
    batch = make_batch(task, tmp_path, size=1)
    with pytest.raises(RuntimeError, match="needs a reference policy"):
        PolicyModule(model, tokenizer, objective=None, optimizer=None).reference_token_logps(
            batch.prompt_ids, batch.prompt_mask, batch.anchor_ids, batch.anchor_mask
        )
    reference = copy.deepcopy(model)
    PolicyModule(model, tokenizer, objective=None, optimizer=None, reference_model=reference)
    assert not any(p.requires_grad for p in reference.parameters())


def test_lora_without_4bit_prints_no_bitsandbytes_warning(tmp_path):
    """peft imports bitsandbytes; on an AVX-512 CPU it warned about a `kernels` package from the hub."""
    import subprocess
    import sys

    directory = save_tiny(tmp_path, "llama")
    code = f"from purld.students import LoRAStudent; LoRAStudent({str(directory)!r}, r=2).load()"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    assert "kernels" not in result.stderr and "bitsandbytes" not in result.stderr, result.stderr
