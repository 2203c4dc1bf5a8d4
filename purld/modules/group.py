"""The group step (GRPO, LDL): rollout → rank → group targets → objective."""

from __future__ import annotations

from torch import Tensor

from purld.memory import heap_while_decoding
from purld.modules.base import PolicyModule
from purld.modules.samples import StepSamples
from purld.objectives.grpo import GRPOObjective
from purld.ranking.diagnostics import oracle_diagnostics, oracle_scores
from purld.types import PromptBatch, Rollout


def flatten(tensor: Tensor) -> Tensor:
    """(B, K, …) → (B·K, …)."""
    return tensor.reshape(-1, *tensor.shape[2:])


class GroupModule(PolicyModule):
    def training_step(self, batch: PromptBatch, batch_idx: int) -> dict[str, Tensor | StepSamples]:
        with self.timed("rollout"), heap_while_decoding():
            rollout = self.sampler.sample(self.policy, self.tokenizer, batch)
        with self.timed("ranking"), heap_while_decoding():
            scores = self.rank(batch, rollout)  # (B, K)
            targets = self.objective.preferences(scores, gather=self.gather_rows)
        oracle = oracle_scores(self.task, batch, rollout)
        with self.timed("update"):
            if isinstance(self.objective, GRPOObjective):
                out = self.grpo_step(batch, rollout, targets.advantages)
            else:
                out = self.ldl_step(batch, rollout, targets.label_distribution)
        lengths = rollout.lengths.float()
        metrics = {
            **out.prefixed("train/"),
            "rollout/len_mean": lengths.mean(),
            "rollout/truncated_fraction": rollout.is_truncated.float().mean(),
            "rank/score_mean": scores.mean(),
            "rank/score_std": scores.std(),
            "reward/mean": targets.rewards.mean(),
            "reward/std": targets.rewards.std(dim=1).mean(),
            **oracle_diagnostics(oracle, scores, targets.label_distribution),
        }
        self.log_metrics(metrics, batch_size=len(batch))
        return {"loss": out.loss, "samples": StepSamples(batch, rollout, scores, oracle, rewards=targets.rewards)}

    def gather_rows(self, tensor: Tensor) -> Tensor:
        """(B, …) on each rank → (world_size·B, …): `scale_rewards=batch` takes the global batch's std."""
        if self._trainer is None or self.trainer.world_size == 1:
            return tensor
        return self.all_gather(tensor).reshape(-1, *tensor.shape[1:])

    def _flat_inputs(self, batch: PromptBatch, rollout: Rollout) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The B prompts and their B·K candidates: the log-prob functions read each prompt once for its K candidates."""
        return batch.prompt_ids, batch.prompt_mask, flatten(rollout.completion_ids), flatten(rollout.completion_mask)

    def grpo_step(self, batch: PromptBatch, rollout: Rollout, advantages: Tensor):
        inputs = self._flat_inputs(batch, rollout)
        temperature = self.sampler.temperature
        ref_per_token_logps = None
        if self.objective.needs_reference:
            ref_per_token_logps = self.reference_token_logps(*inputs, temperature=temperature, vision=batch.vision_inputs)
        is_truncated = rollout.is_truncated.reshape(-1)
        num_active_tokens = None
        if self.objective.loss_type == "dapo" and self._trainer is not None and self.trainer.world_size > 1:
            # dapo divides by the tokens of the whole global batch; DDP then averages the ranks' gradients.
            active = self.objective.loss_mask(inputs[3], is_truncated).sum().float()
            num_active_tokens = self.trainer.strategy.reduce(active, reduce_op="mean").clamp(min=1.0)
        old_per_token_logps = flatten(rollout.sampling_token_logps)

        def loss_of(per_token_logps: Tensor):
            return self.objective(
                per_token_logps,
                old_per_token_logps,
                advantages.reshape(-1),
                inputs[3],
                is_truncated,
                ref_per_token_logps,
                num_active_tokens,
            )

        return self.micro_batched(loss_of, inputs, temperature, vision=batch.vision_inputs)

    def ldl_step(self, batch: PromptBatch, rollout: Rollout, label_distribution: Tensor):
        inputs = self._flat_inputs(batch, rollout)
        mask = inputs[3]
        B, K = label_distribution.shape
        ref_logps = (self.reference_token_logps(*inputs, vision=batch.vision_inputs) * mask).sum(-1).reshape(B, K)

        def loss_of(token_logps: Tensor):
            policy_logps = (token_logps * mask).sum(-1).reshape(B, K)
            return self.objective(policy_logps, ref_logps, rollout.lengths, label_distribution)

        return self.micro_batched(loss_of, inputs, vision=batch.vision_inputs)
