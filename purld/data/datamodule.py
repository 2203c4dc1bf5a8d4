"""(prompt, anchor) batches for every stage.

`prepare_data` (rank 0) asks the teacher for every prompt the anchor cache
lacks; `setup` (every rank) reads the anchors back from the cache. Training batches
come from a seeded `PromptStream`, sharded across ranks and resumable at any step.
The ranking is the module's (`PolicyModule.rank`), on the candidates it just
sampled, every step: there is no precomputed preference file.
"""

from __future__ import annotations

import copy

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from purld.anchors.cache import AnchorCache, FillStats
from purld.data.prompts import encode_prompts, render_conversation, user_turn
from purld.data.sampler import PromptStream
from purld.tasks.base import Task
from purld.teachers.base import Teacher
from purld.types import Example, PromptBatch


class AnchorDataModule(L.LightningDataModule):
    def __init__(
        self,
        task: Task,
        teacher: Teacher,
        anchor_cache: AnchorCache,
        tokenizer: PreTrainedTokenizerBase,
        batch_size: int = 8,
        eval_batch_size: int = 64,
        num_eval_prompts: int | None = None,
        num_train_prompts: int | None = None,
        splits: tuple[str, ...] = ("train", "heldout"),
        use_chat_template: bool = False,
        progress: bool = True,
        seed: int = 0,
        processor=None,
    ) -> None:
        super().__init__()
        self.task, self.teacher, self.anchor_cache = task, teacher, anchor_cache
        self.tokenizer = tokenizer
        self.processor = processor  # a vision-language student's: renders and encodes the prompts with images
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_eval_prompts, self.num_train_prompts = num_eval_prompts, num_train_prompts
        self.splits = tuple(splits)
        self.use_chat_template = use_chat_template
        self.progress, self.seed = progress, seed
        self.fill_stats: FillStats | None = None
        self.prompts_without_anchor = 0
        self.train_items: list[tuple[Example, str]] = []
        self.heldout_items: list[tuple[Example, str]] = []

    def _examples(self, split: str) -> list[Example]:
        if split not in self.splits:
            return []
        examples = self.task.examples(split)
        limit = {"train": self.num_train_prompts, "heldout": self.num_eval_prompts}[split]
        return examples if limit is None else examples[:limit]

    def prepare_data(self) -> None:
        if self.fill_stats is not None:  # a second fit in the same process: already filled
            return
        if rank_zero_only.rank != 0:
            # Ranks launched after rank 0 filled the cache only read it: whatever is still
            # missing (a prompt skipped under on_error=skip) is not asked for again.
            self.fill_stats = FillStats()
            return
        examples = self._examples("train") + self._examples("heldout")
        self.fill_stats = self.anchor_cache.fill(self.teacher, examples, progress=self.progress)

    def setup(self, stage: str | None = None) -> None:
        if self.train_items or self.heldout_items:
            return
        self.train_items = self._with_anchors(self._examples("train"))
        self.heldout_items = self._with_anchors(self._examples("heldout"))

    def _with_anchors(self, examples: list[Example]) -> list[tuple[Example, str]]:
        """(example, anchor) pairs; under teacher.on_error=skip, prompts without an anchor are left out and counted."""
        skip = self.teacher.on_error == "skip"
        anchors = self.anchor_cache.anchors(self.teacher, examples, skip_missing=skip)
        kept = [(example, anchor) for example, anchor in zip(examples, anchors) if anchor is not None]
        self.prompts_without_anchor += len(examples) - len(kept)
        return kept

    def with_batch_size(self, batch_size: int) -> AnchorDataModule:
        """The same prompts and anchors, batched differently (the warm start uses larger batches)."""
        other = copy.copy(self)
        other.batch_size = batch_size
        return other

    def prompt_text(self, example: Example) -> str:
        """What the student reads: the prompt, or its conversation through the tokenizer's chat template (the
        processor's, with a placeholder per image, for a prompt with images: `purld.data.prompts`)."""
        if not self.use_chat_template and not example.images:
            return example.prompt
        messages = list(example.messages or []) if self.use_chat_template else []
        messages = messages or [{"role": "user", "content": example.prompt}]
        return render_conversation(self.tokenizer, self.processor, self.use_chat_template, messages, len(example.images))

    def render_message(self, content: str, images: tuple = ()) -> str:
        """One user turn as the student reads it (the rankers' judge and anchor texts): as `prompt_text` renders,
        with placeholders for `images` (the prompt's, which the self-rankers show again)."""
        if not self.use_chat_template and not images:
            return content
        return render_conversation(self.tokenizer, self.processor, self.use_chat_template, [user_turn(content, 0)], len(images))

    def collate(self, items: list[tuple[Example, str]]) -> PromptBatch:
        examples = [example for example, _ in items]
        anchors = [anchor for _, anchor in items]
        prompt_ids, prompt_mask, vision = encode_prompts(
            self.tokenizer, self.processor, [self.prompt_text(example) for example in examples], [e.images for e in examples]
        )
        eos = self.tokenizer.eos_token
        answers = self.tokenizer(
            [anchor + eos for anchor in anchors],
            padding=True,
            padding_side="right",
            add_special_tokens=False,
            return_tensors="pt",
        )
        return PromptBatch(
            examples=examples,
            anchors=anchors,
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            anchor_ids=answers["input_ids"],
            anchor_mask=answers["attention_mask"].bool(),
            vision_inputs=vision,
        )

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        batches = PromptStream(
            len(self.train_items),
            self.batch_size,
            seed=self.seed,
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
            # Resuming: the trainer's step is restored before iteration starts, so the stream picks up there.
            position=(lambda: trainer.global_step * trainer.accumulate_grad_batches) if trainer else (lambda: 0),
        )
        # Its own generator: a DataLoader draws a base seed each pass, which must not move the global
        # RNG that sampling uses (a resumed run starts a pass where the uninterrupted one did not).
        return DataLoader(self.train_items, batch_sampler=batches, collate_fn=self.collate, generator=torch.Generator())

    def val_dataloader(self) -> DataLoader:
        """This rank's share of the held-out prompts: under DDP the ranks evaluate the set once between them, and
        `PolicyModule` pools their sums."""
        trainer = self.trainer
        return self.heldout_dataloader(*((trainer.global_rank, trainer.world_size) if trainer else (0, 1)))

    def heldout_dataloader(self, rank: int = 0, world_size: int = 1) -> DataLoader:
        """The held-out prompts, or rank `rank`'s share of them (every `world_size`-th one)."""
        items = self.heldout_items[rank::world_size]
        return DataLoader(items, batch_size=self.eval_batch_size, shuffle=False, collate_fn=self.collate)

    def transfer_batch_to_device(self, batch: PromptBatch, device: torch.device, dataloader_idx: int) -> PromptBatch:
        return batch.to(device)
