
from purld.anchors import AnchorCache
from purld.teachers import HFTeacher
from purld.types import Example
from tests.unit.test_hf_students import save_tiny


def test_batched_local_teacher_answers_once(tmp_path):
    directory = save_tiny(tmp_path / "teacher", "llama")
    teacher = HFTeacher(str(directory), max_new_tokens=5, batch_size=3, device="cpu")
    prompts = [Example(f"p{i}", f"{i}+{i}=") for i in range(7)]  # 3 batches, the last one short
    cache = AnchorCache(tmp_path / "a.sqlite")
    stats = cache.fill(teacher, prompts, progress=False)
    assert stats.teacher_calls == 7 and stats.completion_tokens > 0
    anchors = cache.anchors(teacher, prompts)
    assert all(isinstance(a, str) for a in anchors)
    # Greedy and batched = one by one: left padding does not change an answer.
    alone = dict(HFTeacher(str(directory), max_new_tokens=5, batch_size=1, device="cpu").answer(prompts[:3]))
    assert [alone[p].text for p in prompts[:3]] == anchors[:3]
    assert cache.fill(teacher, prompts, progress=False).teacher_calls == 0


def test_every_setting_that_changes_an_answer_is_in_the_cache_key():
    from purld.teachers import HFTeacher
    from purld.types import Example

    example = Example("p", "2+2=")
    base = HFTeacher("/models/t").cache_material(example)
    for changed in ({"dtype": "bfloat16"}, {"use_chat_template": "never"}, {"temperature": 0.7}, {"max_new_tokens": 8},
                    {"system_prompt": "Be brief."}, {"prompt_template": "Q: {prompt}"}):
        assert HFTeacher("/models/t", **changed).cache_material(example) != base, changed
    assert HFTeacher("/models/t", batch_size=3, device="cpu").cache_material(example) == base  # same answers
