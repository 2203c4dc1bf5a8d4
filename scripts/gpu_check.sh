#!/usr/bin/env bash
# GPU check for whoever has one (< 5 minutes): QLoRA (4-bit + LoRA) on CUDA, then a short GRPO run.
# Builds a random-init ~0.1 B Qwen2-shaped student locally (no hub access needed).
#   bash scripts/gpu_check.sh            # writes outputs/gpu_check/{qlora,grpo}/summary.json
set -euo pipefail
cd "$(dirname "$0")/.."
python - <<'PY'
import torch
assert torch.cuda.is_available(), "scripts/gpu_check.sh needs CUDA"
print("device:", torch.cuda.get_device_name(0), "· torch", torch.__version__)
from transformers import Qwen2Config, Qwen2ForCausalLM
from purld.students import build_char_tokenizer
tokenizer = build_char_tokenizer()
config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                     num_attention_heads=12, num_key_value_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=2)
Qwen2ForCausalLM(config).save_pretrained("outputs/gpu_check/model")
tokenizer.save_pretrained("outputs/gpu_check/model")
PY
COMMON=(~experiment student.model_name_or_path=outputs/gpu_check/model trainer=gpu anchors.cache_path=outputs/gpu_check/anchors.sqlite
        warmstart.sft_steps=50 trainer.max_steps=20 eval.num_prompts=128 logger=csv)
/usr/bin/time -v purld-train student=qlora "${COMMON[@]}" hydra.run.dir=outputs/gpu_check/qlora 2>&1 | tail -25
/usr/bin/time -v purld-train student=hf student.dtype=bfloat16 "${COMMON[@]}" hydra.run.dir=outputs/gpu_check/grpo 2>&1 | tail -25
python -c "
import json
for name in ('qlora', 'grpo'):
    s = json.load(open(f'outputs/gpu_check/{name}/summary.json'))
    print(name, 'steps', s['global_step'], 'seconds', s['seconds'], 'reference', s['reference'])
"
