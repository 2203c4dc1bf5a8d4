"""scripts/bench_vs_trl.py's DPO step rows: purld's PairwiseModule.dpo_step + AdamW, and TRL's DPOTrainer."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vs_trl_harness import (  # noqa: E402
    BETA_DPO,
    LR,
    NUM_PROMPTS,
    as_read,
    build_model,
    dpo_texts,
    is_chat,
    lora_config,
    median_after,
    parameter_count,
    purld_checkpointing,
    purld_optimizer,
    setup_torch,
    timed_updates,
    trl_common_args,
    trl_step_timer,
    update_flops,
)

def purld_dpo(
    size: str, steps: int, warmup: int, threads: int, precision: str, device: str = "cpu", new_tokens: int = 32,
    micro_batch_size: int | None = None, lean_activations: bool = True, prompts: str = "arithmetic",
    checkpointing: str | None = None, lora: bool = False,
) -> dict:
    torch = setup_torch(threads, release_freed_memory=True)
    import copy

    from purld.modules import PairwiseModule
    from purld.objectives.dpo import DPOObjective
    from purld.types import Example, Pairs, PromptBatch, Rollout

    checkpointing = purld_checkpointing(size, checkpointing)  # purld's default for this student unless the row says
    model, tokenizer = build_model(size, device=device, lean_activations=lean_activations, checkpointing=checkpointing, lora=lora)
    module = PairwiseModule(
        model=model,
        tokenizer=tokenizer,
        objective=DPOObjective(beta=BETA_DPO, loss_type="sigmoid"),
        optimizer=purld_optimizer,
        reference_model=None if lora else copy.deepcopy(model),  # LoRA: the base, adapters disabled
        micro_batch_size=micro_batch_size,
    ).to(device)
    if precision == "bf16" and not lora:  # what PolicyModule.setup does under trainer.precision=bf16-mixed (no Trainer here)
        from purld.modules.base import store_linear_weights_in

        store_linear_weights_in(module.reference, torch.bfloat16)
    optimizer = module.configure_optimizers()
    rows = dpo_texts(NUM_PROMPTS, new_tokens, prompts, tokenizer)
    prompt_tokens = tokenizer([as_read(tokenizer, r["prompt"]) for r in rows], padding=True, padding_side="left", add_special_tokens=False, return_tensors="pt")
    answers = tokenizer(
        [text + tokenizer.eos_token for r in rows for text in (r["chosen"], r["rejected"])],
        padding=True, padding_side="right", add_special_tokens=False, return_tensors="pt",
    )
    B = NUM_PROMPTS
    completion_ids = answers["input_ids"].reshape(B, 2, -1)
    completion_mask = answers["attention_mask"].bool().reshape(B, 2, -1)
    batch = PromptBatch(
        examples=[Example(prompt_id=str(i), prompt=r["prompt"], reference=r["chosen"]) for i, r in enumerate(rows)],
        anchors=[r["chosen"] for r in rows],
        prompt_ids=prompt_tokens["input_ids"],
        prompt_mask=prompt_tokens["attention_mask"].bool(),
        anchor_ids=completion_ids[:, 0],
        anchor_mask=completion_mask[:, 0],
    )
    rollout = Rollout(
        texts=[[r["chosen"], r["rejected"]] for r in rows],
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        sampling_token_logps=torch.zeros(completion_ids.shape),
        is_truncated=torch.zeros(B, 2, dtype=torch.bool),
    )
    pairs = Pairs(
        prompt_index=torch.arange(B), chosen_index=torch.zeros(B, dtype=torch.long),
        rejected_index=torch.ones(B, dtype=torch.long), score_margin=torch.ones(B),
    )
    batch, rollout, pairs = batch.to(device), to_device(rollout, device), to_device(pairs, device)
    step_s = timed_updates(model, optimizer, lambda: module.dpo_step(batch, rollout, pairs).loss, steps, warmup, precision, device)
    num_tokens = 2 * prompt_tokens["input_ids"].numel() + answers["input_ids"].numel()  # chosen and rejected each see the prompt
    return {"step_s": step_s, "update_flops": update_flops(parameter_count(model), num_tokens)}


def to_device(record, device: str):
    """A copy of a dataclass of tensors (Rollout, Pairs) with every tensor on `device`."""
    import dataclasses

    import torch

    return dataclasses.replace(record, **{
        field.name: getattr(record, field.name).to(device)
        for field in dataclasses.fields(record) if isinstance(getattr(record, field.name), torch.Tensor)
    })


def trl_dpo(
    size: str, steps: int, warmup: int, threads: int, precision: str, device: str = "cpu", new_tokens: int = 32,
    prompts: str = "arithmetic", lora: bool = False,
) -> dict:
    setup_torch(threads)
    import copy

    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    model, tokenizer = build_model(size)  # TRL's Trainer moves it to its device
    rows = dpo_texts(NUM_PROMPTS, new_tokens, prompts, tokenizer)
    if is_chat(tokenizer):  # a real student: conversational rows, which TRL renders through the chat template
        rows = [{"prompt": [{"role": "user", "content": r["prompt"]}],
                 **{k: [{"role": "assistant", "content": r[k]}] for k in ("chosen", "rejected")}} for r in rows]
    dataset = Dataset.from_list(rows * (steps + warmup))
    timer = trl_step_timer(device)
    with tempfile.TemporaryDirectory() as tmp:
        args = DPOConfig(
            **trl_common_args(tmp, precision, device),
            per_device_train_batch_size=NUM_PROMPTS,
            max_steps=steps + warmup,
            learning_rate=LR,
            beta=BETA_DPO,
            loss_type="sigmoid",
        )
        trainer = DPOTrainer(  # LoRA: TRL's reference is the base with adapters disabled, as purld's
            model=model, ref_model=None if lora else copy.deepcopy(model), args=args, train_dataset=dataset,
            processing_class=tokenizer, callbacks=[timer], peft_config=lora_config() if lora else None,
        )
        trainer.train()
    return {"step_s": median_after(timer.steps, warmup)}
