"""The pairwise step (DPO): rollout → rank → pairs → chosen / rejected log-probs → objective.

Each prompt's pool is its K candidates plus the anchor (index K), so
`anchor_vs_worst` pairs need no special path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from purld.memory import heap_while_decoding
from purld.modules.base import PolicyModule
from purld.modules.samples import StepSamples
from purld.ranking.diagnostics import oracle_diagnostics, oracle_scores
from purld.types import Pairs, PromptBatch, Rollout


def candidate_pool(batch: PromptBatch, rollout: Rollout, pad_token_id: int) -> tuple[Tensor, Tensor]:
    """(B, K+1, T) ids and mask: the K candidates, then the anchor."""
    T = max(rollout.completion_ids.shape[2], batch.anchor_ids.shape[1])

    def pad(tensor: Tensor, value) -> Tensor:
        return F.pad(tensor, (0, T - tensor.shape[-1]), value=value)

    ids = torch.cat([pad(rollout.completion_ids, pad_token_id), pad(batch.anchor_ids, pad_token_id)[:, None]], dim=1)
    mask = torch.cat([pad(rollout.completion_mask, False), pad(batch.anchor_mask, False)[:, None]], dim=1)
    return ids, mask


def distinct_sequences(pairs: Pairs) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The sequences the pairs read, each once, grouped by prompt: prompts (G,) into the batch, rows (G, R) into
    each prompt's pool (R = the most distinct sequences a prompt has; shorter groups repeat their last one), and
    for each pair the flat row (into G·R) of its chosen and of its rejected answer (P,) each. The pairs of one
    prompt only read rows of its group, so a micro-batch pass that keeps groups whole stays exact."""
    by_prompt: dict[int, list[int]] = {}
    for prompt, chosen, rejected in zip(pairs.prompt_index.tolist(), pairs.chosen_index.tolist(), pairs.rejected_index.tolist()):
        seen = by_prompt.setdefault(prompt, [])
        seen.extend(index for index in (chosen, rejected) if index not in seen)
    width = max(len(indices) for indices in by_prompt.values())
    row_of = {(prompt, index): group * width + position
              for group, (prompt, indices) in enumerate(by_prompt.items()) for position, index in enumerate(indices)}
    device = pairs.prompt_index.device
    rows = torch.tensor([indices + indices[-1:] * (width - len(indices)) for indices in by_prompt.values()], device=device)
    flat = [(row_of[(p, c)], row_of[(p, r)]) for p, c, r in
            zip(pairs.prompt_index.tolist(), pairs.chosen_index.tolist(), pairs.rejected_index.tolist())]
    chosen_row, rejected_row = torch.tensor(flat, device=device).unbind(1)
    return torch.tensor(list(by_prompt), device=device), rows, chosen_row, rejected_row


def pair_oracle_accuracy(oracle: Tensor, pairs: Pairs) -> Tensor:
    """Fraction of pairs whose chosen side is oracle-better, from the candidates' (B, K) oracle scores (the anchor,
    index K, counts as correct); NaN without pairs."""
    if len(pairs) == 0:
        return torch.tensor(float("nan"))
    pool = torch.cat([oracle, oracle.new_ones(oracle.shape[0], 1)], dim=1).to(pairs.prompt_index.device)  # (B, K+1)
    agree = pool[pairs.prompt_index, pairs.chosen_index] > pool[pairs.prompt_index, pairs.rejected_index]
    return agree.float().mean()


class PairwiseModule(PolicyModule):
    def training_step(self, batch: PromptBatch, batch_idx: int) -> dict[str, Tensor | StepSamples]:
        with self.timed("rollout"), heap_while_decoding():
            rollout = self.sampler.sample(self.policy, self.tokenizer, batch)
        with self.timed("ranking"), heap_while_decoding():
            scores = self.rank(batch, rollout)  # (B, K)
            pairs = self.objective.preferences(scores)
        oracle = oracle_scores(self.task, batch, rollout)
        metrics = {
            "rollout/len_mean": rollout.lengths.float().mean(),
            "rollout/truncated_fraction": rollout.is_truncated.float().mean(),
            "rank/score_mean": scores.mean(),
            "rank/score_std": scores.std(),
            "pref/num_pairs": float(len(pairs)),
            **oracle_diagnostics(oracle, scores, None),
        }
        with self.timed("update"):
            if len(pairs) == 0:  # the objective's own metrics, all NaN: every step (and DDP rank) logs the same keys
                loss = self.zero_loss()
                nothing = scores.new_zeros(0)
                metrics.update(self.objective(nothing, nothing, nothing, nothing).prefixed("train/"))
            else:
                out = self.dpo_step(batch, rollout, pairs)
                loss = out.loss
                metrics.update(out.prefixed("train/"))
            if oracle is not None:
                metrics["rank/pair_oracle_accuracy"] = pair_oracle_accuracy(oracle, pairs)
        self.log_metrics(metrics, batch_size=len(batch))
        return {"loss": loss, "samples": StepSamples(batch, rollout, scores, oracle, pairs=pairs)}

    def dpo_step(self, batch: PromptBatch, rollout: Rollout, pairs: Pairs):
        pool_ids, pool_mask = candidate_pool(batch, rollout, self.tokenizer.pad_token_id)
        # Each distinct sequence once: all_ordered at K = 16 makes up to 136 pairs of 17 sequences a prompt.
        prompts, rows, chosen_row, rejected_row = distinct_sequences(pairs)
        inputs = (batch.prompt_ids[prompts], batch.prompt_mask[prompts], pool_ids[prompts[:, None], rows].flatten(0, 1),
                  pool_mask[prompts[:, None], rows].flatten(0, 1))
        mask, vision = inputs[3], batch.vision_of(prompts)

        def sequence_logps(token_logps: Tensor) -> tuple[Tensor, Tensor]:  # chosen (P,), rejected (P,)
            if self.objective.average_log_prob:
                logps = (token_logps * mask).sum(-1) / mask.sum(-1).clamp(min=1)
            else:
                logps = (token_logps * mask).sum(-1)
            return logps[chosen_row], logps[rejected_row]

        if self.objective.needs_reference:
            ref_chosen, ref_rejected = sequence_logps(self.reference_token_logps(*inputs, vision=vision))
        else:
            ref_chosen = ref_rejected = mask.new_zeros(len(pairs), dtype=torch.float32)

        def loss_of(token_logps: Tensor):
            return self.objective(*sequence_logps(token_logps), ref_chosen, ref_rejected)

        return self.micro_batched(loss_of, inputs, vision=vision)
