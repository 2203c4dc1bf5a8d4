"""`student.lean_activations`: RMSNorm and SwiGLU layers that keep only what their backward needs.

Autograd keeps every intermediate that some op's backward reads. In a Llama-style
decoder that is, per RMSNorm, the normalised hidden states in float32 beside the
input, and per MLP, the SiLU output beside the gate and up projections it came from.
Both are cheap to recompute. The two functions below compute exactly what
transformers' code computes, forward and backward, op for op (so log-probs and
gradients are bit-identical, in float32 and under autocast), but save only:

- RMSNorm: its input and the (N, 1) reciprocal RMS; backward recomputes x̂ = h · rstd;
- down_proj(SiLU(gate) ⊙ up): gate and up; backward recomputes SiLU(gate) and, where
  down_proj is a plain bias-free Linear run in its weight's dtype (float32, or bf16
  weights; not float32 weights under mixed precision, `autocast_casts`), the product
  that down_proj reads. A LoRA or 4-bit projection keeps its own call and that product.

On SmolLM2-135M-Instruct (full fine-tune, fp32, a GRPO step of 4 prompts × K 4 × 64 tokens) they take 7.3 % off
the step's peak RSS (5.89 against 6.35 GB) at 0.95 of its time (`python scripts/bench_mechanisms.py`,
outputs/bench/mechanisms_smollm2.json, `no_lean_activations`).
A module is made lean only when its forward is exactly the code these functions
replicate (`LLAMA_RMS_NORM_FORWARD`, `LLAMA_MLP_FORWARD`; about a hundred transformers
architectures copy it: Llama, Mistral, Qwen2/3, Phi-3, …); any other module is left
as it is.
"""

from __future__ import annotations

import functools
import inspect
import textwrap

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The forwards replicated below, as transformers writes them (LlamaRMSNorm, LlamaMLP).
LLAMA_RMS_NORM_FORWARD = '''\
def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    input_dtype = hidden_states.dtype
    hidden_states = hidden_states.to(torch.float32)
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
    return self.weight * hidden_states.to(input_dtype)
'''
LLAMA_MLP_FORWARD = '''\
def forward(self, x):
    down_proj = self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))
    return down_proj
'''


class NormalizeAndScale(torch.autograd.Function):
    """y = w ⊙ (h · rstd), cast to `dtype` before the product, as transformers' RMSNorm ends.

    h (…, H) float32, rstd (…, 1), weight (H,) → (…, H). Saves h, rstd and weight, not h · rstd: backward
    recomputes it. Backward is autograd's chain for those ops, in the same order (bit-identical results):
      ∂w = Σ ∂y ⊙ (h · rstd),  ∂h = (∂y ⊙ w) · rstd,  ∂rstd = Σ_H (∂y ⊙ w) ⊙ h.
    """

    @staticmethod
    def forward(ctx, h: Tensor, rstd: Tensor, weight: Tensor, dtype: torch.dtype) -> Tensor:
        ctx.save_for_backward(h, rstd, weight)
        ctx.dtype = dtype
        return weight * (h * rstd).to(dtype)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        h, rstd, weight = ctx.saved_tensors
        grad_h = grad_rstd = grad_weight = None
        if ctx.needs_input_grad[2]:
            grad_weight = (grad_output * (h * rstd).to(ctx.dtype)).sum_to_size(weight.shape)
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            grad_normalized = (grad_output * weight).to(h.dtype)
            grad_h = grad_normalized * rstd
            grad_rstd = (grad_normalized * h).sum_to_size(rstd.shape)
        return grad_h, grad_rstd, grad_weight, None


def lean_rms_norm(hidden: Tensor, weight: Tensor, eps: float) -> Tensor:
    """transformers' Llama RMSNorm, w ⊙ (h · rsqrt(mean(h², −1) + ε)) in float32, saving h and rstd (…, 1) only.

    rstd comes from autograd's own ops (they save h, which is kept anyway, and rstd), so the gradients reaching h
    add up in autograd's order, as in transformers' graph; the normalised h · rstd, which that graph keeps in
    float32, is recomputed in backward (`NormalizeAndScale`)."""
    h = hidden.to(torch.float32)
    rstd = torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return NormalizeAndScale.apply(h, rstd, weight, hidden.dtype)


class SiLUMulFunction(torch.autograd.Function):
    """SiLU(gate) ⊙ up, the SwiGLU MLP's activation: (…, I) and (…, I) → (…, I).

    Saves gate and up, not SiLU(gate): backward recomputes it (one elementwise op).
      ∂up = ∂y ⊙ SiLU(gate),  ∂gate = silu_backward(∂y ⊙ up, gate).
    """

    @staticmethod
    def forward(ctx, gate: Tensor, up: Tensor) -> Tensor:
        ctx.save_for_backward(gate, up)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        gate, up = ctx.saved_tensors
        return silu_mul_gradients(grad_output, gate, up, *ctx.needs_input_grad[:2])


def silu_mul_gradients(
    grad_output: Tensor, gate: Tensor, up: Tensor, need_gate: bool, need_up: bool, activation: Tensor | None = None
) -> tuple[Tensor | None, Tensor | None]:
    """(∂gate, ∂up) of y = SiLU(gate) ⊙ up, in autograd's ops; `activation` is SiLU(gate) where already at hand."""
    grad_gate = grad_up = None
    if need_up:
        grad_up = grad_output * (F.silu(gate) if activation is None else activation)
    if need_gate:
        grad_gate = torch.ops.aten.silu_backward(grad_output * up, gate)
    return grad_gate, grad_up


def lean_rms_norm_forward(self: nn.Module, hidden_states: Tensor) -> Tensor:
    if not torch.is_grad_enabled():  # nothing is kept (sampling, the reference): the class's own code, without the
        return type(self).forward(self, hidden_states)  # autograd.Function's overhead (3 % of a tiny model's rollout)
    return lean_rms_norm(hidden_states, self.weight, self.variance_epsilon)


class SiLUMulLinearFunction(torch.autograd.Function):
    """down_proj(SiLU(gate) ⊙ up) for a plain bias-free `nn.Linear` down_proj: (…, I), (…, I), weight (H, I) → (…, H).

    Saves gate and up (and the weight, a parameter), neither SiLU(gate) nor the product p = SiLU(gate) ⊙ up that the
    projection would keep: backward recomputes both (elementwise). The projection runs as `F.linear` runs it (under
    autocast, in the autocast dtype), and backward is autograd's chain for it, op for op (`mm` on the flattened
    rows, as `matmul` folds them), so the numbers are bit-identical:
      ∂p = ∂y · W,  ∂W = ∂yᵀ · p,  ∂up = ∂p ⊙ SiLU(gate),  ∂gate = silu_backward(∂p ⊙ up, gate).
    """

    @staticmethod
    def forward(ctx, gate: Tensor, up: Tensor, weight: Tensor) -> Tensor:
        output = F.linear(F.silu(gate) * up, weight)
        ctx.save_for_backward(gate, up, weight)
        ctx.compute_dtype = output.dtype  # the dtype autocast ran the projection in (the weight's, without it)
        return output

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        gate, up, weight = ctx.saved_tensors
        need_gate, need_up, need_weight = ctx.needs_input_grad
        activation = F.silu(gate)
        grad_rows = grad_output.reshape(-1, grad_output.shape[-1])
        grad_gate = grad_up = grad_weight = None
        if need_weight:  # a frozen down_proj (LoRA elsewhere) needs no product at all
            product = (activation * up).to(ctx.compute_dtype)
            grad_weight = grad_rows.t().mm(product.reshape(-1, product.shape[-1])).to(weight.dtype)
        if need_gate or need_up:
            grad_product = grad_rows.mm(weight.to(ctx.compute_dtype)).view(up.shape).to(up.dtype)
            grad_gate, grad_up = silu_mul_gradients(grad_product, gate, up, need_gate, need_up, activation)
        return grad_gate, grad_up, grad_weight


def lean_mlp_forward(self: nn.Module, x: Tensor) -> Tensor:
    if not torch.is_grad_enabled():
        return type(self).forward(self, x)
    gate, up = self.gate_proj(x), self.up_proj(x)
    down = self.down_proj
    plain = type(down) is nn.Linear and down.bias is None and not down._forward_hooks and not down._forward_pre_hooks
    if plain and not autocast_casts(down.weight):
        return SiLUMulLinearFunction.apply(gate, up, down.weight)
    return down(SiLUMulFunction.apply(gate, up))  # a wrapped projection (LoRA, 4-bit), hooks, or a cast weight


def autocast_casts(weight: Tensor) -> bool:
    """Whether autocast runs a matmul with `weight` in another dtype (float32 weights under `bf16-mixed`).

    It casts such a weight once per autocast region, and where the forward reads it twice (a shared prompt, then
    its completions) autograd sums the two gradients in the cast dtype before casting the sum back. A function
    that takes the float32 weight would sum them in float32 instead: more precise, but not the same bits, so
    there the projection keeps its own call (and its input, the product)."""
    device = weight.device.type
    if not torch.is_autocast_enabled(device) or not weight.is_floating_point() or weight.dtype == torch.float64:
        return False
    return weight.dtype != torch.get_autocast_dtype(device)


def _silu_types() -> tuple[type, ...]:
    from transformers import activations

    return (nn.SiLU, *([activations.SiLUActivation] if hasattr(activations, "SiLUActivation") else []))


@functools.cache
def _forward_source(cls: type) -> str | None:
    try:
        return textwrap.dedent(inspect.getsource(cls.forward))
    except (OSError, TypeError):  # defined in C, or built at run time
        return None


def lean_forward_for(module: nn.Module):
    """The lean forward that computes exactly what `module.forward` computes, or None."""
    source = _forward_source(type(module))
    if source == LLAMA_RMS_NORM_FORWARD:
        return lean_rms_norm_forward
    if source == LLAMA_MLP_FORWARD and type(module.act_fn) in _silu_types():
        return lean_mlp_forward
    return None


def use_lean_activations(model: nn.Module) -> int:
    """Give every RMSNorm and SwiGLU MLP of `model` whose forward is transformers' Llama code the lean forward
    (as an instance attribute: the class, state dict and printed model stay as they were). Returns how many.

    The attribute is a `functools.partial` of a module-level function, not a bound method: a copy
    (`copy.deepcopy`, the reference) gets its own, and the model still pickles (a bound method would be
    looked up by its name on unpickling, and the module has no attribute of that name)."""
    count = 0
    for module in model.modules():
        forward = lean_forward_for(module)
        if forward is not None:
            module.forward = functools.partial(forward, module)
            count += 1
    return count
