"""The litellm teacher against a real OpenAI-compatible server on 127.0.0.1 — litellm itself, no mock."""

from __future__ import annotations

import subprocess
import sys

import pytest

from purld.anchors import AnchorCache
from purld.teachers import LiteLLMTeacher, TeacherError
from purld.testing.openai_server import FakeOpenAIServer
from purld.types import Example


def examples(*prompts: str) -> list[Example]:
    return [Example(prompt_id=f"p{i}", prompt=prompt) for i, prompt in enumerate(prompts)]


def teacher_for(server: FakeOpenAIServer, **overrides) -> LiteLLMTeacher:
    settings = dict(
        model="openai/tiny-teacher", api_base=server.api_base, api_key_env=None, num_retries=3,
        retry_backoff=0.01, retry_backoff_max=0.05, timeout=5.0, max_concurrency=4,
    )
    return LiteLLMTeacher(**{**settings, **overrides})


@pytest.fixture
def server():
    with FakeOpenAIServer(slow_seconds=1.5, latency=0.02) as running:
        yield running


@pytest.fixture(autouse=True)
def dummy_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-dummy")


def test_one_call_per_prompt_bounded_concurrency_and_zero_calls_on_rerun(server, tmp_path):
    cache, teacher = AnchorCache(tmp_path / "a.sqlite"), teacher_for(server, max_concurrency=4)
    prompts = examples(*(f"question {i}" for i in range(24)))
    stats = cache.fill(teacher, prompts, progress=False)
    assert stats.teacher_calls == 24 and stats.cache_hits == 0
    assert all(server.successes[p.prompt] == 1 for p in prompts)
    assert 2 <= server.max_in_flight <= 4
    assert stats.prompt_tokens == 24 * 7 and stats.completion_tokens == 24 * 5
    assert cache.anchors(teacher, prompts)[3] == "answer to: question 3"
    requests_before = sum(server.requests.values())
    again = cache.fill(teacher, prompts, progress=False)
    assert (again.teacher_calls, again.cache_hits) == (0, 24)
    assert sum(server.requests.values()) == requests_before


def test_faults_are_retried_until_one_success(server, tmp_path):
    prompts = examples("a FAIL429x2", "b FAIL500x2", "c BADJSONx1", "d SLOWx1", "e fine")
    teacher = teacher_for(server, timeout=0.5, retry_on_timeout=True)
    stats = AnchorCache(tmp_path / "a.sqlite").fill(teacher, prompts, progress=False)
    assert stats.teacher_calls == 5
    assert [server.successes[p.prompt] for p in prompts] == [1, 1, 1, 1, 1]
    assert [server.requests[p.prompt] for p in prompts] == [3, 3, 2, 2, 1]


def test_raise_keeps_the_answers_already_received(server, tmp_path):
    cache = AnchorCache(tmp_path / "a.sqlite")
    prompts = examples("ok one", "ok two", "broken ALWAYS500", "never asked")
    with pytest.raises(TeacherError, match=r"prompt 'p2' failed after 3 attempt\(s\): InternalServerError"):
        cache.fill(teacher_for(server, max_concurrency=1, num_retries=2), prompts, progress=False)
    assert len(cache) == 2
    assert server.requests["never asked"] == 0
    rerun = cache.fill(teacher_for(server), prompts[:2] + prompts[3:], progress=False)
    assert (rerun.teacher_calls, rerun.cache_hits) == (1, 2)


def test_skip_leaves_the_prompt_out_and_counts_it(server, tmp_path):
    cache = AnchorCache(tmp_path / "a.sqlite")
    prompts = examples("fine", "broken ALWAYS500", "also fine")
    teacher = teacher_for(server, on_error="skip", num_retries=1)
    stats = cache.fill(teacher, prompts, progress=False)
    assert (stats.teacher_calls, stats.skipped) == (2, 1)
    assert cache.anchors(teacher, prompts, skip_missing=True) == ["answer to: fine", None, "answer to: also fine"]


def test_authentication_errors_are_not_retried(server, tmp_path):
    with pytest.raises(TeacherError, match="failed after 1 attempt"):
        AnchorCache(tmp_path / "a.sqlite").fill(teacher_for(server), examples("x AUTH401"), progress=False)
    assert server.requests["x AUTH401"] == 1


def test_connection_refused_names_the_prompt(tmp_path):
    with FakeOpenAIServer() as closed:
        api_base = closed.api_base  # the port is closed once the server is gone
    teacher = LiteLLMTeacher(model="openai/tiny-teacher", api_base=api_base, num_retries=1, retry_backoff=0.01, timeout=2)
    with pytest.raises(TeacherError, match="prompt 'p0' failed after 2 attempt"):
        AnchorCache(tmp_path / "a.sqlite").fill(teacher, examples("hello"), progress=False)


def test_a_second_process_makes_zero_calls(server, tmp_path):
    path = tmp_path / "a.sqlite"
    prompts = examples("one", "two", "three")
    AnchorCache(path).fill(teacher_for(server), prompts, progress=False)
    code = f"""
from purld.anchors import AnchorCache
from purld.teachers import LiteLLMTeacher
from tests.unit.teachers.test_litellm_teacher import examples
teacher = LiteLLMTeacher(model="openai/tiny-teacher", api_base={server.api_base!r})
stats = AnchorCache({str(path)!r}).fill(teacher, examples("one", "two", "three"), progress=False)
print(stats.teacher_calls, stats.cache_hits)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "3"]
    assert sum(server.requests.values()) == 3


def test_generation_parameters_are_part_of_the_cache_key(server, tmp_path):
    cache, prompts = AnchorCache(tmp_path / "a.sqlite"), examples("same prompt")
    cache.fill(teacher_for(server), prompts, progress=False)
    assert cache.fill(teacher_for(server, temperature=0.7), prompts, progress=False).teacher_calls == 1
    assert cache.fill(teacher_for(server, system_prompt="Be brief."), prompts, progress=False).teacher_calls == 1
    assert cache.fill(teacher_for(server, api_base=server.api_base + "/"), prompts, progress=False).teacher_calls == 0


def test_key_from_the_named_variable(server, tmp_path, monkeypatch):
    monkeypatch.setenv("MY_TEACHER_KEY", "sk-from-named-variable")
    AnchorCache(tmp_path / "a.sqlite").fill(teacher_for(server, api_key_env="MY_TEACHER_KEY"), examples("q"), progress=False)
    assert "Bearer sk-from-named-variable" in server.authorization
    monkeypatch.delenv("MY_TEACHER_KEY")
    with pytest.raises(TeacherError, match="'MY_TEACHER_KEY': that environment variable is not set"):
        AnchorCache(tmp_path / "b.sqlite").fill(teacher_for(server, api_key_env="MY_TEACHER_KEY"), examples("q"), progress=False)


def test_invalid_settings_name_the_key():
    with pytest.raises(ValueError, match="teacher.on_error='retry'"):
        LiteLLMTeacher(model="openai/x", on_error="retry")
    with pytest.raises(ValueError, match="must contain"):
        LiteLLMTeacher(model="openai/x", prompt_template="no placeholder")


def test_a_timeout_is_not_retried_and_names_the_settings_that_fix_it(server, tmp_path):
    """A server still computing the timed-out request would get the same work again from a retry."""
    cache = AnchorCache(tmp_path / "a.sqlite")
    teacher = teacher_for(server, timeout=0.5, max_concurrency=1)
    with pytest.raises(TeacherError) as raised:
        cache.fill(teacher, examples("fine first", "b SLOWx1"), progress=False)
    assert server.requests["b SLOWx1"] == 1
    message = str(raised.value)
    assert "'p1' timed out after 0.5 s" in message
    assert "teacher.timeout (now 0.5)" in message and "teacher.max_concurrency (now 1)" in message
    assert cache.fill(teacher, examples("fine first"), progress=False).cache_hits == 1  # the answer before it is kept


def test_images_reach_the_server_as_content_parts_and_key_the_cache(server, tmp_path):
    import base64
    import io

    from PIL import Image

    red, blue = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")
    cache, teacher = AnchorCache(tmp_path / "a.sqlite"), teacher_for(server)
    pictures = [Example(prompt_id="p0", prompt="What colour?", images=(red,)),
                Example(prompt_id="p1", prompt="What colour?", images=(blue,))]
    stats = cache.fill(teacher, pictures, progress=False)
    assert stats.teacher_calls == 2  # the same question about another picture is asked again
    sent = [urls[0] for urls in server.images["What colour?"]]
    assert all(url.startswith("data:image/png;base64,") for url in sent)
    colours = {Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).getpixel((0, 0)) for url in sent}
    assert colours == {(255, 0, 0), (0, 0, 255)}
    # The same pixels again (another object): served from the cache.
    again = cache.fill(teacher, [Example(prompt_id="p2", prompt="What colour?", images=(red.copy(),))], progress=False)
    assert (again.teacher_calls, again.cache_hits) == (0, 1)
