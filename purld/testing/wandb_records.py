"""Read an offline W&B run back from its `run-<id>.wandb` file (what `wandb sync` would upload).

The file is a LevelDB-style log: a 7-byte header (":W&B", magic 0xBEE1, version),
then 32 KiB blocks of chunks, each with a 7-byte header (CRC-32, length, type:
1 full, 2 first, 3 middle, 4 last); a record's chunks joined are one
`wandb_internal_pb2.Record`. wandb ≥ 0.18 no longer ships a Python reader, so tests use this one.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str | Path) -> Iterator[Any]:
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B run file")
    position, pending = HEADER, b""
    while position + HEADER <= len(data):
        left_in_block = BLOCK - position % BLOCK
        if left_in_block < HEADER:  # the block's tail is padding
            position += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + HEADER])
        chunk = data[position + HEADER : position + HEADER + length]
        position += HEADER + length
        if kind == 0 and length == 0:  # zero padding after the last record
            break
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def read_run(path: str | Path) -> dict[str, Any]:
    """{'config': {key: value}, 'history': [{key: value}, …], 'summary': {key: value}} from a .wandb file."""
    run: dict[str, Any] = {"config": {}, "history": [], "summary": {}}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "config":
            for item in record.config.update:
                run["config"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "history":
            run["history"].append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                run["summary"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return run
