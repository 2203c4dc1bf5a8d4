"""`trainer.gradient_clip_val` on the precision plugins that Lightning leaves unclipped or refuses."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.plugins.precision import FSDPPrecision, MixedPrecision, Precision

from purld.modules.base import PolicyModule
from purld.objectives.sft import SFTObjective
from purld.students.tiny import TinyLlamaStudent


def _module_with_large_gradients(precision):
    """A module whose fused AdamW (+optimizer.fused=true) holds gradients of norm ≫ 1, under a stand-in trainer."""
    model, tokenizer = TinyLlamaStudent(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).load()
    module = PolicyModule(model, tokenizer, SFTObjective(), optimizer=lambda params: torch.optim.AdamW(params, fused=True))
    for parameter in model.parameters():
        parameter.grad = torch.full_like(parameter, 10.0)
    clipped_by_root = []
    root = SimpleNamespace(clip_grad_norm_=clipped_by_root.append)  # the FSDP-wrapped module, under FSDP
    module._trainer = SimpleNamespace(precision_plugin=precision, model=root, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
    return module, module.configure_optimizers(), clipped_by_root


def _gradient_norm(module) -> float:
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in module.policy.parameters()])).item()


@pytest.mark.parametrize("precision", [MixedPrecision("bf16-mixed", "cpu"), Precision()], ids=["bf16-mixed", "32-true"])
def test_a_fused_optimizer_is_clipped_without_a_scaler(precision):
    module, optimizer, _ = _module_with_large_gradients(precision)
    module.configure_gradient_clipping(optimizer, 1.0, "norm")
    assert _gradient_norm(module) == pytest.approx(1.0, rel=1e-4)


def test_fp16_with_a_scaler_still_refuses_a_fused_optimizer():
    module, optimizer, _ = _module_with_large_gradients(MixedPrecision("16-mixed", "cpu"))
    with pytest.raises(RuntimeError, match="fused"):
        module.configure_gradient_clipping(optimizer, 1.0, "norm")


def test_fsdp_clips_through_the_wrapped_root_module():
    module, optimizer, clipped_by_root = _module_with_large_gradients(FSDPPrecision("bf16-mixed"))
    module.configure_gradient_clipping(optimizer, 1.0, "norm")
    assert clipped_by_root == [1.0]
    assert _gradient_norm(module) > 1.0  # the root module clips; nothing else touched the gradients


def test_no_clip_value_clips_nothing():
    module, optimizer, clipped_by_root = _module_with_large_gradients(FSDPPrecision("bf16-mixed"))
    module._trainer.gradient_clip_val = None
    module.configure_gradient_clipping(optimizer, None, None)
    assert not clipped_by_root and _gradient_norm(module) > 1.0
