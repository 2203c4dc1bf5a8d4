"""SFT on the anchors: the warm start, and the continued-distillation baseline (`loss=sft`)."""

from __future__ import annotations

from torch import Tensor

from purld.modules.base import PolicyModule
from purld.types import PromptBatch


class SFTModule(PolicyModule):
    def training_step(self, batch: PromptBatch, batch_idx: int) -> Tensor:
        inputs = (batch.prompt_ids, batch.prompt_mask, batch.anchor_ids, batch.anchor_mask)
        with self.timed("update"):
            out = self.micro_batched(lambda token_logps: self.objective(token_logps, batch.anchor_mask), inputs,
                                    vision=batch.vision_inputs)
        self.log_metrics(out.prefixed("train/"), batch_size=len(batch))
        return out.loss
