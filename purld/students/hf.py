"""`student=hf` and `student=lora`: any Hugging Face causal LM, by hub id or local directory.

dtype and attention implementation come from config; the tokenizer pads on the
left for generation and falls back to EOS as the pad token. When the tokenizer
has a chat template and `use_chat_template` allows it, prompts are rendered
through it (the datamodule asks `render_prompts`).

An image-text-to-text model (its config has a `vision_config`: LLaVA, LLaVA-Next, Idefics3 / SmolVLM, …) loads
with `AutoModelForImageTextToText` and its `AutoProcessor` (`load_processor`); `student.freeze_vision_tower`
(default true) keeps its image encoder out of training, and `student=lora` then puts adapters on the language
model only. Qwen2-VL-style models (Qwen2-VL, Qwen2.5-VL: multimodal RoPE) get their 3-D positions wherever purld
runs a forward itself (`purld.rollout.positions`).

A GGUF checkpoint (`student.gguf_file`, e.g. `student=smollm2`) is converted once into a cached Hugging Face
directory (`purld.students.gguf`) and loaded from there.

`student=lora` wraps the model with peft LoRA adapters. The reference policy is
then the same weights with the adapters disabled — no second copy. A warm start
trains adapters too; its adapters are merged into the base weights before
PU-RLD starts with fresh ones (`merge_warm_start`), so that the reference
(adapters off) is the warm-started policy, as with a frozen copy.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from purld.students.base import Student, checked_gradient_checkpointing, checked_lean_activations, freeze_vision_tower

VISION_MODULES = r".*(vision_tower|vision_model|visual|multi_modal_projector|connector).*"  # kept out of LoRA

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}
CHAT_TEMPLATE = ("auto", "always", "never")


class HFStudent(Student):
    name = "hf"

    def __init__(
        self,
        model_name_or_path: str,
        tokenizer_name_or_path: str | None = None,
        dtype: str = "float32",
        attn_implementation: str | None = None,
        use_chat_template: str = "auto",
        revision: str | None = None,
        trust_remote_code: bool = False,
        gradient_checkpointing: bool | str = "full",
        lean_activations: bool = True,
        gguf_file: str | None = None,
        gguf_cache_dir: str | None = None,
        freeze_vision_tower: bool = True,
        processor_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"student.dtype={dtype!r}: allowed values are {', '.join(DTYPES)}")
        if use_chat_template not in CHAT_TEMPLATE:
            raise ValueError(f"student.use_chat_template={use_chat_template!r}: allowed values are {', '.join(CHAT_TEMPLATE)}")
        if not model_name_or_path and not gguf_file:
            raise ValueError("student.model_name_or_path is required (or student.gguf_file for a GGUF checkpoint)")
        self.model_name_or_path = model_name_or_path
        self.tokenizer_name_or_path = tokenizer_name_or_path
        self.gguf_file, self.gguf_cache_dir = gguf_file, gguf_cache_dir
        self.dtype, self.attn_implementation = dtype, attn_implementation
        self.use_chat_template, self.revision, self.trust_remote_code = use_chat_template, revision, trust_remote_code
        self.gradient_checkpointing = checked_gradient_checkpointing(gradient_checkpointing)
        self.lean_activations = checked_lean_activations(lean_activations)
        if not isinstance(freeze_vision_tower, bool):
            raise ValueError(f"student.freeze_vision_tower={freeze_vision_tower!r}: allowed values are true, false")
        self.freeze_vision_tower = freeze_vision_tower
        self.processor_kwargs = dict(processor_kwargs or {})  # AutoProcessor's: Qwen2.5-VL's max_pixels, …
        self._is_vision_language: bool | None = None

    def is_vision_language(self, weights_directory: str | None = None) -> bool:
        """Whether the checkpoint is an image-text-to-text model (its config has a vision_config)."""
        if self._is_vision_language is None:
            if self.gguf_file:
                self._is_vision_language = False
            else:
                source = weights_directory or self.weights_directory()
                adapter = Path(source) / "adapter_config.json"
                if adapter.exists() and not (Path(source) / "config.json").exists():  # saved adapters: their base's config
                    source = json.loads(adapter.read_text())["base_model_name_or_path"]
                config = AutoConfig.from_pretrained(source, revision=self.revision, trust_remote_code=self.trust_remote_code)
                self._is_vision_language = getattr(config, "vision_config", None) is not None
        return self._is_vision_language

    def weights_directory(self) -> str:
        """Where the weights load from: `model_name_or_path`, or the GGUF file's converted directory."""
        if not self.gguf_file:
            return self.model_name_or_path
        from purld.students.gguf import converted_directory, resolve_gguf_file

        return str(converted_directory(resolve_gguf_file(self.model_name_or_path, self.gguf_file), self.gguf_cache_dir))

    def load_tokenizer(self, weights_directory: str | None = None) -> PreTrainedTokenizerBase:
        source = self.tokenizer_name_or_path or weights_directory or self.weights_directory()
        tokenizer = AutoTokenizer.from_pretrained(source, revision=self.revision, trust_remote_code=self.trust_remote_code)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if self.use_chat_template == "always" and not tokenizer.chat_template:
            raise ValueError(f"student.use_chat_template=always: {source} has no chat template")
        return tokenizer

    def load_model(self, weights_directory: str | None = None) -> PreTrainedModel:
        kwargs: dict[str, Any] = {"dtype": DTYPES[self.dtype], "revision": self.revision, "trust_remote_code": self.trust_remote_code}
        if self.attn_implementation:
            kwargs["attn_implementation"] = self.attn_implementation
        source = weights_directory or self.weights_directory()
        if not self.is_vision_language(source):
            return AutoModelForCausalLM.from_pretrained(source, **kwargs)
        from transformers import AutoModelForImageTextToText

        model = AutoModelForImageTextToText.from_pretrained(source, **kwargs)
        if self.freeze_vision_tower:
            freeze_vision_tower(model)
        return model

    def load_processor(self, tokenizer: PreTrainedTokenizerBase):
        """The checkpoint's AutoProcessor around purld's tokenizer (left padding, a pad token); None for a text model."""
        if not self.is_vision_language():
            return None
        from transformers import AutoProcessor

        source = self.tokenizer_name_or_path or self.weights_directory()
        try:
            processor = AutoProcessor.from_pretrained(source, revision=self.revision, trust_remote_code=self.trust_remote_code,
                                                      **self.processor_kwargs)
        except (OSError, ImportError, ValueError, TypeError) as error:
            raise ValueError(f"student=hf: {source} holds an image-text-to-text model, and its processor does not load: "
                             f"{error}{torchvision_hint()}") from None
        if getattr(processor, "image_processor", None) is None:
            raise ValueError(f"student=hf: {source} holds an image-text-to-text model, and AutoProcessor builds a "
                             f"{type(processor).__name__} from it, which reads no images (its processor_config.json names a "
                             f"processor transformers does not know, or none){torchvision_hint()}")
        processor.tokenizer = tokenizer
        return processor

    def load(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        weights = self.weights_directory()
        tokenizer = self.load_tokenizer(weights)
        model = self.apply_memory_options(self.prepare_policy(self.load_model(weights)))
        if model.generation_config.pad_token_id is None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
        return model, tokenizer

    def chat_template_enabled(self, tokenizer: PreTrainedTokenizerBase) -> bool:
        return self.use_chat_template != "never" and bool(getattr(tokenizer, "chat_template", None))


class LoRAStudent(HFStudent):
    name = "lora"

    def __init__(
        self,
        model_name_or_path: str,
        r: int = 16,
        lora_alpha: int = 32,
        lora_dropout: float = 0.0,
        target_modules: Any = "all-linear",
        **kwargs: Any,
    ) -> None:
        super().__init__(model_name_or_path, **kwargs)
        if r < 1:
            raise ValueError(f"student.r={r}: allowed values are integers ≥ 1")
        self.lora_kwargs = dict(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=target_modules)

    def wrap(self, model: PreTrainedModel) -> PreTrainedModel:
        quiet_bitsandbytes()
        from peft import LoraConfig, get_peft_model

        target = self.lora_kwargs["target_modules"]
        # A vision-language student: adapters on the language model only, unless its image encoder trains too.
        exclude = VISION_MODULES if self.freeze_vision_tower and self.is_vision_language() else None
        config = LoraConfig(task_type="CAUSAL_LM", exclude_modules=exclude,
                            **{**self.lora_kwargs, "target_modules": target if isinstance(target, str) else list(target)})
        with warnings.catch_warnings():  # peft reads transformers' old name; nothing a user can act on
            warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
            return get_peft_model(model, config)

    def load(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        model, tokenizer = super().load()
        return self.wrap(model), tokenizer

    def merge_warm_start(self, model: PreTrainedModel) -> PreTrainedModel:
        """Fold the warm start's adapters into the base weights and start PU-RLD with fresh adapters."""
        return self.wrap(model.merge_and_unload())


def quiet_bitsandbytes() -> None:
    """peft imports bitsandbytes where it is installed, even for LoRA without 4-bit, and on a CPU with AVX-512
    bitsandbytes then warns that it could not fetch an optional kernel from the Hugging Face hub (the `kernels`
    package), before falling back to its own: nothing a LoRA user (or an offline one) can act on. `kernels` ≥ 0.19
    also warns, offline, that it skipped a publisher check for that kernel."""
    import logging

    for name in ("bitsandbytes.backends.cpu.ops", "kernels"):
        logging.getLogger(name).setLevel(logging.ERROR)


def torchvision_hint() -> str:
    """transformers builds the processor of a model that also reads videos (Qwen2-VL's) only with torchvision."""
    import importlib.util

    return "" if importlib.util.find_spec("torchvision") else " (torchvision is not installed: transformers builds a processor with a video part, Qwen2-VL's, only with it)"


def has_adapters(model: PreTrainedModel) -> bool:
    """A peft model: its reference is itself with adapters disabled."""
    return hasattr(model, "disable_adapter")


def save_student(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, directory: Path, processor=None) -> None:
    """A loadable model directory: LoRA adapters merged into the weights; over a 4-bit base (lossy to merge),
    the adapters alone, which `from_pretrained` loads onto their base model. A vision-language student's
    processor is saved beside them (`student=hf` loads the directory back with it)."""
    if getattr(model, "is_loaded_in_4bit", False) or getattr(getattr(model, "base_model", None), "is_loaded_in_4bit", False):
        model.save_pretrained(directory)
    elif has_adapters(model):
        import copy

        model = copy.deepcopy(model).merge_and_unload()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    if processor is not None:
        processor.save_pretrained(directory)


class QLoRAStudent(LoRAStudent):
    """`student=qlora`: the base weights in 4-bit (bitsandbytes NF4) + LoRA adapters.

    Runs on CUDA, and on CPU with bitsandbytes ≥ 0.48 (slowly; tests use it). Merging
    adapters into 4-bit weights is lossy (re-quantisation), so after a warm start
    the same adapters keep training and the reference — adapters disabled — is the
    quantised base model, not the warm-started policy.
    """

    name = "qlora"

    def __init__(
        self,
        model_name_or_path: str,
        quant_type: str = "nf4",
        compute_dtype: str = "bfloat16",
        double_quant: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_name_or_path, **kwargs)
        if quant_type not in ("nf4", "fp4"):
            raise ValueError(f"student.quant_type={quant_type!r}: allowed values are nf4, fp4")
        if compute_dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"student.compute_dtype={compute_dtype!r}: allowed values are float32, bfloat16, float16")
        self.quant_type, self.compute_dtype, self.double_quant = quant_type, compute_dtype, double_quant

    def load_model(self, weights_directory: str | None = None) -> PreTrainedModel:
        quiet_bitsandbytes()
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise ValueError("student=qlora needs bitsandbytes: pip install bitsandbytes") from None
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=self.quant_type,
            bnb_4bit_compute_dtype=DTYPES[self.compute_dtype],
            bnb_4bit_use_double_quant=self.double_quant,
        )
        kwargs: dict[str, Any] = {"quantization_config": quantization, "revision": self.revision}
        if self.attn_implementation:
            kwargs["attn_implementation"] = self.attn_implementation
        source = weights_directory or self.weights_directory()
        if self.is_vision_language(source):
            from transformers import AutoModelForImageTextToText

            model = AutoModelForImageTextToText.from_pretrained(source, **kwargs)
        else:
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)

    def merge_warm_start(self, model: PreTrainedModel) -> PreTrainedModel:
        return model
