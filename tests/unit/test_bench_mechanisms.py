"""scripts/bench_mechanisms.py's summary: medians over steps (warm-up left out) and rounds, ratios to the baseline."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from bench_mechanisms import VARIANTS, render, summarise  # noqa: E402


def run(step: float, rss: float, load: float = 0.0) -> dict:
    times = {f"time/{part}": [99.0, step / 4, step / 4] for part in ("rollout", "ranking", "update")}
    times["time/step"] = [99.0, step, step * 1.1]  # the first step is warm-up
    return {"times": times, "peak_rss_mb": rss, "outside_load_cores": load}


def test_each_variant_is_read_against_its_own_baseline():
    table = summarise({
        "default": [run(10.0, 1000.0), run(12.0, 1000.0)],
        "micro_batch": [run(13.0, 800.0), run(13.0, 820.0, load=0.3)],
        "checkpointed": [run(8.0, 700.0), run(8.0, 700.0)],
        "checkpointed_prompts_repeated": [run(9.0, 900.0), run(9.0, 900.0)],
    })
    assert table["default"]["step_s"] == pytest.approx(11.55)  # median over rounds of (10.5, 12.6)
    assert "step_ratio" not in table["default"]
    assert table["micro_batch"]["against"] == "default" and table["micro_batch"]["rss_ratio"] == pytest.approx(0.81)
    assert table["micro_batch"]["outside_load_cores"] == 0.3  # the worst round's
    assert table["checkpointed_prompts_repeated"]["against"] == "checkpointed"
    assert table["checkpointed_prompts_repeated"]["step_ratio"] == pytest.approx(9.0 / 8.0)
    text = render({"settings": "test", "variants": table})
    assert text.count("\n| ") == 2 + len(table) and "| micro_batch | default |" in text


def test_every_variant_names_what_it_turns_off():
    assert VARIANTS["default"] == ((), ())
    assert all(patches or overrides for name, (patches, overrides) in VARIANTS.items() if name != "default")
