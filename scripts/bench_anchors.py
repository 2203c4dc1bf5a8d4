"""Anchor fetching throughput: purld-anchors' fill vs a bare asyncio loop of litellm.acompletion.

    python scripts/bench_anchors.py [--prompts 1000] [--concurrency 32] [--repeats 3] [--out outputs/bench/anchors.json]

Both sides call the same loopback OpenAI-compatible server (its own process,
so it does not share the client's GIL) at the same concurrency. purld's side is
the real thing: LiteLLMTeacher + AnchorCache.fill into a fresh SQLite file (one
committed row per answer). Rounds alternate which side goes first; the ratio is
taken per round and its median reported, with the CPU time other processes
used during the run (from /proc/stat). Target (issue 3): ratio ≥ 0.8.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("OPENAI_API_KEY", "sk-bench")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quickstart import machine_busy_seconds  # noqa: E402


def serve(port_queue: multiprocessing.Queue) -> None:
    from purld.testing.openai_server import FakeOpenAIServer

    with FakeOpenAIServer() as server:
        port_queue.put(server.api_base)
        server.thread.join()


async def bare_loop(api_base: str, prompts: list[str], concurrency: int) -> None:
    import litellm

    limit = asyncio.Semaphore(concurrency)

    async def one(prompt: str) -> None:
        async with limit:
            await litellm.acompletion(
                model="openai/bench", messages=[{"role": "user", "content": prompt}], api_base=api_base,
                temperature=0.0, max_tokens=512, num_retries=0, max_retries=0, timeout=60,
            )

    await asyncio.gather(*(one(p) for p in prompts))


def purld_fill(api_base: str, prompts: list[str], concurrency: int) -> None:
    from purld.anchors import AnchorCache
    from purld.teachers import LiteLLMTeacher
    from purld.types import Example

    teacher = LiteLLMTeacher(model="openai/bench", api_base=api_base, max_concurrency=concurrency)
    with tempfile.TemporaryDirectory() as directory:
        stats = AnchorCache(Path(directory) / "anchors.sqlite").fill(
            teacher, [Example(f"p{i}", p) for i, p in enumerate(prompts)], progress=False
        )
    assert stats.teacher_calls == len(prompts), stats


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/anchors.json"))
    args = parser.parse_args()

    from purld.teachers.litellm import import_litellm

    import_litellm()
    ports: multiprocessing.Queue = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(ports,), daemon=True)
    server.start()
    api_base = ports.get(timeout=30)
    rounds = []
    try:
        asyncio.run(bare_loop(api_base, [f"warm-up {i}" for i in range(64)], args.concurrency))
        for repeat in range(args.repeats):
            prompts = [f"round {repeat} prompt {i}" for i in range(args.prompts)]  # fresh prompts: no cache hits
            sides = {
                "bare": lambda: asyncio.run(bare_loop(api_base, [p + " bare" for p in prompts], args.concurrency)),
                "purld": lambda: purld_fill(api_base, [p + " purld" for p in prompts], args.concurrency),
            }
            order = ["bare", "purld"] if repeat % 2 == 0 else ["purld", "bare"]
            busy_before, wall_before = machine_busy_seconds(), time.perf_counter()
            seconds = {side: timed(sides[side]) for side in order}
            wall = time.perf_counter() - wall_before
            round_result = {
                "bare_calls_per_s": round(args.prompts / seconds["bare"], 1),
                "purld_calls_per_s": round(args.prompts / seconds["purld"], 1),
                "ratio": round(seconds["bare"] / seconds["purld"], 3),
                "machine_busy_cores": round((machine_busy_seconds() - busy_before) / wall, 2),
            }
            print(json.dumps(round_result), flush=True)
            rounds.append(round_result)
    finally:
        server.terminate()
    report = {
        "command": f"python scripts/bench_anchors.py --prompts {args.prompts} --concurrency {args.concurrency} --repeats {args.repeats}",
        "cores": os.cpu_count(),
        "median_bare_calls_per_s": statistics.median(r["bare_calls_per_s"] for r in rounds),
        "median_purld_calls_per_s": statistics.median(r["purld_calls_per_s"] for r in rounds),
        "median_ratio": statistics.median(r["ratio"] for r in rounds),
        "rounds": rounds,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"purld / bare = {report['median_ratio']} (median of {len(rounds)}) → {args.out}")


if __name__ == "__main__":
    main()
