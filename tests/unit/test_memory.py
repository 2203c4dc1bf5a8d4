"""`release_freed_memory` phase by phase: glibc's heap serves the decoding phases, and is trimmed after them."""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import sys

import pytest

from purld import memory

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")

BLOCK = 8 * 1024 * 1024  # a KV-cache-sized block: over the 128 kB mmap threshold, under glibc's 32 MB ceiling


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def mallinfo() -> MallInfo2:
    libc = memory._libc()
    libc.mallinfo2.restype = MallInfo2
    return libc.mallinfo2()


def malloc(size: int) -> int:
    """A block of `size` bytes, written to (so its pages are resident, as a tensor's are)."""
    memory._libc().malloc.restype = ctypes.c_void_p
    pointer = memory._libc().malloc(ctypes.c_size_t(size))
    ctypes.memset(pointer, 1, size)
    return pointer


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def free(pointer: int) -> None:
    memory._libc().free(ctypes.c_void_p(pointer))


def in_a_fresh_process(scenario) -> None:
    """Run `scenario` in a new interpreter, as `purld-train` sets the memory setting: at start, before its heap
    holds the free chunks of earlier tests (a free chunk of a block's size serves it whatever the thresholds)."""
    purld_root = os.path.dirname(os.path.dirname(memory.__file__))  # this checkout's purld, installed or not
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [purld_root, os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, __file__, scenario.__name__], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr


def released_memory_maps_large_blocks_on_their_own() -> None:
    assert memory.release_freed_memory(True)
    mapped = mallinfo().hblkhd
    block = malloc(BLOCK)
    assert mallinfo().hblkhd - mapped >= BLOCK
    free(block)


def decoding_takes_large_blocks_from_the_heap_and_trims_it_after() -> None:
    assert memory.release_freed_memory(True)
    with memory.heap_while_decoding():
        mapped = mallinfo().hblkhd
        blocks = [malloc(BLOCK) for _ in range(4)]
        assert mallinfo().hblkhd - mapped < BLOCK  # from the heap, not mapped
        for block in blocks:
            free(block)
        kept = resident_bytes()  # freed, kept by the heap for the next token's blocks
    assert kept - resident_bytes() >= 3 * BLOCK  # given back to the OS on leaving (malloc_trim)
    mapped = mallinfo().hblkhd
    block = malloc(BLOCK)
    assert mallinfo().hblkhd - mapped >= BLOCK  # mapped on its own again, for the update
    free(block)


def test_released_memory_maps_large_blocks_on_their_own():
    in_a_fresh_process(released_memory_maps_large_blocks_on_their_own)


def test_decoding_takes_large_blocks_from_the_heap_and_trims_it_after():
    in_a_fresh_process(decoding_takes_large_blocks_from_the_heap_and_trims_it_after)


def test_decoding_changes_nothing_when_freed_memory_is_kept(monkeypatch):
    memory.release_freed_memory(False)
    calls = []
    monkeypatch.setattr(memory, "glibc_mallopt", lambda *call: calls.append(call))
    with memory.heap_while_decoding():
        pass
    assert calls == []


if __name__ == "__main__":  # in_a_fresh_process
    globals()[sys.argv[1]]()
