"""How this process's malloc hands freed memory back to the OS (`release_freed_memory`), phase by phase.

A step's update (forward + backward) allocates and frees activation-sized tensors layer after layer; glibc's
default keeps the freed space in its heap, so the process's peak RSS holds every layer's transients long after
they are freed. `release_freed_memory` sets the trim threshold to 0, and the PU-RLD updates run with the mmap
threshold at 128 kB: every larger block is then mapped and unmapped on its own. That pays in the update and
costs in decoding, where the KV cache and the logits are re-allocated at every token and each fresh mapping
faults its pages in again (SmolLM2-135M, 8 prompts x K 8 on 2 cores: the rollout 1.38x, `self_judge` 1.47x
slower). So the phases that only decode or read (rollout, ranking) run under `heap_while_decoding`: large
blocks come from the heap, as by glibc's default, and what they freed is trimmed back to the OS when the phase
ends, before the update (at 8 x K 8: the step 0.875 of releasing in every phase, for 1.02x its peak RSS;
scripts/README.md, "Speed mechanisms"). Off glibc (macOS, musl) nothing is set.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
MMAP_THRESHOLD_START = 128 * 1024  # glibc's mmap threshold before any large block was freed
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # the most glibc's own adjustment raises it to (64-bit)

_releasing = False  # whether `release_freed_memory(True)` took effect in this process


@cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None  # glibc's, not musl's or macOS's


def glibc_mallopt(parameter: int, value: int) -> bool:
    """glibc's `mallopt(parameter, value)`; whether it was accepted (False off glibc)."""
    libc = _libc()
    return libc is not None and libc.mallopt(parameter, value) == 1


def release_freed_memory(enabled: bool) -> bool:
    """`release_freed_memory`: glibc's malloc gives memory back to the OS as soon as it is freed
    (`mallopt(M_TRIM_THRESHOLD, 0)`, what `MALLOC_TRIM_THRESHOLD_=0` sets at start-up). Returns whether it was set.

    The mmap threshold is left where glibc has moved it, which also stops moving it: after `purld-train`'s imports
    it is 1-4 MB (each large block they freed raised it to its size), so the warm start maps only blocks above
    that; the first `heap_while_decoding` sets 128 kB for the PU-RLD updates. Setting 128 kB here as well made the
    warm start 1.5x slower for 0.90x its peak RSS on SmolLM2-135M, below the PU-RLD stage's peak (scripts/README.md,
    "Speed mechanisms")."""
    global _releasing
    _releasing = enabled and glibc_mallopt(M_TRIM_THRESHOLD, 0)
    return _releasing


@contextmanager
def heap_while_decoding() -> Iterator[None]:
    """Under `release_freed_memory`: blocks up to 32 MB come from the heap inside the block, which keeps what
    they free (glibc's default behaviour); on leaving it, the heap's free memory goes back to the OS
    (`malloc_trim(0)`) and blocks over 128 kB are mapped on their own again. Without it: nothing changes."""
    if not _releasing:
        yield
        return
    glibc_mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
    glibc_mallopt(M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD_MAX)  # glibc's own ratio of the two
    try:
        yield
    finally:
        glibc_mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_START)
        glibc_mallopt(M_TRIM_THRESHOLD, 0)
        _libc().malloc_trim(0)
