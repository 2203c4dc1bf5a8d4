"""What every step shape shares: the policy, the frozen reference, the ranker, the optimizer, held-out validation,
timers, and what a checkpoint holds.

The module owns the algorithm's state, as TRL's trainers own their `reward_funcs`: the task (its oracle, for the
diagnostics), the ranker that scores each step's candidates, and the judge of the held-out win rate. The
datamodule only serves (prompt, anchor) batches; nothing here reads it back through the trainer.

A checkpoint holds what training changes: the trainable parameters (all of a
fully fine-tuned policy; a LoRA policy's adapters only), the optimizer and
scheduler, and the RNG states, so that a resumed run samples what the
uninterrupted one would have. Frozen weights (the reference, a LoRA base) are
rebuilt from the config on resume and filled back in when the checkpoint loads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import lightning as L
import torch
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from lightning.pytorch.plugins.precision import FSDPPrecision, MixedPrecision, Precision
from lightning.pytorch.utilities import GradClipAlgorithmType
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from purld.eval.evaluate import EvalAccumulator, evaluate_batch
from purld.objectives.base import LossOutput, Objective
from purld.ranking.base import Ranker, RankingContext
from purld.rollout.logprobs import completion_token_logps
from purld.rollout.sampler import Sampler
from purld.students.hf import has_adapters
from purld.tasks.base import Task
from purld.types import Candidates, PromptBatch

Vision = tuple[dict[str, Tensor], ...]  # per prompt, its vision inputs ({} for text; () for a text batch)

# Shown beside the training progress bar (on a terminal); everything goes to the logger.
PROGRESS_BAR_METRICS = ("train/loss", "rank/score_mean", "rollout/oracle_accuracy", "time/step")


class PolicyModule(L.LightningModule):
    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        objective: Objective,
        optimizer: Callable[..., torch.optim.Optimizer],
        sampler: Sampler | None = None,
        reference_model: PreTrainedModel | None = None,
        eval_max_new_tokens: int = 32,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        metric_prefix: str = "",
        micro_batch_size: int | None = None,
        task: Task | None = None,
        ranker: Ranker | None = None,
        judge: Ranker | None = None,
        render: Callable[..., str] = str,
        processor=None,
    ) -> None:
        super().__init__()
        self.policy, self.tokenizer, self.objective = model, tokenizer, objective
        self.task, self.ranker = task, ranker
        self.judge = judge or ranker  # scores held-out answers against the anchor (win_rate): eval.judge, else the ranker
        self.render = render  # a user turn as the student reads it (`AnchorDataModule.render_message`), for self-rankers
        self.processor = processor  # a vision-language student's, for self-rankers that read the prompt's images
        self.optimizer_factory, self.scheduler_factory, self.sampler = optimizer, scheduler, sampler
        self.reference = reference_model
        if self.reference is not None:
            self.reference.requires_grad_(False).eval()
        self.eval_max_new_tokens = eval_max_new_tokens
        self._timings: dict[str, float] = {}
        self._validation = EvalAccumulator()
        self.metric_prefix = metric_prefix  # the warm start logs under warmstart/, beside PU-RLD's metrics
        if micro_batch_size is not None and (isinstance(micro_batch_size, bool) or micro_batch_size < 1):
            raise ValueError(f"data.micro_batch_size={micro_batch_size!r}: allowed values are integers ≥ 1, or null")
        self.micro_batch_size = micro_batch_size  # sequences per forward + backward of the update; None: all
        self.step_means = StepMeans()  # this rank's means over the steps of each logged figure, for summary.json

    # ----------------------------------------------------------------- helpers
    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        # CUDA runs asynchronously: without a sync a stage's kernels would be billed to the next stage.
        synchronize = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        synchronize()
        start = time.perf_counter()
        yield
        synchronize()
        self._timings[f"time/{stage}"] = time.perf_counter() - start

    def pop_timings(self) -> dict[str, float]:
        timings, self._timings = self._timings, {}
        return timings

    def policy_token_logps(self, *inputs: Tensor, temperature: float = 1.0, vision: Vision = ()) -> Tensor:
        """(B·K, T) log-probs of (prompt_ids (B, L), prompt_mask, completion_ids (B·K, T), completion_mask) under π_θ;
        `vision`: the B prompts' vision inputs (`PromptBatch.vision_inputs`)."""
        return completion_token_logps(self.policy, *inputs, temperature=temperature, vision=vision)

    @torch.no_grad()
    def reference_token_logps(self, *inputs: Tensor, temperature: float = 1.0, vision: Vision = ()) -> Tensor:
        """The same under π_ref: the frozen copy, or (LoRA, no copy) the policy with its adapters disabled."""
        if self.reference is not None:
            return completion_token_logps(self.reference, *inputs, temperature=temperature, vision=vision)
        if not has_adapters(self.policy):
            raise RuntimeError("this objective needs a reference policy: pass reference_model or use a LoRA student")
        with self.policy.disable_adapter():
            return completion_token_logps(self.policy, *inputs, temperature=temperature, vision=vision)

    def micro_batched(
        self,
        loss_of: Callable[[Tensor], LossOutput],
        inputs: tuple[Tensor, Tensor, Tensor, Tensor],
        temperature: float = 1.0,
        vision: Vision = (),
    ) -> LossOutput:
        """`loss_of(π_θ token log-probs (G·R, T))` for `inputs` = (prompt_ids (G, L), prompt_mask, completion_ids
        (G·R, T), completion_mask): G groups of R rows that share a prompt (a prompt's K candidates, a pair's two
        answers, one SFT example), with forward and backward run `micro_batch_size` rows at a time.

        A pass never splits a group. Each pass computes its gradient at once (`torch.autograd.grad`) and frees
        its activations, so activation memory follows the micro-batch, not the batch. The returned loss has the
        whole batch's value and metrics; its backward hands the summed gradients to the parameters (times the
        incoming gradient: Lightning's loss scaling, 1 / accumulate_grad_batches), so DDP still all-reduces
        them in that backward.

        Exact because every objective is a sum of per-group terms whose normalisers depend on the masks only:
        a pass's gradient does not depend on the other rows' values, so zeros stand in for the rows not yet run.

        Memory for time: on SmolLM2-135M-Instruct (GRPO, 16 rows in 2 passes of 8) 13.6 % off the step's peak RSS
        for 33 % more step time (`python scripts/bench_mechanisms.py`, `micro_batch`).
        """
        prompt_ids, prompt_mask, completion_ids, completion_mask = inputs
        num_groups = prompt_ids.shape[0]
        rows_per_group = completion_ids.shape[0] // num_groups

        def token_logps_of(groups: slice) -> Tensor:
            rows = slice(groups.start * rows_per_group, groups.stop * rows_per_group)
            return self.policy_token_logps(
                prompt_ids[groups], prompt_mask[groups], completion_ids[rows], completion_mask[rows], temperature=temperature,
                vision=vision[groups],
            )

        per_pass = num_groups if self.micro_batch_size is None else max(1, self.micro_batch_size // rows_per_group)
        if per_pass >= num_groups:
            return loss_of(token_logps_of(slice(0, num_groups)))
        params = [p for p in self.policy.parameters() if p.requires_grad]
        gradients = [torch.zeros_like(p) for p in params]
        token_logps = completion_mask.new_zeros(completion_mask.shape, dtype=torch.float32)
        for start in range(0, num_groups, per_pass):
            groups = slice(start, min(start + per_pass, num_groups))
            rows = slice(groups.start * rows_per_group, groups.stop * rows_per_group)
            part = token_logps_of(groups)
            loss = loss_of(torch.cat([token_logps[: rows.start], part, token_logps[rows.stop :]])).loss
            for total, gradient in zip(gradients, torch.autograd.grad(loss, params, allow_unused=True)):
                if gradient is not None:
                    total.add_(gradient)
            token_logps[rows] = part.detach()
        with torch.no_grad():
            out = loss_of(token_logps)
        return LossOutput(_PrecomputedGradients.apply(out.loss, gradients, *params), out.metrics)

    def rank(self, batch: PromptBatch, rollout: Candidates) -> Tensor:
        """Scores (B, K) of the candidates relative to each prompt's anchor. Self-rankers read the current policy,
        or with `ranker.judge_model=reference` the frozen reference (the LoRA policy with its adapters disabled): a
        judge that the policy cannot move."""

        def scores(model: PreTrainedModel, model_is_sampler: bool) -> Tensor:
            context = RankingContext(self.task, model, self.tokenizer, model_is_sampler=model_is_sampler, render=self.render,
                                     processor=self.processor)
            return self.ranker(batch, rollout, context)

        if self.ranker.judge_model == "policy":
            return scores(self.policy, model_is_sampler=True)
        if self.reference is not None:
            return scores(self.reference, model_is_sampler=False)
        if not has_adapters(self.policy):
            raise RuntimeError("ranker.judge_model=reference needs a reference policy: pass reference_model or use a LoRA student")
        with self.policy.disable_adapter():
            return scores(self.policy, model_is_sampler=False)

    def log_metrics(self, metrics: dict[str, Tensor | float], batch_size: int) -> None:
        """Log a step's metrics. Under DDP each is the mean over the ranks where it is defined (NaN where it is
        defined on none: a rank whose groups are all tied has no Kendall τ, and a plain mean would make the
        global one NaN): one all-reduce for the whole key set, which every rank logs in full."""
        names = sorted(metrics)
        values = torch.tensor([float(metrics[name]) for name in names], dtype=torch.float64)
        if self._trainer is not None and self.trainer.world_size > 1:
            values = mean_over_ranks(values, self.sum_over_ranks)
        synced = dict(zip(names, values.tolist()))
        self.step_means.add(synced)
        for name, value in synced.items():
            self.log(
                self.metric_prefix + name,
                value,
                on_step=True,
                on_epoch=False,
                batch_size=batch_size,
                sync_dist=False,  # reduced above
                prog_bar=name in PROGRESS_BAR_METRICS,
            )

    def zero_loss(self) -> Tensor:
        """A zero with a graph, for a step with nothing to learn (e.g. every pair tied)."""
        return sum(p.sum() for p in self.policy.parameters() if p.requires_grad) * 0.0

    # -------------------------------------------------------------- lightning
    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=[p for p in self.policy.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None, gradient_clip_algorithm: str | None = None
    ) -> None:
        """`trainer.gradient_clip_val` where Lightning's precision plugins refuse it on purld's configs:
        - FSDP (`trainer=fsdp`): the norm is taken over the sharded gradients by the wrapped root module, as
          torch's FSDP docs require (Lightning's FSDP plugin refuses clipping by norm, lacking that module);
        - a fused optimizer (`+optimizer.fused=true`, TRL's default) under `bf16-mixed`: Lightning refuses it because a
          fused step unscales the gradients itself, after clipping; bf16 has no scaler, nothing to unscale.
        Anything else goes to Lightning (fp16's scaler with a fused optimizer is still refused there)."""
        precision = self.trainer.precision_plugin
        algorithm = GradClipAlgorithmType(gradient_clip_algorithm or GradClipAlgorithmType.NORM)
        if gradient_clip_val and isinstance(precision, FSDPPrecision) and algorithm == GradClipAlgorithmType.NORM:
            self.trainer.model.clip_grad_norm_(gradient_clip_val)
        elif gradient_clip_val and isinstance(precision, MixedPrecision) and precision.scaler is None:
            Precision.clip_gradients(precision, optimizer, gradient_clip_val, algorithm)
        else:
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer, optimizer_closure=None) -> None:
        """The step, then the gradients freed at once. Lightning frees them only in the next step's closure, after
        `training_step`: they would sit through the next rollout and forward, at the step's memory peak (one
        float32 copy of the trainable parameters: 100 MB for a 25 M-parameter policy). Lightning steps only at
        the end of an accumulation window, so accumulated gradients are untouched."""
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        optimizer.zero_grad(set_to_none=True)

    def setup(self, stage: str) -> None:
        if self.reference is not None:
            precision = self.trainer.precision_plugin
            if type(precision) is MixedPrecision:  # not FSDP's (its flat parameters need one dtype), nor fp32/true
                store_linear_weights_in(self.reference, precision.autocast_context_manager().fast_dtype)

    def on_fit_start(self) -> None:
        # from_pretrained returns a model in eval mode and Lightning keeps each module's mode: without this, a
        # loaded student would train in eval mode, where transformers' activation checkpointing is off.
        self.policy.train()
        if self.micro_batch_size is not None and "FSDP" in type(self.trainer.strategy).__name__:
            raise ValueError("data.micro_batch_size is not supported with FSDP (it reduces gradients in its own hooks)")

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        timings = self.pop_timings()
        if timings:
            timings["time/step"] = sum(timings.values())
            self.log_metrics(timings, batch_size=len(batch))

    def validation_step(self, batch: PromptBatch, batch_idx: int) -> None:
        self._validation.add(
            evaluate_batch(self.policy, self.tokenizer, batch, self.task, self.judge, self.eval_max_new_tokens, self.render,
                           self.processor)
        )

    def on_validation_epoch_end(self) -> None:
        """The means over the whole held-out set: each rank evaluated its share, so sums and counts are pooled."""
        values, self._validation = self._validation.values, EvalAccumulator()
        names = sorted(values)  # every rank has the same names (the same task and judge)
        totals = torch.tensor([[sum(values[name]), len(values[name])] for name in names], dtype=torch.float64)
        if self.trainer.world_size > 1:
            totals = self.sum_over_ranks(totals)
        means = {f"eval/{name}": total / count for name, (total, count) in zip(names, totals.tolist()) if count}
        self.log_dict(means, on_step=False, on_epoch=True, sync_dist=False)  # pooled above

    def sum_over_ranks(self, tensor: Tensor) -> Tensor:
        """The all-reduce (sum) of `tensor` across the ranks, on the CPU."""
        return self.trainer.strategy.reduce(tensor.to(self.device), reduce_op="sum").cpu()

    # ------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        trainable = {f"policy.{name}" for name, p in self.policy.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
        checkpoint["purld_rng"] = _collect_rng_states()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint["state_dict"]
        checkpoint["state_dict"] = {**{k: v for k, v in self.state_dict().items() if k not in saved}, **saved}
        if "purld_rng" in checkpoint:
            _set_rng_states(checkpoint["purld_rng"])


def mean_over_ranks(values: Tensor, reduce_sum: Callable[[Tensor], Tensor]) -> Tensor:
    """(M,) values on this rank → (M,) their means over the ranks where each is defined (not NaN), NaN where it is
    defined on none. `reduce_sum`: the all-reduce (sum) of an (M, 2) tensor of (sum, count) across the ranks."""
    defined = ~values.isnan()
    totals = reduce_sum(torch.stack([torch.where(defined, values, torch.zeros_like(values)), defined.to(values.dtype)], dim=1))
    return torch.where(totals[:, 1] > 0, totals[:, 0] / totals[:, 1].clamp(min=1), torch.full_like(values, float("nan")))


class StepMeans:
    """Means over training steps that count only the steps where a figure was defined (not NaN), and say how many:
    Kendall τ is undefined on a step where no prompt's candidates mix right and wrong."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.defined: dict[str, int] = {}
        self.steps: dict[str, int] = {}

    def add(self, metrics: dict[str, Tensor | float]) -> None:
        for name, value in metrics.items():
            value = float(value)
            self.steps[name] = self.steps.get(name, 0) + 1
            if value == value:  # not NaN
                self.totals[name] = self.totals.get(name, 0.0) + value
                self.defined[name] = self.defined.get(name, 0) + 1

    def summary(self, prefix: str = "") -> dict[str, dict[str, float | int | None]]:
        """{name: {mean (None if never defined), steps_defined, steps}} for the names under `prefix`."""
        return {
            name: {
                "mean": self.totals[name] / self.defined[name] if self.defined.get(name) else None,
                "steps_defined": self.defined.get(name, 0),
                "steps": steps,
            }
            for name, steps in sorted(self.steps.items())
            if name.startswith(prefix)
        }


def store_linear_weights_in(model: torch.nn.Module, dtype: torch.dtype) -> int:
    """The frozen reference under mixed precision (`trainer.precision=bf16-mixed`, `16-mixed`): its Linear weights
    (and biases) are kept in the autocast dtype, in which autocast would cast them at every call anyway, so its
    log-probs are bit-identical, in half the memory. Embeddings, norms and weights tied to them (a tied output
    head) keep their dtype. Returns how many Linear layers were converted."""
    kept = {id(p) for m in model.modules() if type(m) is not torch.nn.Linear for p in m.parameters(recurse=False)}
    linears = [m for m in model.modules() if type(m) is torch.nn.Linear and id(m.weight) not in kept]
    for linear in linears:
        linear.to(dtype)
    return len(linears)


class _PrecomputedGradients(torch.autograd.Function):
    """Passes `loss` through; its backward gives each parameter a gradient computed beforehand, times the
    incoming gradient. The parameters are inputs only so that autograd (and DDP's hooks) reach them."""

    @staticmethod
    def forward(ctx, loss: Tensor, gradients: list[Tensor], *params: Tensor) -> Tensor:
        ctx.gradients = gradients
        return loss.detach().clone()

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        gradients, ctx.gradients = ctx.gradients, None
        return (None, None, *(gradient.mul_(grad_output) for gradient in gradients))
