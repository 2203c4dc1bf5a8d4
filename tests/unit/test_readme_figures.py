"""README's (and scripts/README.md's) generated blocks are what their scripts render from the committed JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import pytest  # noqa: E402
from bench_quickstart import PRESET_MARKERS, VLM_MARKERS, render  # noqa: E402
from evidence import SUITES  # noqa: E402
from evidence import render as render_evidence  # noqa: E402
from vs_trl_report import PERFORMANCE_MARKERS, readme_table  # noqa: E402

PRESET_REPORTS = ("outputs/bench/smollm2.json", "outputs/bench/smollm2_lora.json")


def block(text: str, markers: tuple[str, str]) -> str:
    start, end = markers
    return text.split(start, 1)[1].split(end, 1)[0]


@pytest.mark.parametrize(("reports", "markers"), [(PRESET_REPORTS, PRESET_MARKERS), (("outputs/bench/vlm_quickstart.json",), VLM_MARKERS)])
def test_the_preset_tables_are_rendered_from_their_reports(reports, markers):
    table = render([json.loads((ROOT / path).read_text()) for path in reports])
    written = block((ROOT / "README.md").read_text(), markers)
    assert table in written
    assert " ".join(reports) in written  # the command that regenerates it


@pytest.mark.parametrize(("path", "document"), [("outputs/evidence/evidence.json", "scripts/README.md"),
                                                ("outputs/evidence/real/evidence.json", "README.md")])
def test_the_evidence_tables_are_rendered_from_their_json(path, document):
    report = json.loads((ROOT / path).read_text())
    written = block((ROOT / document).read_text(), SUITES[report.get("suite", "toy")].markers)
    assert render_evidence(report) in written
    assert f"--render {path}" in written  # the command that regenerates it


def test_the_performance_table_is_rendered_from_the_benchmark_reports():
    reports = ("outputs/bench/vs_trl_bf16.json", "outputs/bench/vs_trl.json")
    written = block((ROOT / "README.md").read_text(), PERFORMANCE_MARKERS)
    assert readme_table([json.loads((ROOT / path).read_text()) for path in reports]) in written
    assert " ".join(reports) in written


def test_the_vllm_rollout_table_is_rendered_from_its_report():
    from bench_rollout import VLLM_MARKERS
    from bench_rollout import render as render_rollout

    path = "outputs/bench/rollout_smollm2_vllm.json"
    written = block((ROOT / "README.md").read_text(), VLLM_MARKERS)
    assert render_rollout(json.loads((ROOT / path).read_text())) in written
    assert f"--render {path}" in written


def test_the_real_student_performance_table_is_rendered_from_its_report():
    from vs_trl_report import REAL_PERFORMANCE_MARKERS, real_student_table

    paths = ("outputs/bench/vs_trl_smollm2.json", "outputs/bench/vs_trl_smollm2_dpo.json",  # the DPO rows re-run
             "outputs/bench/vs_trl_smollm2_grpo.json",  # and the GRPO rows, both with release_freed_memory
             "outputs/bench/vs_trl_smollm2_dpo_bf16.json")  # the DPO rows in bf16 autocast
    written = block((ROOT / "README.md").read_text(), REAL_PERFORMANCE_MARKERS)
    assert real_student_table([json.loads((ROOT / path).read_text()) for path in paths]) in written
    assert f"{' '.join(paths)} --real" in written
