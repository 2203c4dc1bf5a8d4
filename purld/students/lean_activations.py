"""`student.lean_activations`: RMSNorm and SwiGLU layers that keep only what their backward needs.

Autograd keeps every intermediate that some op's backward reads. In a Llama-style
decoder that is, per RMSNorm, the normalised hidden states in float32 beside the
input, and per MLP, the SiLU output beside the gate and up projections it came from.
Both are cheap to recompute. The two functions below compute exactly what
transformers' code computes, forward and backward, op for op (so log-probs and
gradients are bit-identical, in float32 and under autocast), but save only:

- RMSNorm: its input and the (N, 1) reciprocal RMS; backward recomputes x̂ = h · rstd;
- SiLU(gate) ⊙ up: gate and up; backward recomputes SiLU(gate).

On the benchmark's small model (README, Performance) that is 115 MB of the 557 MB a
bf16 GRPO update keeps for backward. A module is made lean only when its forward is
exactly the code these functions replicate (`LLAMA_RMS_NORM_FORWARD`,
`LLAMA_MLP_FORWARD`; about a hundred transformers architectures copy it: Llama,
Mistral, Qwen2/3, Phi-3, …); any other module is left as it is.
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
        grad_gate = grad_up = None
        if ctx.needs_input_grad[1]:
            grad_up = grad_output * F.silu(gate)
        if ctx.needs_input_grad[0]:
            grad_gate = torch.ops.aten.silu_backward(grad_output * up, gate)
        return grad_gate, grad_up


def lean_rms_norm_forward(self: nn.Module, hidden_states: Tensor) -> Tensor:
    return lean_rms_norm(hidden_states, self.weight, self.variance_epsilon)


def lean_mlp_forward(self: nn.Module, x: Tensor) -> Tensor:
    return self.down_proj(SiLUMulFunction.apply(self.gate_proj(x), self.up_proj(x)))


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
