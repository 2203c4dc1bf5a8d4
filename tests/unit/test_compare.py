"""purld-compare on a synthetic sweep with a broken and a half-written run among the good ones."""

from __future__ import annotations

import json

from purld.cli.compare import main, moving_average


def make_run(directory, loss, seed, accuracy, with_curves=True):
    directory.mkdir(parents=True)
    (directory / ".hydra").mkdir()
    summary = {
        "choices": {"task": "arithmetic", "loss": loss, "ranker": "lexical", "seed": seed},
        "eval": {"before": {"accuracy": 0.5}, "after": {"accuracy": accuracy}},
    }
    (directory / "summary.json").write_text(json.dumps(summary))
    if with_curves:
        (directory / "logs" / "purld").mkdir(parents=True)
        rows = ["step,rank/score_mean,rollout/oracle_accuracy,eval/accuracy"]
        rows += [f"{step},{0.5 + step / 100},{accuracy * step / 20},{'' if step % 5 else accuracy}" for step in range(20)]
        (directory / "logs" / "purld" / "metrics.csv").write_text("\n".join(rows) + "\n")


def test_table_sorted_plots_and_bad_runs_named(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    make_run(sweep / "0", "dpo", 0, 0.60)
    make_run(sweep / "1", "dpo", 1, 0.64)
    make_run(sweep / "2", "grpo", 0, 0.70)
    make_run(sweep / "3", "grpo", 1, 0.74, with_curves=False)
    (sweep / "4" / ".hydra").mkdir(parents=True)  # died before writing its summary
    (sweep / "5").mkdir()
    (sweep / "5" / "summary.json").write_text('{"choices": ')  # half-written
    assert main([str(sweep)]) == 0
    out, err = capsys.readouterr()
    assert "4 run(s), sorted by held-out accuracy" in out
    assert out.index("0.7400") < out.index("0.7000") < out.index("0.6400") < out.index("0.6000")
    assert "shared: task=arithmetic" in out and "ranker=lexical" in out
    assert f"{sweep / '4'}: no summary.json" in err
    assert f"{sweep / '5' / 'summary.json'}: unreadable JSON" in err
    assert (sweep / "curves.png").stat().st_size > 0 and (sweep / "final_accuracy.png").stat().st_size > 0


def test_nothing_readable_exits_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "empty: no run found" in err and "missing: no such directory" in err and "no readable run" in err


def test_moving_average():
    assert moving_average((1.0, 3.0, 5.0, 7.0), 2) == [1.0, 2.0, 4.0, 6.0]
