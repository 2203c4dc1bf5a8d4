"""`student.lean_activations`: the same numbers as transformers' layers, bit for bit, with less kept for backward."""

import copy
import pickle
import warnings

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM
from transformers.models.llama.modeling_llama import LlamaMLP, LlamaRMSNorm

from purld.rollout import completion_token_logps
from purld.students import TinyLlamaStudent, build_char_tokenizer
from purld.students.lean_activations import lean_forward_for, use_lean_activations

SHAPE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64)
ARCHITECTURES = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
}


def _model(architecture: str):
    config_class, model_class = ARCHITECTURES[architecture]
    tokenizer = build_char_tokenizer()
    torch.manual_seed(0)
    model = model_class(config_class(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **SHAPE))
    for name, parameter in model.named_parameters():  # norms away from their all-ones init, so ∂w is tested
        if name.endswith("norm.weight"):
            parameter.data.uniform_(0.5, 1.5)
    return model.train(), tokenizer


def _inputs(tokenizer):
    prompts = tokenizer(["12+5=", "Reference: 3+4=7\n999+1="], padding=True, padding_side="left", add_special_tokens=False, return_tensors="pt")
    completions = tokenizer([t + tokenizer.eos_token for t in ["ab", "hello there", "x", "yyyyyy"]], padding=True,
                            padding_side="right", add_special_tokens=False, return_tensors="pt")
    return prompts["input_ids"], prompts["attention_mask"].bool(), completions["input_ids"], completions["attention_mask"].bool()


def _numbers_and_saved_bytes(model, inputs, autocast: bool):
    """Log-probs, every trainable parameter's gradient, and the bytes autograd kept for backward (parameters aside)."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logps = completion_token_logps(model, *inputs)
    (logps * inputs[3]).sum().backward()
    return logps.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad], sum(saved.values())


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_lean_layers_give_the_same_log_probs_and_gradients_bit_for_bit(architecture, autocast):
    model, tokenizer = _model(architecture)
    lean = copy.deepcopy(model)
    assert use_lean_activations(lean) == 2 * SHAPE["num_hidden_layers"] + 1 + SHAPE["num_hidden_layers"]  # norms + MLPs
    inputs = _inputs(tokenizer)
    plain_logps, plain_grads, plain_saved = _numbers_and_saved_bytes(model, inputs, autocast)
    lean_logps, lean_grads, lean_saved = _numbers_and_saved_bytes(lean, inputs, autocast)
    assert torch.equal(lean_logps, plain_logps)
    assert all(torch.equal(a, b) for a, b in zip(lean_grads, plain_grads, strict=True))
    assert lean_saved < 0.9 * plain_saved  # each norm's float32 x̂ and each MLP's SiLU output are not kept


def test_lean_layers_under_lora_and_frozen_norms_give_the_same_numbers():
    """LoRA freezes the norms (no ∂w) and wraps the MLP's projections; the lean forwards call them as modules."""
    from peft import LoraConfig, get_peft_model

    model, tokenizer = _model("llama")
    with warnings.catch_warnings():  # peft reads transformers' deprecated `is_gradient_checkpointing`
        warnings.simplefilter("ignore", FutureWarning)
        plain = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    lean = copy.deepcopy(plain)
    assert use_lean_activations(lean) == 7
    inputs = _inputs(tokenizer)
    (plain_logps, plain_grads, _), (lean_logps, lean_grads, _) = (_numbers_and_saved_bytes(m, inputs, False) for m in (plain, lean))
    assert torch.equal(lean_logps, plain_logps) and len(lean_grads) == 2 * 7 * 2  # A and B of 7 projections × 2 layers
    assert all(torch.equal(a, b) for a, b in zip(lean_grads, plain_grads, strict=True))


def test_bfloat16_weights_under_autocast_run_the_fused_projection_with_the_same_numbers():
    """student.dtype=bfloat16 with bf16-mixed: nothing is cast, so down_proj runs inside the lean function, read
    twice per forward (the shared prompts, then the completions), its gradients summed as autograd sums them."""
    model, tokenizer = _model("llama")
    model.to(torch.bfloat16)
    lean = copy.deepcopy(model)
    use_lean_activations(lean)
    inputs = _inputs(tokenizer)
    plain_logps, plain_grads, plain_saved = _numbers_and_saved_bytes(model, inputs, autocast=True)
    lean_logps, lean_grads, lean_saved = _numbers_and_saved_bytes(lean, inputs, autocast=True)
    assert torch.equal(lean_logps, plain_logps)
    assert all(torch.equal(a, b) for a, b in zip(lean_grads, plain_grads, strict=True))
    assert lean_saved < 0.9 * plain_saved


def test_half_precision_hidden_states_get_the_same_gradients():
    """A bfloat16 model (student.dtype=bfloat16): the norm upcasts its input, as transformers' does."""
    norm = LlamaRMSNorm(16, eps=1e-5).to(torch.bfloat16)
    norm.weight.data.uniform_(0.5, 1.5)
    lean = copy.deepcopy(norm)
    use_lean_activations(lean)
    hidden = torch.randn(3, 5, 16, dtype=torch.bfloat16)
    results = []
    for module in (norm, lean):
        x = hidden.clone().requires_grad_()
        out = module(x)
        out.backward(torch.linspace(-1, 1, out.numel()).reshape(out.shape).to(out.dtype))
        results.append((out, x.grad, module.weight.grad))
    assert out.dtype == torch.bfloat16
    assert all(torch.equal(a, b) for a, b in zip(*results))


def _saved_activations(module, x, autocast: bool):
    """Output, gradients (input and parameters) and the sizes of what autograd kept for backward, parameters aside."""
    parameters = {p.untyped_storage().data_ptr() for p in module.parameters()}
    saved = {}

    def pack(tensor):
        if tensor.untyped_storage().data_ptr() not in parameters:
            saved[tensor.untyped_storage().data_ptr()] = tensor.numel()
        return tensor

    x = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = module(x)
    out.backward(torch.linspace(-1, 1, out.numel()).reshape(out.shape).to(out.dtype))
    return [out, x.grad, *(p.grad for p in module.parameters())], sorted(saved.values())


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize("mlp_bias", [False, True], ids=["plain-down-proj", "down-proj-with-bias"])
def test_the_mlp_keeps_gate_and_up_and_recomputes_the_rest(mlp_bias, autocast):
    """A bias-free nn.Linear down_proj in its weight's dtype runs inside the lean function (its input,
    SiLU(gate) ⊙ up, recomputed in backward); any other down_proj, and one whose float32 weight autocast casts,
    gets its own call, after the SiLU ⊙ up function."""
    config = LlamaConfig(hidden_size=8, intermediate_size=24, num_attention_heads=2, mlp_bias=mlp_bias)
    torch.manual_seed(0)
    mlp = LlamaMLP(config)
    lean = copy.deepcopy(mlp)
    use_lean_activations(lean)
    x = torch.randn(3, 5, 8)
    plain_numbers, plain_saved = _saved_activations(mlp, x, autocast)
    lean_numbers, lean_saved = _saved_activations(lean, x, autocast)
    assert all(torch.equal(a, b) for a, b in zip(plain_numbers, lean_numbers, strict=True))
    fused = not (mlp_bias or autocast)
    rows = [3 * 5 * 24] * (2 if fused else 3)  # gate and up (and, unless fused, the product the projection reads)
    weight_casts = [24 * 8] * (0 if not autocast else 3)  # under autocast: each projection's bf16 weight
    assert lean_saved == sorted([3 * 5 * 8, *rows, *weight_casts]) and len(plain_saved) > len(lean_saved)  # and x


def test_a_frozen_down_proj_gets_no_gradient_and_the_same_numbers():
    """LoRA on the other projections leaves down_proj a frozen plain Linear: the lean function skips ∂W."""
    mlp = LlamaMLP(LlamaConfig(hidden_size=8, intermediate_size=24, num_attention_heads=2))
    mlp.down_proj.weight.requires_grad_(False)
    lean = copy.deepcopy(mlp)
    use_lean_activations(lean)
    x = torch.randn(3, 5, 8)
    plain_numbers, _ = _saved_activations(mlp, x, autocast=False)
    lean_numbers, _ = _saved_activations(lean, x, autocast=False)
    assert lean.down_proj.weight.grad is None
    assert all(a is b is None or torch.equal(a, b) for a, b in zip(plain_numbers, lean_numbers, strict=True))


def test_only_modules_that_run_llama_code_are_made_lean():
    config = LlamaConfig(hidden_size=8, intermediate_size=16, num_attention_heads=2, hidden_act="silu")
    assert lean_forward_for(LlamaRMSNorm(8)) is not None and lean_forward_for(LlamaMLP(config)) is not None
    gelu = LlamaMLP(LlamaConfig(hidden_size=8, intermediate_size=16, num_attention_heads=2, hidden_act="gelu"))
    assert lean_forward_for(gelu) is None  # the same code with another activation

    class ScaledNorm(LlamaRMSNorm):
        def forward(self, hidden_states):
            return 2 * super().forward(hidden_states)

    assert lean_forward_for(ScaledNorm(8)) is None
    assert lean_forward_for(torch.nn.LayerNorm(8)) is None


def test_the_student_option_switches_them_copies_and_pickles_them_and_names_a_bad_value():
    lean, _ = TinyLlamaStudent(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).load()
    plain, _ = TinyLlamaStudent(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, lean_activations=False).load()
    assert "forward" in vars(lean.model.norm) and "forward" in vars(lean.model.layers[0].mlp)
    assert not any("forward" in vars(module) for module in plain.modules())
    assert lean.state_dict().keys() == plain.state_dict().keys()
    tokens = torch.randint(4, 50, (2, 5))
    for twin in (copy.deepcopy(lean), pickle.loads(pickle.dumps(lean))):  # the reference copy; ddp_spawn, torch.save
        norm, mlp = twin.model.norm, twin.model.layers[0].mlp
        assert norm.forward.args[0] is norm and mlp.forward.args[0] is mlp
        assert torch.equal(twin(tokens).logits, lean(tokens).logits)
    with pytest.raises(ValueError, match=r"student.lean_activations='yes': allowed values are true, false"):
        TinyLlamaStudent(lean_activations="yes")
