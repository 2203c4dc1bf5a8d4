"""scripts/bench_vs_trl.py's GRPO step rows: purld's GroupModule under a Lightning Trainer, and TRL's GRPOTrainer."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vs_trl_harness import (  # noqa: E402
    BETA_GRPO,
    EPSILON,
    LR,
    MAX_POSITIONS,
    NUM_PROMPTS,
    build_model,
    harness_items,
    is_chat,
    lora_config,
    harness_task,
    lexical_reward,
    median_after,
    parameter_count,
    purld_checkpointing,
    purld_optimizer,
    setup_torch,
    synchronize,
    trl_common_args,
    trl_step_timer,
    update_flops,
)

def purld_grpo(
    size: str, K: int, steps: int, warmup: int, threads: int, precision: str, ranker: str = "lexical", checkpointing: str | None = None,
    device: str = "cpu", new_tokens: int = 32, cache: str | None = None, micro_batch_size: int | None = None,
    lean_activations: bool = True, prompts: str = "arithmetic", decoder: str = "generate", lora: bool = False,
) -> dict:
    setup_torch(threads, release_freed_memory=True)
    import copy

    import lightning as L

    from purld.anchors.cache import AnchorCache
    from purld.data.datamodule import AnchorDataModule
    from purld.modules import module_for
    from purld.objectives.grpo import GRPOObjective
    from purld.preferences.group import GroupTargetBuilder
    from purld.ranking.lexical import LexicalRanker
    from purld.ranking.likelihood import LikelihoodRanker
    from purld.ranking.self_judge import SelfJudgeRanker
    from purld.rollout.sampler import Sampler, StaticDecoderSampler
    from purld.teachers.reference import ReferenceTeacher

    checkpointing = purld_checkpointing(size, checkpointing)  # purld's default for this student unless the row says
    model, tokenizer = build_model(size, device=device, lean_activations=lean_activations, checkpointing=checkpointing, lora=lora)
    if decoder == "static":  # rollout=static: purld's own decoder (a CUDA graph per token step on a GPU)
        sampler = StaticDecoderSampler(num_candidates=K, max_new_tokens=new_tokens, temperature=1.0, suppress_eos=True)
    elif decoder == "vllm":  # rollout=vllm: vLLM colocated, the weights pushed before each rollout
        from purld.rollout import VLLMSampler

        sampler = VLLMSampler(num_candidates=K, max_new_tokens=new_tokens, temperature=1.0, suppress_eos=True,
                              dtype="bfloat16" if precision == "bf16" else None)
    else:
        sampler = Sampler(num_candidates=K, max_new_tokens=new_tokens, temperature=1.0, suppress_eos=True, cache_implementation=cache)
    task = harness_task(prompts, NUM_PROMPTS * (steps + warmup), tokenizer, MAX_POSITIONS - new_tokens)
    rankers = {"lexical": LexicalRanker, "likelihood": LikelihoodRanker, "self_judge": SelfJudgeRanker}
    with tempfile.TemporaryDirectory() as tmp:
        datamodule = AnchorDataModule(
            task=task,
            teacher=ReferenceTeacher(),
            anchor_cache=AnchorCache(Path(tmp) / "anchors.sqlite"),
            tokenizer=tokenizer,
            batch_size=NUM_PROMPTS,
            progress=False,
            use_chat_template=is_chat(tokenizer),
        )
        objective = GRPOObjective(beta=BETA_GRPO, epsilon=EPSILON, loss_type="dapo", preferences=GroupTargetBuilder())
        module = module_for(
            objective,
            model=model,
            tokenizer=tokenizer,
            optimizer=purld_optimizer,
            sampler=sampler,
            reference_model=None if lora else copy.deepcopy(model),  # LoRA: the base, adapters disabled
            micro_batch_size=micro_batch_size,
            task=task,
            ranker=rankers[ranker](),
            render=datamodule.render_message,
        )
        timer = StepTimer(device)
        trainer = L.Trainer(
            accelerator="gpu" if device == "cuda" else "cpu",
            devices=1,
            max_steps=steps + warmup,
            precision="bf16-mixed" if precision == "bf16" else "32-true",
            gradient_clip_val=1.0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            use_distributed_sampler=False,
            callbacks=[timer],
        )
        datamodule.prepare_data()
        datamodule.setup("fit")
        prompt_tokens = datamodule.collate(datamodule.train_items[:NUM_PROMPTS]).prompt_ids.shape[1]
        trainer.fit(module, datamodule=datamodule)
    split = {name: median_after(values, warmup) for name, values in timer.parts.items()}
    step = median_after(timer.steps, warmup)
    completion_tokens = NUM_PROMPTS * K * new_tokens
    # The whole update (forward, backward, clip, optimizer): the step less what came before the loss.
    update_total = median_after([s - timer.parts["time/rollout"][i] - timer.parts["time/ranking"][i] for i, s in enumerate(timer.steps)], warmup)
    parameters = parameter_count(model)
    return {
        "step_s": step,
        "rollout_s": split.get("time/rollout"),
        "ranking_s": split.get("time/ranking"),
        "update_s": split.get("time/update"),
        "update_total_s": update_total,
        "update_flops": update_flops(parameters, NUM_PROMPTS * K * (prompt_tokens + new_tokens)),
        "parameters": parameters,
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "rollout_tokens_per_s": completion_tokens / split["time/rollout"],
        "ranking_fraction": split["time/ranking"] / step,
        # rollout=static on CUDA: whether its step was captured as a graph (a failed capture decodes eagerly)
        **({"cuda_graph": sampler.graph_captured} if decoder == "static" else {}),
    }


def StepTimer(device: str = "cpu"):  # noqa: N802 — built lazily so the module imports without lightning
    import lightning as L

    class _StepTimer(L.Callback):
        """Wall time of each whole training step (forward, backward, optimizer), and the module's own split."""

        def __init__(self) -> None:
            self.steps: list[float] = []
            self.parts: dict[str, list[float]] = {}

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            synchronize(device)
            self._start = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            synchronize(device)
            self.steps.append(time.perf_counter() - self._start)
            for name, value in module._timings.items():  # read before the module logs and clears them
                self.parts.setdefault(name, []).append(value)

    return _StepTimer()


# --------------------------------------------------------------- TRL: GRPO step
def trl_grpo(
    size: str, K: int, steps: int, warmup: int, threads: int, precision: str, device: str = "cpu", new_tokens: int = 32,
    prompts: str = "arithmetic", lora: bool = False,
) -> dict:
    setup_torch(threads)
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    model, tokenizer = build_model(size)  # on the CPU: TRL loads it from disk onto its device
    items = harness_items(prompts, NUM_PROMPTS * (steps + warmup), tokenizer, MAX_POSITIONS - new_tokens)
    chat = is_chat(tokenizer)  # a real student: conversational prompts, which TRL renders through the chat template
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": prompt}] if chat else prompt, "anchor": anchor}
                                 for prompt, anchor in items])

    def reward(completions, anchor, **_):
        texts = [c[-1]["content"] if chat else c for c in completions]
        return [lexical_reward(c, a) for c, a in zip(texts, anchor)]

    timer = trl_step_timer(device)
    with tempfile.TemporaryDirectory() as tmp:
        args = GRPOConfig(
            **trl_common_args(tmp, precision, device),
            per_device_train_batch_size=NUM_PROMPTS * K,
            num_generations=K,
            max_completion_length=new_tokens,
            max_steps=steps + warmup,
            learning_rate=LR,
            beta=BETA_GRPO,
            epsilon=EPSILON,
            loss_type="dapo",
            scale_rewards="group",
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            num_iterations=1,
            generation_kwargs={"suppress_tokens": [tokenizer.eos_token_id]},
            shuffle_dataset=False,
        )
        # TRL builds its reference model from the policy's path, so the policy goes through disk as a user's would.
        model.save_pretrained(Path(tmp) / "model")
        tokenizer.save_pretrained(Path(tmp) / "model")
        trainer = GRPOTrainer(
            model=str(Path(tmp) / "model"), reward_funcs=reward, args=args, train_dataset=dataset,
            processing_class=tokenizer, callbacks=[timer], peft_config=lora_config() if lora else None,
        )
        trainer.train()
    return {"step_s": median_after(timer.steps, warmup)}
