"""`ranker=likelihood`: pointwise mutual information of a candidate with the anchor, under the student.

    s_k = (ℓ_θ(y_k | x ⊕ a) − ℓ_θ(y_k | x)) / |y_k|

`x ⊕ a` is `anchor_template` rendered with the prompt and anchor (the anchor
placed in context as a reference). Each context is read once per prompt and its
KV cache shared by the K candidates; the second term is the sampler's recorded
log-prob when sampling ran at temperature 1 (no second pass). Nats per token.
"""

from __future__ import annotations

from torch import Tensor

from purld.data.prompts import encode_prompts
from purld.ranking.base import Ranker, RankingContext, checked_judge_model, render_with_images
from purld.rollout.logprobs import completion_token_logps
from purld.students.base import in_eval_mode
from purld.types import Candidates, PromptBatch, Rollout


class LikelihoodRanker(Ranker):
    name = "likelihood"

    def __init__(self, anchor_template: str = "Reference: {anchor}\n{prompt}", judge_model: str = "policy") -> None:
        self.anchor_template = anchor_template
        self.judge_model = checked_judge_model(self.name, judge_model)

    def score(self, batch: PromptBatch, candidates: Candidates, context: RankingContext) -> Tensor:
        model, tokenizer = context.model, context.tokenizer
        B, K, T = candidates.completion_ids.shape
        device = candidates.completion_ids.device
        completion_ids = candidates.completion_ids.reshape(B * K, T)
        completion_mask = candidates.completion_mask.reshape(B * K, T)
        # x ⊕ a as one user turn, rendered as the student reads its prompts (its chat template); x itself is the
        # batch's prompt exactly as the rollout read it.
        with_anchor = [render_with_images(context, self.anchor_template.format(prompt=e.prompt, anchor=a), e)
                       for e, a in zip(batch.examples, batch.anchors)]
        prompt_ids, prompt_mask = batch.prompt_ids.to(device), batch.prompt_mask.to(device)
        anchored_ids, anchored_mask, anchored_vision = encode_prompts(
            tokenizer, context.processor, with_anchor, [e.images for e in batch.examples], device
        )
        with in_eval_mode(model):
            conditioned = completion_token_logps(model, anchored_ids, anchored_mask, completion_ids, completion_mask, vision=anchored_vision)
            if isinstance(candidates, Rollout) and candidates.sampling_temperature == 1.0 and context.model_is_sampler:
                # The sampler recorded exactly ℓ_θ(y_k | x) at temperature 1, from these weights: no second pass.
                unconditioned = candidates.sampling_token_logps.reshape(B * K, T)
            else:
                unconditioned = completion_token_logps(
                    model, prompt_ids, prompt_mask, completion_ids, completion_mask, vision=batch.vision_inputs
                )
        sums = [(conditioned * completion_mask).sum(-1), (unconditioned * completion_mask).sum(-1)]
        lengths = completion_mask.sum(-1).clamp(min=1)
        return ((sums[0] - sums[1]) / lengths).reshape(B, K)
