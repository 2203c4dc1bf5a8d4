"""Which prompts each step trains on: a seeded stream, sharded across ranks, resumable at any step.

The stream is an endless sequence of permutations of the training prompts
(permutation e is drawn from (seed, e)). Global step s uses the stream's items
[s·B·W, (s+1)·B·W) for batch size B per rank and W ranks; rank r takes every
W-th of them. So the data of a step depends only on (seed, step, W): a run
resumed at step s reads exactly the batches it would have read had it never
stopped, and no two ranks ever see the same item of a step.

Lightning's own `DistributedSampler` replacement is switched off
(`use_distributed_sampler=False`) because this sampler already shards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Sampler


class PromptStream(Sampler[list[int]]):
    """Batches of dataset indices for one rank; `len()` is one pass over the prompts (an "epoch").

    `position()` returns the trainer's global step (batches consumed so far); each pass
    starts there.
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        position: Callable[[], int] = lambda: 0,
    ) -> None:
        if num_items < batch_size * world_size:
            raise ValueError(
                f"{num_items} training prompts cannot fill one step of {batch_size} prompts × {world_size} ranks: "
                "lower data.batch_size (or warmstart.batch_size) or add prompts"
            )
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.position = position  # how many batches the trainer has consumed (its global step)
        self._last_permutation: tuple[int, list[int]] = (-1, [])

    def __len__(self) -> int:
        return self.num_items // (self.batch_size * self.world_size)

    def _permutation(self, number: int) -> list[int]:
        if self._last_permutation[0] != number:  # drawn once per pass, not once per step
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + number)
            self._last_permutation = (number, torch.randperm(self.num_items, generator=generator).tolist())
        return self._last_permutation[1]

    def batch_at(self, step: int) -> list[int]:
        """This rank's indices for global step `step`."""
        per_step = self.batch_size * self.world_size
        first = step * per_step + self.rank
        positions = range(first, first + per_step, self.world_size)
        return [self._permutation(position // self.num_items)[position % self.num_items] for position in positions]

    def __iter__(self) -> Iterator[list[int]]:
        """From the trainer's position to the end of the current pass.

        Asking the trainer (not counting what was yielded) keeps a resumed run, which starts
        mid-pass, on the same batches as an uninterrupted one, whatever the loader prefetched.
        """
        start = self.position()
        end = (start // len(self) + 1) * len(self)
        for step in range(start, end):
            yield self.batch_at(step)
