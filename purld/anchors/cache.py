"""SQLite anchor cache, one row per (teacher identity, rendered prompt).

The key is a SHA-256 of the teacher's identity (model id, generation
parameters), the rendered messages and anything else the teacher declares in
`cache_material`. Rows are committed one by one as answers arrive, so a run
killed mid-way keeps every answer already received. WAL mode lets many readers
(ranks, sweep jobs) work beside one writer; `fill` holds a file lock
(`<cache>.lock`), so jobs started together ask the teacher for each prompt once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock
from tqdm.auto import tqdm

from purld.teachers.base import AnchorAnswer, Teacher, TeacherFailure
from purld.types import Example

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS anchors (
    key TEXT PRIMARY KEY,
    teacher TEXT NOT NULL,
    prompt_id TEXT NOT NULL,
    prompt TEXT NOT NULL,
    answer TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0.0,
    created_at REAL NOT NULL
)
"""


class MissingAnchorError(LookupError):
    pass


@dataclass
class FillStats:
    teacher_calls: int = 0  # successful calls: answers received and stored
    reference_answers: int = 0  # anchors stored from the task's references (teacher=reference): no call made
    cache_hits: int = 0
    skipped: int = 0  # prompts the teacher failed on under on_error=skip (left out, not stored)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return dict(vars(self))


def cache_key(teacher: Teacher, example: Example) -> str:
    material = json.dumps(teacher.cache_material(example), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(material.encode()).hexdigest()


class AnchorCache:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser().resolve()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connection: sqlite3.Connection | None = None

    @property
    def connection(self) -> sqlite3.Connection:
        # Opened lazily so the object pickles across process boundaries (DDP spawn, joblib).
        if self._connection is None:
            connection = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(_SCHEMA)
            self._connection = connection
        return self._connection

    def __getstate__(self) -> dict:
        return {"path": self.path, "_connection": None}

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __len__(self) -> int:
        return self.connection.execute("SELECT COUNT(*) FROM anchors").fetchone()[0]

    def lookup(self, keys: Iterable[str]) -> dict[str, str]:
        """Answers for those keys that are cached."""
        keys = list(keys)
        found: dict[str, str] = {}
        for start in range(0, len(keys), 500):  # SQLite caps the number of bound parameters
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.connection.execute(f"SELECT key, answer FROM anchors WHERE key IN ({marks})", chunk)
            found.update(rows.fetchall())
        return found

    def put(self, key: str, teacher: Teacher, example: Example, answer: AnchorAnswer) -> None:
        self.connection.execute(
            "INSERT OR IGNORE INTO anchors VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                json.dumps(teacher.identity(), sort_keys=True),
                example.prompt_id,
                example.prompt,
                answer.text,
                answer.prompt_tokens,
                answer.completion_tokens,
                answer.cost_usd,
                time.time(),
            ),
        )

    def fill(self, teacher: Teacher, examples: Sequence[Example], progress: bool = True) -> FillStats:
        """Ask the teacher for every example not cached yet, storing each answer as it arrives."""
        # One filler at a time per cache file: parallel sweep jobs wait here, then find their
        # prompts cached instead of paying for the same answers twice.
        with FileLock(f"{self.path}.lock"):
            return self._fill(teacher, examples, progress)

    def _fill(self, teacher: Teacher, examples: Sequence[Example], progress: bool) -> FillStats:
        keys = {example.prompt_id: cache_key(teacher, example) for example in examples}
        cached = self.lookup(keys.values())
        missing = list({keys[e.prompt_id]: e for e in examples if keys[e.prompt_id] not in cached}.values())
        stats = FillStats(cache_hits=len(examples) - len(missing))
        if not missing:
            return stats
        bar = tqdm(total=len(missing), desc=f"anchors ({teacher.name})", disable=not progress or None, leave=False)
        with bar:
            for example, answer in teacher.answer(missing):
                bar.update()
                if isinstance(answer, TeacherFailure):
                    stats.skipped += 1
                    logger.warning("anchor skipped (teacher.on_error=skip): %s", answer.error)
                    continue
                self.put(keys[example.prompt_id], teacher, example, answer)
                if not teacher.calls_a_model:
                    stats.reference_answers += 1
                    continue
                stats.teacher_calls += 1
                stats.prompt_tokens += answer.prompt_tokens
                stats.completion_tokens += answer.completion_tokens
                stats.cost_usd += answer.cost_usd
                bar.set_postfix(
                    calls=stats.teacher_calls,
                    tokens=stats.prompt_tokens + stats.completion_tokens,
                    cost=f"${stats.cost_usd:.4f}",
                    refresh=False,
                )
        return stats

    def anchors(self, teacher: Teacher, examples: Sequence[Example], skip_missing: bool = False) -> list[str | None]:
        """The cached anchor of every example, in order.

        A missing anchor raises naming the prompt, or is None with `skip_missing`.
        """
        keys = [cache_key(teacher, example) for example in examples]
        found = self.lookup(keys)
        for example, key in zip(examples, keys):
            if key not in found and not skip_missing:
                raise MissingAnchorError(
                    f"no anchor for prompt {example.prompt_id!r} from teacher {teacher.name!r} in {self.path}; "
                    "run purld-anchors (or purld-train, which fills the cache first)"
                )
        return [found.get(key) for key in keys]
