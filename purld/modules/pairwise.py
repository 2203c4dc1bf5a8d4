"""The pairwise step (DPO): rollout → rank → pairs → chosen / rejected log-probs → objective.

Each prompt's pool is its K candidates plus the anchor (index K), so
`anchor_vs_worst` pairs need no special path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from purld.modules.base import PolicyModule
from purld.modules.samples import StepSamples
from purld.types import Pairs, PromptBatch, Rollout


def candidate_pool(batch: PromptBatch, rollout: Rollout, pad_token_id: int) -> tuple[Tensor, Tensor]:
    """(B, K+1, T) ids and mask: the K candidates, then the anchor."""
    T = max(rollout.completion_ids.shape[2], batch.anchor_ids.shape[1])

    def pad(tensor: Tensor, value) -> Tensor:
        return F.pad(tensor, (0, T - tensor.shape[-1]), value=value)

    ids = torch.cat([pad(rollout.completion_ids, pad_token_id), pad(batch.anchor_ids, pad_token_id)[:, None]], dim=1)
    mask = torch.cat([pad(rollout.completion_mask, False), pad(batch.anchor_mask, False)[:, None]], dim=1)
    return ids, mask


class PairwiseModule(PolicyModule):
    def training_step(self, batch: PromptBatch, batch_idx: int) -> Tensor:
        with self.timed("rollout"):
            rollout = self.sampler.sample(self.policy, self.tokenizer, batch)
        with self.timed("ranking"):
            scores = self.rank(batch, rollout)  # (B, K)
            pairs = self.objective.preferences(scores)
        self.last_samples = StepSamples(batch, rollout, scores, pairs=pairs)
        metrics = {
            "rollout/len_mean": rollout.lengths.float().mean(),
            "rollout/truncated_fraction": rollout.is_truncated.float().mean(),
            "rank/score_mean": scores.mean(),
            "rank/score_std": scores.std(),
            "pref/num_pairs": float(len(pairs)),
            **self.datamodule.oracle_diagnostics(batch, rollout, scores, None),
        }
        with self.timed("update"):
            if len(pairs) == 0:
                loss = self.zero_loss()
            else:
                out = self.dpo_step(batch, rollout, pairs)
                loss = out.loss
                metrics.update(out.prefixed("train/"))
                if self.datamodule.task.has_oracle:
                    metrics["rank/pair_oracle_accuracy"] = self.pair_oracle_accuracy(batch, rollout, pairs)
        self.log_metrics(metrics, batch_size=len(batch))
        return loss

    def dpo_step(self, batch: PromptBatch, rollout: Rollout, pairs: Pairs):
        pool_ids, pool_mask = candidate_pool(batch, rollout, self.tokenizer.pad_token_id)
        P = len(pairs)
        # Row 2p is pair p's chosen answer, row 2p + 1 its rejected one: both continue the same prompt, read once.
        which = torch.stack([pairs.chosen_index, pairs.rejected_index], dim=1)  # (P, 2)
        prompt = pairs.prompt_index
        inputs = (batch.prompt_ids[prompt], batch.prompt_mask[prompt], pool_ids[prompt[:, None], which].flatten(0, 1),
                  pool_mask[prompt[:, None], which].flatten(0, 1))
        mask = inputs[3]

        def sequence_logps(token_logps: Tensor) -> tuple[Tensor, Tensor]:  # chosen (P,), rejected (P,)
            if self.objective.average_log_prob:
                logps = (token_logps * mask).sum(-1) / mask.sum(-1).clamp(min=1)
            else:
                logps = (token_logps * mask).sum(-1)
            return logps.reshape(P, 2).unbind(1)

        if self.objective.needs_reference:
            ref_chosen, ref_rejected = sequence_logps(self.reference_token_logps(*inputs))
        else:
            ref_chosen = ref_rejected = mask.new_zeros(P, dtype=torch.float32)

        def loss_of(token_logps: Tensor):
            return self.objective(*sequence_logps(token_logps), ref_chosen, ref_rejected)

        return self.micro_batched(loss_of, inputs)

    def pair_oracle_accuracy(self, batch: PromptBatch, rollout: Rollout, pairs: Pairs) -> Tensor:
        """Fraction of pairs whose chosen side is oracle-better (the anchor counts as correct)."""
        task = self.datamodule.task

        def oracle(prompt: int, index: int) -> float:
            return 1.0 if index == rollout.num_candidates else task.oracle_score(batch.examples[prompt], rollout.texts[prompt][index])

        agree = [
            oracle(p, c) > oracle(p, r)
            for p, c, r in zip(pairs.prompt_index.tolist(), pairs.chosen_index.tolist(), pairs.rejected_index.tolist())
        ]
        return torch.tensor(sum(agree) / len(agree))
