"""What the reference policy costs in memory: a frozen copy vs LoRA's disabled adapters.

    python scripts/bench_lora_memory.py [--hidden 512 --layers 8]

Builds a random-init Llama (25 M parameters by default) in a temporary
directory, loads it as `student=hf` would, and measures the process RSS growth
of making the frozen reference copy that purld makes for full fine-tuning; then
loads it as `student=lora` and reports the adapters' size — its reference
(adapters disabled) needs no memory at all.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import tempfile

import psutil
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from purld.students import HFStudent, LoRAStudent, build_char_tokenizer


def rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--rank", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        tokenizer = build_char_tokenizer()
        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=args.hidden, num_hidden_layers=args.layers,
            num_attention_heads=args.hidden // 64, intermediate_size=int(args.hidden * 2.6875),
            pad_token_id=0, bos_token_id=1, eos_token_id=2,
        )
        LlamaForCausalLM(config).save_pretrained(directory)
        tokenizer.save_pretrained(directory)

        model, _ = HFStudent(directory).load()
        num_parameters = sum(p.numel() for p in model.parameters())
        parameters_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6
        before = rss_mb()
        reference = copy.deepcopy(model).requires_grad_(False)
        copy_rss_mb = rss_mb() - before
        del reference, model

        lora, _ = LoRAStudent(directory, r=args.rank).load()
        adapters_mb = sum(p.numel() * p.element_size() for n, p in lora.named_parameters() if "lora_" in n) / 1e6
    report = {
        "parameters_millions": round(num_parameters / 1e6, 1),
        "model_parameters_mb": round(parameters_mb, 1),
        "frozen_copy_rss_growth_mb": round(copy_rss_mb, 1),
        "lora_rank": args.rank,
        "lora_adapters_mb": round(adapters_mb, 1),
        "lora_reference_extra_mb": 0.0,
        "torch": torch.__version__,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
