"""A test callback for multi-process runs: what each rank trained on and the weights it ended with.

`purld-train trainer=ddp +callbacks.rank_record._target_=purld.testing.rank_record.RankRecord
+callbacks.rank_record.directory=<dir>` writes `<dir>/rank<r>.json` at the end of each stage: the stage's prompt ids
in the order this rank trained on them, the anchors this rank asked the teacher for, and a SHA-256 of its trainable
weights, so that a test can check the sharding and the gradient synchronisation from outside the process.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lightning as L


def weights_digest(model) -> str:
    """SHA-256 of the trainable parameters."""
    digest = hashlib.sha256()
    for name, parameter in sorted(model.named_parameters()):
        if parameter.requires_grad:
            digest.update(name.encode())
            digest.update(parameter.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


class RankRecord(L.Callback):
    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)
        self.prompt_ids: list[str] = []

    def on_train_batch_start(self, trainer: L.Trainer, module, batch, batch_idx: int) -> None:
        self.prompt_ids.extend(example.prompt_id for example in batch.examples)

    def on_fit_end(self, trainer: L.Trainer, module) -> None:
        stage = "warmstart" if module.metric_prefix == "warmstart/" else "purld"
        path = self.directory / f"rank{trainer.global_rank}.json"
        record = json.loads(path.read_text()) if path.exists() else {}
        record.update({
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "reference_answers": trainer.datamodule.fill_stats.reference_answers,
            f"{stage}_prompt_ids": self.prompt_ids,
            f"{stage}_weights_sha256": weights_digest(module.policy),
        })
        self.directory.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2))
