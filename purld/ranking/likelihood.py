"""`ranker=likelihood`: pointwise mutual information of a candidate with the anchor, under the student.

    s_k = (ℓ_θ(y_k | x ⊕ a) − ℓ_θ(y_k | x)) / |y_k|

`x ⊕ a` is `anchor_template` rendered with the prompt and anchor (the anchor
placed in context as a reference). Two batched forward passes over all B·K
candidates; nats per completion token.
"""

from __future__ import annotations

from torch import Tensor

from purld.ranking.base import Ranker, RankingContext
from purld.rollout.logprobs import completion_token_logps
from purld.types import Candidates, PromptBatch


def tokenize_left_padded(tokenizer, texts: list[str], device) -> tuple[Tensor, Tensor]:
    encoded = tokenizer(texts, padding=True, padding_side="left", add_special_tokens=False, return_tensors="pt")
    return encoded["input_ids"].to(device), encoded["attention_mask"].bool().to(device)


class LikelihoodRanker(Ranker):
    name = "likelihood"

    def __init__(self, anchor_template: str = "Reference: {anchor}\n{prompt}") -> None:
        self.anchor_template = anchor_template

    def score(self, batch: PromptBatch, candidates: Candidates, context: RankingContext) -> Tensor:
        model, tokenizer = context.model, context.tokenizer
        B, K, T = candidates.completion_ids.shape
        device = candidates.completion_ids.device
        completion_ids = candidates.completion_ids.reshape(B * K, T)
        completion_mask = candidates.completion_mask.reshape(B * K, T)
        with_anchor = [self.anchor_template.format(prompt=p, anchor=a) for p, a in zip(batch.prompts, batch.anchors)]
        prompt_ids, prompt_mask = tokenize_left_padded(tokenizer, batch.prompts, device)
        anchored_ids, anchored_mask = tokenize_left_padded(tokenizer, with_anchor, device)
        was_training = model.training
        model.eval()
        try:
            sums = []
            for ids, mask in ((anchored_ids, anchored_mask), (prompt_ids, prompt_mask)):
                token_logps = completion_token_logps(
                    model, ids.repeat_interleave(K, 0), mask.repeat_interleave(K, 0), completion_ids, completion_mask
                )
                sums.append((token_logps * completion_mask).sum(-1))
        finally:
            model.train(was_training)
        lengths = completion_mask.sum(-1).clamp(min=1)
        return ((sums[0] - sums[1]) / lengths).reshape(B, K)
