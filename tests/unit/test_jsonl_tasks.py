import json
import re

import pytest

from purld.tasks import GSM8KTask, JsonlTask
from purld.tasks.jsonl import BadLineError, normalise_number


def write(path, *lines):
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_fields_split_and_oracle(tmp_path):
    rows = [{"q": f"what is {i}+1?", "ref": f"it is {i + 1}", "ans": str(i + 1), "id": f"r{i}"} for i in range(20)]
    task = JsonlTask(
        path=str(write(tmp_path / "d.jsonl", *rows)), prompt_field="q", reference_field="ref",
        answer_field="ans", id_field="id", heldout_fraction=0.25,
    )
    train, heldout = task.examples("train"), task.examples("heldout")
    assert (len(train), len(heldout)) == (15, 5)
    assert not {e.prompt_id for e in train} & {e.prompt_id for e in heldout}
    example = train[0]
    assert example.prompt.startswith("what is") and example.reference == f"it is {example.answer}"
    assert task.oracle_score(example, f"the answer: {example.answer}") == 1.0
    assert task.oracle_score(example, "no idea") == 0.0


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ('{"prompt": "x"', "malformed JSON"),
        ({"text": "x"}, "missing field 'prompt' (fields present: text)"),
        ({"prompt": "   "}, "empty prompt"),
        ("[1, 2]", "expected a JSON object, got list"),
    ],
)
def test_a_bad_line_names_file_line_and_problem(tmp_path, bad, problem):
    path = write(tmp_path / "d.jsonl", {"prompt": "fine"}, bad, {"prompt": "also fine"})
    with pytest.raises(BadLineError) as error:
        JsonlTask(path=str(path))
    assert f"{path}:2: {problem}" in str(error.value) and "on_bad_line=skip" in str(error.value)


def test_skip_counts_every_bad_line(tmp_path):
    path = write(tmp_path / "d.jsonl", {"prompt": "a"}, "not json", {"prompt": ""}, {"prompt": "b"}, {"nope": 1})
    task = JsonlTask(path=str(path), on_bad_line="skip", heldout_fraction=0.0)
    assert [e.prompt for e in task.examples("train")] == ["a", "b"]
    assert task.report()["bad_lines_skipped"] == 3 and len(task.bad_lines) == 3


def test_chat_messages(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello!"}]},
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "why?"}]},
        {"messages": [{"role": "assistant", "content": "only me"}]},
    ]
    path = write(tmp_path / "c.jsonl", *rows)
    with pytest.raises(BadLineError, match=":3: field 'messages' must end with a user message"):
        JsonlTask(path=str(path), prompt_field=None, messages_field="messages")
    task = JsonlTask(path=str(path), prompt_field=None, messages_field="messages", on_bad_line="skip", heldout_fraction=0)
    first, second = task.examples("train")
    assert (first.prompt, first.reference, first.messages) == ("hi", "hello!", ({"role": "user", "content": "hi"},))
    assert second.prompt == "system: be brief\nuser: why?\nassistant:" and second.reference is None


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        JsonlTask(path=str(tmp_path / "none.jsonl"))
    with pytest.raises(ValueError, match="no usable prompt"):
        JsonlTask(path=str(write(tmp_path / "e.jsonl", "")))


def test_normalise_number():
    assert [normalise_number(v) for v in ("1,234", "72.0", "0.50", " 7. ", "abc")] == ["1234", "72", "0.5", "7", "abc"]


def test_gsm8k_ships_and_scores():
    task = GSM8KTask(num_train=50, num_heldout=20)
    assert len(task.examples("train")) == 50 and len(task.examples("heldout")) == 20
    example = task.examples("train")[0]
    assert example.prompt.startswith("Question: Natalia") and example.prompt.endswith("Answer:")
    assert "<<" not in example.reference and example.answer == "72"
    assert task.oracle_score(example, example.reference) == 1.0
    assert task.extract_answer("so 12 + 3 = 15 apples") == "15"
    assert task.extract_answer("#### 1,000") == "1000"


def test_gsm8k_line_without_final_answer(tmp_path):
    path = write(tmp_path / "g.jsonl", {"question": "q?", "answer": "no final line"})
    with pytest.raises(BadLineError, match=r"g.jsonl:1: the answer has no '#### <number>' line"):
        GSM8KTask(path=str(path), heldout_path=str(path))


def test_an_image_field_opens_each_lines_pictures_relative_to_the_file(tmp_path):
    from PIL import Image

    from purld.tasks import JsonlTask

    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8), "red").save(tmp_path / "images" / "a.png")
    Image.new("RGB", (8, 8), "blue").save(tmp_path / "images" / "b.png")
    data = tmp_path / "vqa.jsonl"
    data.write_text('{"prompt": "colour?", "image": "images/a.png"}\n{"prompt": "both?", "image": ["images/a.png", "images/b.png"]}\n')
    task = JsonlTask(str(data), heldout_fraction=0.0, image_field="image")
    first, second = task.examples("train")
    assert task.has_images and len(first.images) == 1 and len(second.images) == 2
    assert second.images[1].getpixel((0, 0)) == (0, 0, 255)


@pytest.mark.parametrize(("line", "problem"), [
    ('{"prompt": "colour?", "image": "images/missing.png"}', "image 'images/missing.png': no such file"),
    ('{"prompt": "colour?", "image": "broken.png"}', "image 'broken.png': unreadable"),
    ('{"prompt": "colour?", "image": 3}', "must be an image path or a list of them"),
    ('{"prompt": "colour?"}', "missing field 'image'"),
])
def test_a_bad_image_names_file_line_and_path_or_is_skipped_and_counted(tmp_path, line, problem):
    from PIL import Image

    from purld.tasks import JsonlTask

    Image.new("RGB", (8, 8), "red").save(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"not a picture")
    data = tmp_path / "vqa.jsonl"
    data.write_text('{"prompt": "fine", "image": "good.png"}\n' + line + "\n")
    with pytest.raises(ValueError, match=rf"vqa.jsonl:2: .*{re.escape(problem)}"):
        JsonlTask(str(data), heldout_fraction=0.0, image_field="image")
    task = JsonlTask(str(data), heldout_fraction=0.0, image_field="image", on_bad_line="skip")
    assert len(task.examples("train")) == 1 and task.report()["bad_lines_skipped"] == 1
