"""`ranker=self_judge`: the student judges each candidate against the anchor.

The judge prompt (`template`, holding the prompt, the anchor as the reference
and one candidate) is read by the student itself, and the score is
`log p(yes_token) − log p(no_token)` from its next-token logits. The text before
the candidate is read once per prompt (its KV cache shared by the K candidates),
and the instruction that starts it once per batch; each candidate enters as the
tokens the student generated. Meaningful for instruction-tuned
students; a tiny student trained from scratch judges near randomly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from purld.data.prompts import encode_prompts
from purld.ranking.base import Ranker, RankingContext, checked_judge_model, render_with_images
from purld.rollout.logprobs import forward_after_shared_prefix
from purld.rollout.sampler import stop_token_ids
from purld.students.base import in_eval_mode
from purld.types import Candidates, PromptBatch, stack_vision_inputs

# The instruction comes first, then the task and anchor, read once per prompt for its K candidates; each of the K
# candidates costs its own tokens and the closing question. The task is quoted as the student saw it, under a
# heading of its own, so that a task whose prompt carries its own labels ("Question: …\nAnswer:") is not
# labelled twice.
DEFAULT_TEMPLATE = (
    "You are grading an answer against a reference answer.\n\n"
    "[Task]\n{prompt}\n\n[Reference answer]\n{anchor}\n\n[Candidate answer]\n{candidate}\n\n"
    "Does the candidate answer reach the same final result as the reference answer? Reply Yes or No.\nReply: "
)
CANDIDATE_SLOT = "\x00candidate\x00"  # where the candidate's own tokens go, cut out of the rendered judge text


class SelfJudgeRanker(Ranker):
    name = "self_judge"

    def __init__(
        self, template: str = DEFAULT_TEMPLATE, yes_token: str = "Yes", no_token: str = "No", judge_model: str = "policy"
    ) -> None:
        self.template, self.yes_token, self.no_token = template, yes_token, no_token
        self.judge_model = checked_judge_model(self.name, judge_model)

    def _first_token_id(self, tokenizer, text: str) -> int:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"ranker.self_judge: {text!r} encodes to no token")
        return ids[0]

    def score(self, batch: PromptBatch, candidates: Candidates, context: RankingContext) -> Tensor:
        model, tokenizer = context.model, context.tokenizer
        B, K = candidates.completion_ids.shape[:2]
        device = candidates.completion_ids.device
        # The judge question is one user turn, rendered as the student reads its prompts (its chat template, then
        # the assistant's cue, where the reply's first token is read); the candidate's place is cut out of it.
        # A prompt's images are shown again before the judge question, read with the prefix.
        judge_texts = [render_with_images(context, self.template.format(prompt=e.prompt, anchor=a, candidate=CANDIDATE_SLOT), e)
                       for e, a in zip(batch.examples, batch.anchors)]
        prefixes, suffix_texts = zip(*(text.split(CANDIDATE_SLOT, 1) for text in judge_texts))
        # The part before the candidate is the same for a prompt's K candidates: read once, KV cache shared.
        prefix_ids, prefix_mask, vision = encode_prompts(tokenizer, context.processor, prefixes, [e.images for e in batch.examples], device)
        # Each candidate as the tokens the student generated (EOS dropped), then the question, left-padded.
        suffixes = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in suffix_texts]
        ids = candidates.completion_ids.reshape(B * K, -1)
        stop_ids = torch.tensor(stop_token_ids(model, tokenizer), device=ids.device)
        keep = candidates.completion_mask.reshape(B * K, -1) & ~torch.isin(ids, stop_ids)
        rows = [ids[i][keep[i]].tolist() + suffixes[i // K] for i in range(B * K)]
        width = max(len(row) for row in rows)
        continuation = torch.full((B * K, width), tokenizer.pad_token_id, dtype=torch.long)
        continuation_mask = torch.zeros((B * K, width), dtype=torch.bool)
        for i, row in enumerate(rows):
            continuation[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            continuation_mask[i, width - len(row) :] = True
        with in_eval_mode(model):
            _, logits = forward_after_shared_prefix(
                model, prefix_ids, prefix_mask, continuation.to(device), continuation_mask.to(device), logits_to_keep=1,
                prefix_inputs=stack_vision_inputs(vision),
            )
        logps = torch.log_softmax(logits[:, -1].float(), dim=-1)  # (B·K, V)
        yes, no = self._first_token_id(tokenizer, self.yes_token), self._first_token_id(tokenizer, self.no_token)
        return (logps[:, yes] - logps[:, no]).reshape(B, K)
