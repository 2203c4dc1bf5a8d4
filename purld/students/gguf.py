"""GGUF checkpoints (llama.cpp's format), converted once into a cached Hugging Face directory.

transformers reads GGUF itself (`from_pretrained(dir, gguf_file=…)`, with the `gguf` package) and dequantizes
every tensor to torch. For SmolLM2-135M-Instruct (`student=smollm2`) that takes 23 s on 2 CPU cores (tokenizer 6 s,
model 17 s) where the converted directory loads in 0.4 s; so the first load writes the dequantized weights and the
tokenizer to `<cache dir>/gguf/<file stem>-<sha256 prefix>/` and every later run, sweep job or rank reads that.
The key is the file's content, so a replaced file is converted anew. The conversion is written to a temporary
directory and renamed under a file lock: concurrent jobs convert once, and an interrupted one leaves nothing half
written.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import torch


def default_cache_dir() -> Path:
    """`$PURLD_CACHE_DIR`, else `$XDG_CACHE_HOME/purld`, else `~/.cache/purld`."""
    if os.environ.get("PURLD_CACHE_DIR"):
        return Path(os.environ["PURLD_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "purld"


def file_digest(path: Path, chunk_bytes: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_gguf_file(model_name_or_path: str | None, gguf_file: str) -> Path:
    """`student.gguf_file` as a path: absolute, or a file name inside `student.model_name_or_path`."""
    path = Path(gguf_file).expanduser()
    if not path.is_absolute() and model_name_or_path:
        path = Path(model_name_or_path).expanduser() / path
    if not path.is_file():
        raise ValueError(f"student.gguf_file={gguf_file!r}: no such file ({path})")
    return path


def converted_directory(gguf_path: Path, cache_dir: str | Path | None = None) -> Path:
    """The Hugging Face directory holding `gguf_path` dequantized (float32 weights, tokenizer, chat template),
    converting it on the first call."""
    from filelock import FileLock

    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    target = root / "gguf" / f"{gguf_path.stem}-{file_digest(gguf_path)[:16]}"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").exists():  # another job converted it while this one waited
            return target
        temporary = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(temporary, ignore_errors=True)
        try:
            convert(gguf_path, temporary)
            os.replace(temporary, target)
        finally:
            shutil.rmtree(temporary, ignore_errors=True)
    return target


def convert(gguf_path: Path, directory: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    try:
        import gguf  # noqa: F401
    except ImportError:
        raise ValueError("student.gguf_file needs the gguf package: pip install gguf") from None
    where, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name)
    # dequantize=True: a model loaded from GGUF otherwise keeps a quantizer that refuses save_pretrained.
    model = AutoModelForCausalLM.from_pretrained(
        where, gguf_file=name, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
