"""scripts/evidence.py end to end at toy size (a few steps, one seed), and its table and README block."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "evidence.py"
sys.path.insert(0, str(SCRIPT.parent))

import evidence


@pytest.mark.slow  # scripts/evidence.py end to end (35 s); CI runs it
def test_evidence_runs_rows_from_one_warm_start_and_writes_the_report(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- evidence:start -->\nold table\n<!-- evidence:end -->\nrest\n")
    command = [
        sys.executable, str(SCRIPT), "--out", str(tmp_path / "ev"), "--tasks", "sort", "--seeds", "0",
        "--rows", "sft,grpo-lexical,grpo-random", "--steps", "2", "--warmstart-steps", "5",
        "--eval-prompts", "16", "--eval-every", "1", "--readme", str(readme),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads((tmp_path / "ev" / "evidence.json").read_text())
    assert [row["row"] for row in report["rows"]] == ["sft", "grpo-lexical", "grpo-random"]
    assert report["failed_runs"] == []
    grpo = report["rows"][1]
    seed = grpo["seeds"]["0"]
    assert seed["accuracy_before"] == report["warm_start_accuracy"]["sort"]  # every row starts from the shared warm start
    assert [step for step, _ in seed["accuracy_curve"]] == [0, 1, 2]
    assert grpo["rank/kendall_tau"]["mean"] is not None and report["rows"][0]["rank/kendall_tau"]["mean"] is None
    assert (tmp_path / "ev" / "accuracy_curves.png").stat().st_size > 0
    text = readme.read_text()
    assert "old table" not in text and "| sort | PU-RLD + GRPO | lexical |" in text and text.endswith("rest\n")
    # A finished run is not run again: a second command reuses every summary.json.
    again = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0 and "warm start" in again.stdout
    assert json.loads((tmp_path / "ev" / "evidence.json").read_text())["rows"][1]["seeds"]["0"]["accuracy"] == seed["accuracy"]


def test_a_failed_run_is_reported_with_its_directory_and_the_rest_go_on(tmp_path, monkeypatch):
    calls = []

    def fake_run(run_dir, overrides, threads):
        calls.append(run_dir)
        if "grpo-random" in str(run_dir):
            raise RuntimeError(f"{run_dir}: purld-train exited 1")
        if run_dir.name == "warmstart":
            (run_dir / "student").mkdir(parents=True)
            (run_dir / "summary.json").write_text(json.dumps({"eval": {"before": {"accuracy": 0.5}}}))
        return {"eval": {"before": {"accuracy": 0.5}, "after": {"accuracy": 0.6, "win_rate": 0.4, "length": 8.0}}, "global_step": 2}

    monkeypatch.setattr(evidence, "run_purld_train", fake_run)
    status = evidence.main(["--out", str(tmp_path), "--tasks", "sort", "--seeds", "0", "--rows", "sft,grpo-random", "--jobs", "1"])
    assert status == 1
    report = json.loads((tmp_path / "evidence.json").read_text())
    assert [row["row"] for row in report["rows"]] == ["sft"]
    assert "grpo-random" in report["failed_runs"][0]


def test_unknown_task_is_refused():
    with pytest.raises(SystemExit):
        evidence.parse_args(["--tasks", "chess"])


def test_an_output_directory_keeps_one_setting(tmp_path, monkeypatch):
    monkeypatch.setattr(evidence, "run_purld_train", lambda *a, **k: (_ for _ in ()).throw(AssertionError("must not run")))
    (tmp_path / "settings.json").write_text(json.dumps({"steps": 100, "warmstart_steps": 500, "num_candidates": 8,
                                                         "temperature": 0.7, "eval_prompts": 512, "eval_every": 25}))
    with pytest.raises(SystemExit, match="steps: 100 there, 7 now"):
        evidence.main(["--out", str(tmp_path), "--steps", "7"])


def test_the_real_suite_and_its_quick_path_have_their_own_tasks_rows_and_budget():
    full, _ = evidence.parse_args(["--real"])
    assert full.suite is evidence.REAL and full.tasks == ["word_problems", "constraints"]
    assert (full.out, full.seeds, full.signal_prompts, full.eval_prompts) == (Path("outputs/evidence/real"), [0, 1, 2], 200, 128)
    quick, _ = evidence.parse_args(["--real", "--quick", "--steps", "3"])
    assert quick.tasks == ["word_problems"] and quick.seeds == [0] and quick.steps == 3 and quick.ablation_task is None
    assert "grpo-self_judge" in quick.rows and quick.out == Path("outputs/evidence/real_quick")
    with pytest.raises(SystemExit):
        evidence.parse_args(["--real", "--tasks", "sort"])  # a toy task is not in the real suite


@pytest.mark.parametrize("task", ["word_problems", "constraints"])
def test_every_real_run_composes_into_a_valid_config(task, monkeypatch, tmp_path):
    """The overrides the real suite passes (warm start, signal, each row) compose against conf/ and pass check_config:
    constraints removes experiment=smollm2's task.max_operand, the rows replace the GGUF student by the warm start."""
    from hydra import compose, initialize_config_dir

    from purld.cli.checks import check_config
    from purld.cli.train import CONFIG_DIR

    s, _ = evidence.parse_args(["--real", "--out", str(tmp_path), "--judge-model", str(tmp_path / "judge")])
    student = tmp_path / "runs" / task / "warmstart" / "student"
    student.mkdir(parents=True)
    rows = [*evidence.comparison_rows(evidence.REAL.rankers), *evidence.real_ablation_rows(4, 0.7)]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        for row in rows:
            cfg = compose("config", overrides=evidence.row_overrides(s, task, row, 0, student))
            check_config(cfg)
            assert cfg.student.model_name_or_path == str(student) and cfg.student.gguf_file is None
            assert cfg.eval.judge.teacher.model_name_or_path == str(tmp_path / "judge")
        signal = compose("config", overrides=evidence.signal_overrides(s, task, student))
        check_config(signal)
        assert signal.rollout.num_candidates == 8
        check_config(compose("config", overrides=[*evidence.REAL.tasks[task], *evidence.common_overrides(s), "trainer.max_steps=0"]))
        for variant in evidence.real_signal_ablation():
            cfg = compose("config", overrides=evidence.signal_variant_overrides(s, task, student, variant))
            check_config(cfg)
            assert list(cfg.signal.rankers) == [variant.ranker] and "{anchor}" in cfg.ranker.get("template", cfg.ranker.get("anchor_template"))
        variants = evidence.real_signal_ablation()
        for variant, template in ((variants[1], evidence.JUDGE_REFERENCE_LAST), (variants[2], evidence.JUDGE_SAME_NUMBER)):
            cfg = compose("config", overrides=evidence.signal_variant_overrides(s, task, student, variant))
            assert cfg.ranker.template == template  # newlines, braces and apostrophes arrive as written


def test_the_real_suite_scores_the_signal_first_and_reports_it_beside_the_training_table(tmp_path, monkeypatch):
    figure = {"mean": 0.4, "low": 0.3, "high": 0.5, "n": 10}
    signal = {"prompts": 10, "candidates_per_prompt": 8, "temperature": 0.1, "bootstrap": {"confidence": 0.95},
              "chance": figure, "rankers": {"embedding": {"kendall_tau": figure, "top1_oracle_accuracy": figure,
                                                          "q_mass_on_correct": figure, "seconds": 3.0}},
              "examples": [{"prompt": "x"}]}
    order = []

    def fake_signal(run_dir, overrides, threads):
        order.append("signal")
        assert f"checkpoint={tmp_path / 'runs' / 'word_problems' / 'warmstart' / 'student'}" in overrides
        named = [o.split("=", 1)[1].strip("[]") for o in overrides if o.startswith("signal.rankers=")]
        if named:  # a ranker variant of the ablation: that ranker alone, on fewer prompts
            assert "signal.num_prompts=64" in overrides
            return {**signal, "prompts": 64, "rankers": {named[0]: signal["rankers"]["embedding"]}}
        return signal

    def fake_train(run_dir, overrides, threads):
        order.append(run_dir.name)
        if run_dir.name == "warmstart":
            (run_dir / "student").mkdir(parents=True)
            (run_dir / "summary.json").write_text(json.dumps({"eval": {"before": {"accuracy": 0.6, "win_rate_lc": 0.3}}}))
        return {"eval": {"before": {"accuracy": 0.6}, "after": {"accuracy": 0.62, "win_rate": 0.4, "win_rate_lc": 0.35, "length": 8.0}},
                "global_step": 2}

    monkeypatch.setattr(evidence, "run_purld_signal", fake_signal)
    monkeypatch.setattr(evidence, "run_purld_train", fake_train)
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- evidence:start -->\ntoy\n<!-- evidence:end -->\n<!-- evidence-real:start -->\nold\n<!-- evidence-real:end -->\n")
    status = evidence.main(["--real", "--out", str(tmp_path), "--tasks", "word_problems", "--seeds", "0", "--rows", "sft",
                            "--jobs", "1", "--readme", str(readme)])
    assert status == 0 and order == ["warmstart", "signal", "seed0", *["signal"] * 5]
    report = json.loads((tmp_path / "evidence.json").read_text())
    assert [v["ranker"] for v in report["signal_ablation"]] == ["self_judge"] * 3 + ["likelihood"] * 2
    assert report["suite"] == "real" and "examples" not in report["signal"]["word_problems"]
    assert report["rows"][0]["win_rate_lc"]["mean"] == 0.35
    text = readme.read_text()
    assert "toy" in text and "old" not in text  # only the real block is rewritten
    assert "| self_judge, the reference after the candidate | 0.40 [0.30, 0.50] |" in text
    assert "| word_problems | embedding | 0.40 [0.30, 0.50] |" in text and "judged by the lexical ranker" in text
    assert "| word_problems | warm start (shared) | | 60.0 | — | 30.0 |" in text  # the LC win rate gets its column


def test_the_criterion_reads_the_share_of_the_sft_to_oracle_gap_that_a_self_ranker_closes():
    def entry(task, row, ranker, accuracy, tau=None):
        return {"task": task, "row": row, "ranker": ranker, "ablation": None,
                "accuracy": {"mean": accuracy, "std": None}, "rank/kendall_tau": {"mean": tau, "std": None}}

    entries = [
        entry("a", "sft", None, 0.60), entry("a", "grpo-oracle", "oracle", 0.70, 1.0),
        entry("a", "grpo-self_judge", "self_judge", 0.66, 0.55), entry("a", "grpo-likelihood", "likelihood", 0.66, 0.2),
        entry("a", "grpo-embedding", "embedding", 0.70, 0.6),  # not a self-ranker: not judged
        entry("b", "sft", None, 0.60), entry("b", "grpo-oracle", "oracle", 0.58, 1.0), entry("b", "grpo-likelihood", "likelihood", 0.61, 0.6),
    ]
    verdicts = {(v["task"], v["row"]): v for v in evidence.criterion(entries)}
    assert set(verdicts) == {("a", "grpo-self_judge"), ("a", "grpo-likelihood"), ("b", "grpo-likelihood")}
    assert verdicts[("a", "grpo-self_judge")]["gap_closed"] == pytest.approx(0.6) and verdicts[("a", "grpo-self_judge")]["met"]
    assert not verdicts[("a", "grpo-likelihood")]["met"]  # closes the gap, but its τ is 0.2
    assert verdicts[("b", "grpo-likelihood")]["gap_closed"] is None and not verdicts[("b", "grpo-likelihood")]["met"]
    lines = evidence.criterion_lines(list(verdicts.values()))
    assert "- b, grpo-likelihood: +1.0 points over SFT, oracle GRPO -2.0; no gap to close; τ 0.60: **not met**" in lines


def test_a_ranked_row_reports_its_tau_early_and_late_in_training(tmp_path):
    metrics = tmp_path / "logs" / "purld" / "metrics.csv"
    metrics.parent.mkdir(parents=True)
    metrics.write_text("step,rank/kendall_tau\n" + "".join(f"{step},{tau}\n" for step, tau in enumerate([0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])))
    summary = {"eval": {"before": {}, "after": {"accuracy": 0.5}}, "global_step": 7}
    result = evidence.seed_result(tmp_path, summary, {"accuracy": 0.4})
    assert result["tau_early"] == pytest.approx(0.5) and result["tau_late"] == pytest.approx(0.1)
    assert result["accuracy_before"] == 0.4 and result["accuracy_curve"] == [(0, 0.4), (7, 0.5)]  # the warm start stands in
    row = evidence.summarize("t", evidence.Row("grpo-likelihood", "PU-RLD + GRPO", "likelihood", ()), {0: result})
    text = evidence.render({"rows": [row], "warm_start_accuracy": {"t": 0.4}})
    assert "| t | grpo-likelihood | 0.50 | 0.10 |" in text
