"""`teacher=litellm`: any provider litellm speaks (hosted APIs, or vLLM / Ollama via `api_base`).

Exactly one successful call per prompt the cache lacks: requests run
concurrently (at most `max_concurrency` in flight) in a background event loop
and each answer is handed to the cache as soon as it arrives. Retries with
exponential backoff and jitter on rate limits, 5xx, connection errors and
malformed responses (litellm's own and the OpenAI SDK's retries are off, so
`num_retries` means what it says). A timeout is not retried unless
`retry_on_timeout`: an on-premise server (`transformers serve`, a CPU box)
keeps computing a request whose client gave up, so a retry queues the same
work a second time. Measured with `transformers serve` on SmolLM2-135M, 2 CPU
cores: a 200-token answer took 61 s; a request abandoned by its client after
1 s was still computed, and the next 8-token request waited 78 s behind it.
The default `timeout` (600 s, the OpenAI SDK's) fits such a server's queue. After the retries:
`on_error=raise` stops new requests, lets those in flight finish (their answers
are kept) and raises naming the prompt; `on_error=skip` leaves the prompt out
and counts it.

The API key comes from the environment only: the provider's usual variable,
or the one named by `api_key_env`. The config, cache key, cache rows and logs
hold the variable's name at most, never its value. Answers are stored as text
and never executed.

A prompt with images (a vision-language task) is sent in the OpenAI content-parts format: the user turn's
text, then each image as a base64 PNG data URL, which hosted multimodal models and `vllm serve` read. The cache
key holds a SHA-256 of each image's pixels, not the data URL.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import random
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from purld.teachers.base import (
    AnchorAnswer,
    Teacher,
    TeacherError,
    TeacherFailure,
    check_prompt_template,
    templated_messages,
    with_image_parts,
)
from purld.types import Example

ON_ERROR = ("raise", "skip")
_DONE = object()


def import_litellm():
    """litellm, imported lazily (seconds) and kept offline: local cost map, no banners."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    # Hydra sets the root logger to INFO; litellm would then log every call.
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return litellm


class LiteLLMTeacher(Teacher):
    name = "litellm"

    def __init__(
        self,
        model: str,
        api_base: str | None = None,
        api_key_env: str | None = None,
        system_prompt: str | None = None,
        prompt_template: str = "{prompt}",
        temperature: float = 0.0,
        max_tokens: int = 512,
        generation_params: dict[str, Any] | None = None,
        max_concurrency: int = 8,
        num_retries: int = 3,
        timeout: float = 600.0,
        retry_on_timeout: bool = False,
        retry_backoff: float = 0.5,
        retry_backoff_max: float = 20.0,
        on_error: str = "raise",
        input_cost_per_token: float | None = None,
        output_cost_per_token: float | None = None,
    ) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"teacher.on_error={on_error!r}: allowed values are {', '.join(ON_ERROR)}")
        if max_concurrency < 1 or num_retries < 0 or timeout <= 0:
            raise ValueError(
                "teacher.max_concurrency must be ≥ 1, teacher.num_retries ≥ 0 and teacher.timeout > 0 "
                f"(got {max_concurrency}, {num_retries}, {timeout})"
            )
        check_prompt_template(prompt_template)
        self.model, self.api_base, self.api_key_env = model, api_base, api_key_env
        self.system_prompt, self.prompt_template = system_prompt, prompt_template
        self.temperature, self.max_tokens = temperature, max_tokens
        self.generation_params = dict(generation_params or {})
        self.max_concurrency, self.num_retries, self.timeout = max_concurrency, num_retries, timeout
        self.retry_on_timeout = retry_on_timeout
        self.retry_backoff, self.retry_backoff_max = retry_backoff, retry_backoff_max
        self.on_error = on_error
        self.input_cost_per_token, self.output_cost_per_token = input_cost_per_token, output_cost_per_token
        self._unpriced = False  # set once litellm has said it has no price for this model

    # ------------------------------------------------------------ the cache key
    def identity(self) -> dict[str, Any]:
        # api_base is where the model is served, not what answers: moving a server keeps the cache.
        return {"model": self.model, "temperature": self.temperature, "max_tokens": self.max_tokens, **self.generation_params}

    def messages(self, example: Example) -> list[dict[str, str]]:
        return templated_messages(example, self.system_prompt, self.prompt_template)

    # ---------------------------------------------------------------- calling
    def _api_key(self) -> str | None:
        if self.api_key_env is None:
            return None  # litellm reads the provider's usual variable
        key = os.environ.get(self.api_key_env)
        if not key:
            raise TeacherError(f"teacher.api_key_env={self.api_key_env!r}: that environment variable is not set")
        return key

    def _cost(self, litellm, response, prompt_tokens: int, completion_tokens: int) -> float:
        if self.input_cost_per_token is not None or self.output_cost_per_token is not None:
            return prompt_tokens * (self.input_cost_per_token or 0.0) + completion_tokens * (self.output_cost_per_token or 0.0)
        if self._unpriced:
            return 0.0
        try:
            return float(litellm.completion_cost(completion_response=response))
        except Exception:  # litellm raises for models it has no price for (local servers): ask once
            self._unpriced = True
            return 0.0

    async def _answer_one(self, litellm, example: Example, api_key: str | None) -> AnchorAnswer:
        retryable = (
            litellm.RateLimitError,
            litellm.InternalServerError,
            litellm.ServiceUnavailableError,
            litellm.Timeout,
            litellm.APIConnectionError,
        )
        last_error: BaseException | None = None
        for attempt in range(self.num_retries + 1):
            if attempt:
                delay = min(self.retry_backoff_max, self.retry_backoff * 2 ** (attempt - 1))
                await asyncio.sleep(delay * (0.5 + random.random() / 2))
            try:
                response = await litellm.acompletion(
                    model=self.model,
                    messages=with_image_parts(self.messages(example), example.images),
                    api_base=self.api_base,
                    api_key=api_key,
                    temperature=self.temperature,
                    max_tokens=self.max_tokens,
                    timeout=self.timeout,
                    num_retries=0,
                    max_retries=0,
                    **self.generation_params,
                )
                text = response.choices[0].message.content
                if not text or not text.strip():
                    raise ValueError("the teacher returned an empty answer")
            except litellm.Timeout as error:
                if not self.retry_on_timeout:
                    raise TeacherError(self._timeout_message(example, attempt + 1)) from None
                last_error = error
                continue
            except (*retryable, ValueError, KeyError, IndexError, AttributeError) as error:
                last_error = error
                continue
            except Exception as error:  # authentication, bad request, unknown model: retrying cannot help
                raise TeacherError(self._failure_message(example, attempt + 1, error)) from None
            usage = getattr(response, "usage", None)
            prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
            completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
            return AnchorAnswer(
                text=text,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                cost_usd=self._cost(litellm, response, prompt_tokens, completion_tokens),
            )
        raise TeacherError(self._failure_message(example, self.num_retries + 1, last_error))

    def _timeout_message(self, example: Example, attempts: int) -> str:
        return (
            f"teacher={self.model}: prompt {example.prompt_id!r} timed out after {self.timeout:g} s (attempt {attempts}; "
            "a timeout is not retried, since the server may still be computing it). A server that answers one "
            f"request at a time queues the others: raise teacher.timeout (now {self.timeout:g}) or lower "
            f"teacher.max_concurrency (now {self.max_concurrency}); teacher.retry_on_timeout=true retries anyway"
        )

    def _failure_message(self, example: Example, attempts: int, error: BaseException | None) -> str:
        detail = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}" if error else "unknown error"
        return f"teacher={self.model}: prompt {example.prompt_id!r} failed after {attempts} attempt(s): {detail}"

    async def _fetch_all(self, litellm, examples: Sequence[Example], results: queue.Queue) -> None:
        api_key = self._api_key()
        limit = asyncio.Semaphore(self.max_concurrency)
        stop = asyncio.Event()
        first_failure: list[TeacherError] = []

        async def fetch(example: Example) -> None:
            async with limit:
                if stop.is_set():
                    return
                try:
                    results.put((example, await self._answer_one(litellm, example, api_key)))
                except TeacherError as error:
                    if self.on_error == "skip":
                        results.put((example, TeacherFailure(str(error))))
                    elif not first_failure:
                        first_failure.append(error)
                        stop.set()

        await asyncio.gather(*(fetch(example) for example in examples))
        if first_failure:
            raise first_failure[0]

    def answer(self, examples: Sequence[Example]) -> Iterator[tuple[Example, AnchorAnswer | TeacherFailure]]:
        litellm = import_litellm()
        results: queue.Queue = queue.Queue()

        def run() -> None:
            try:
                asyncio.run(self._fetch_all(litellm, examples, results))
            except BaseException as error:  # handed to the consumer thread, raised there
                results.put(error)
            results.put(_DONE)

        worker = threading.Thread(target=run, name="purld-teacher", daemon=True)
        worker.start()
        failure: BaseException | None = None
        while (item := results.get()) is not _DONE:
            if isinstance(item, BaseException):
                failure = item
                continue
            yield item  # the cache stores it before the next one is taken
        worker.join()
        if failure is not None:
            raise failure
