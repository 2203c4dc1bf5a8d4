
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
