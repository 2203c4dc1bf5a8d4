"""User data through the CLI: bad JSONL input, and a task option from the user's own config directory."""

from __future__ import annotations

import json

from tests.integration.test_cli import SMALL_RUN, run


def test_a_bad_jsonl_line_stops_before_loading_with_file_and_line(tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text('{"prompt": "1+1=", "reference": "ans=2"}\n{"prompt": "2+2=", "reference"\n')
    result = run("train", "task=jsonl", f"task.path={data}", "task.reference_field=reference", check=False)
    assert result.returncode == 2
    assert f"{data}:2: malformed JSON" in result.stderr and "Traceback" not in result.stderr


def test_a_task_option_from_the_users_config_directory(tmp_path):
    """README's recipe: drop a YAML into your own config dir, no code change."""
    data = tmp_path / "sums.jsonl"
    data.write_text("".join(json.dumps({"q": f"{i}+{i}=", "a": f"ans={2 * i}", "n": 2 * i}) + "\n" for i in range(40)))
    (tmp_path / "myconf" / "task").mkdir(parents=True)
    (tmp_path / "myconf" / "task" / "my_sums.yaml").write_text(
        f"_target_: purld.tasks.JsonlTask\npath: {data}\nprompt_field: q\nreference_field: a\nanswer_field: n\n"
        "on_bad_line: skip\nheldout_fraction: 0.2\n"
    )
    run_dir = tmp_path / "run"
    run(
        "train", "--config-dir", str(tmp_path / "myconf"), "task=my_sums", "ranker=verifier", *SMALL_RUN,
        f"anchors.cache_path={tmp_path / 'a.sqlite'}", f"hydra.run.dir={run_dir}",
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["choices"]["task"] == "my_sums" and summary["global_step"] == 2
    assert summary["task"] == {"train_examples": 32, "heldout_examples": 8, "bad_lines_skipped": 0}
    assert summary["reference_answers"] == 40 and "accuracy" in summary["eval"]["after"]
