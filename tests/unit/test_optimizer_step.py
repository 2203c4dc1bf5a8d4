"""`PolicyModule.optimizer_step` frees the gradients after the step, so that they do not sit through the next step's
rollout and forward; gradient accumulation still sums every batch of its window."""

from __future__ import annotations

import copy

import lightning as L
import torch

from purld.modules.base import PolicyModule
from purld.objectives.sft import SFTObjective
from purld.students.tiny import TinyLlamaStudent

VOCAB_IDS = torch.randint(5, 60, (4, 2, 6), generator=torch.Generator().manual_seed(0))  # 4 batches of 2 sequences


def next_token_loss(model, input_ids):
    return model(input_ids=input_ids, labels=input_ids).loss


class NextTokenModule(PolicyModule):
    """PolicyModule with the plainest training step, recording what the gradients hold around each step."""

    def __init__(self, model, tokenizer):
        super().__init__(model, tokenizer, SFTObjective(), optimizer=lambda params: torch.optim.SGD(params, lr=0.0))
        self.gradients_at_batch_start: list[bool] = []
        self.gradients_at_step: list[list[torch.Tensor]] = []

    def training_step(self, input_ids, batch_idx):
        return next_token_loss(self.policy, input_ids)

    def on_train_batch_start(self, batch, batch_idx):
        self.gradients_at_batch_start.append(any(p.grad is not None for p in self.policy.parameters()))

    def on_before_optimizer_step(self, optimizer):
        self.gradients_at_step.append([p.grad.clone() for p in self.policy.parameters()])


def fit(accumulate_grad_batches: int) -> tuple[NextTokenModule, torch.nn.Module]:
    model, tokenizer = TinyLlamaStudent(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).load()
    untrained = copy.deepcopy(model)
    module = NextTokenModule(model, tokenizer)
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=1, accumulate_grad_batches=accumulate_grad_batches, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(VOCAB_IDS, batch_size=None))
    return module, untrained


def test_gradients_are_freed_after_each_step():
    module, _ = fit(accumulate_grad_batches=1)
    assert module.gradients_at_batch_start == [False] * len(VOCAB_IDS)
    assert len(module.gradients_at_step) == len(VOCAB_IDS)
    assert all(p.grad is None for p in module.policy.parameters())


def test_accumulated_gradients_are_kept_until_the_step():
    module, untrained = fit(accumulate_grad_batches=2)
    assert module.gradients_at_batch_start == [False, True, False, True]  # kept within a window, freed after its step
    assert len(module.gradients_at_step) == 2
    for window, gradients in enumerate(module.gradients_at_step):  # lr 0: every batch sees the untrained weights
        untrained.zero_grad()
        for input_ids in VOCAB_IDS[2 * window : 2 * window + 2]:
            (next_token_loss(untrained, input_ids) / 2).backward()  # Lightning scales each loss by 1 / accumulation
        for got, expected in zip(gradients, (p.grad for p in untrained.parameters())):
            torch.testing.assert_close(got, expected)
