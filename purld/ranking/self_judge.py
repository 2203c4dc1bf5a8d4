"""`ranker=self_judge`: the student judges each candidate against the anchor.

The judge prompt (`template`, holding the prompt, the anchor as the reference
and one candidate) is read by the student itself, and the score is
`log p(yes_token) − log p(no_token)` from its next-token logits. One batched
forward pass over the B·K judge prompts. Meaningful for instruction-tuned
students; a tiny student trained from scratch judges near randomly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from purld.ranking.base import Ranker, RankingContext
from purld.ranking.likelihood import tokenize_left_padded
from purld.types import Candidates, PromptBatch

DEFAULT_TEMPLATE = "Question: {prompt}\nReference answer: {anchor}\nCandidate answer: {candidate}\nIs the candidate correct? "


class SelfJudgeRanker(Ranker):
    name = "self_judge"

    def __init__(self, template: str = DEFAULT_TEMPLATE, yes_token: str = "Yes", no_token: str = "No") -> None:
        self.template, self.yes_token, self.no_token = template, yes_token, no_token

    def _first_token_id(self, tokenizer, text: str) -> int:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"ranker.self_judge: {text!r} encodes to no token")
        return ids[0]

    def score(self, batch: PromptBatch, candidates: Candidates, context: RankingContext) -> Tensor:
        model, tokenizer = context.model, context.tokenizer
        B, K = candidates.completion_ids.shape[:2]
        judge_prompts = [
            self.template.format(prompt=example.prompt, anchor=anchor, candidate=text)
            for example, anchor, row in zip(batch.examples, batch.anchors, candidates.texts)
            for text in row
        ]
        input_ids, attention_mask = tokenize_left_padded(tokenizer, judge_prompts, candidates.completion_ids.device)
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        was_training = model.training
        model.eval()
        try:
            logits = model(
                input_ids=input_ids,
                attention_mask=attention_mask.long(),
                position_ids=position_ids,
                use_cache=False,
                logits_to_keep=1,
            ).logits[:, -1].float()  # (B·K, V)
        finally:
            model.train(was_training)
        logps = torch.log_softmax(logits, dim=-1)
        yes, no = self._first_token_id(tokenizer, self.yes_token), self._first_token_id(tokenizer, self.no_token)
        return (logps[:, yes] - logps[:, no]).reshape(B, K)
