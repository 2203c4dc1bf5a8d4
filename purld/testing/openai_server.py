"""A real OpenAI-compatible chat-completions server on 127.0.0.1, for testing teachers through litellm itself.

Behaviour per prompt is scripted by markers in the user message:
    FAIL429xN   the first N requests for this prompt answer 429
    FAIL500xN   … answer 500
    BADJSONxN   … answer 200 with a body that is not JSON
    SLOWxN      … sleep `slow_seconds` before answering (a client timeout)
    ALWAYS500   every request answers 500
    AUTH401     every request answers 401 (not worth retrying)
Otherwise it answers "answer to: <prompt>", or `reply(prompt)` when given one (a scripted judge). The
server counts requests per prompt, successful answers per prompt, the
largest number of requests in flight at once, and records Authorization headers and, per prompt, the
images a request carried as content parts (their data URLs, `images`).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_MARKER = re.compile(r"(FAIL429|FAIL500|BADJSON|SLOW)x(\d+)")


class FakeOpenAIServer:
    def __init__(self, slow_seconds: float = 2.0, latency: float = 0.0, reply: Callable[[str], str] | None = None) -> None:
        self.slow_seconds, self.latency, self.reply = slow_seconds, latency, reply
        self.requests: Counter[str] = Counter()
        self.successes: Counter[str] = Counter()
        self.authorization: set[str] = set()
        self.images: dict[str, list[list[str]]] = {}
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                content = body["messages"][-1]["content"]
                parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
                prompt = "".join(part.get("text", "") for part in parts if part.get("type") == "text")
                urls = [part["image_url"]["url"] for part in parts if part.get("type") == "image_url"]
                with server._lock:
                    if urls:
                        server.images.setdefault(prompt, []).append(urls)
                    server.requests[prompt] += 1
                    attempt = server.requests[prompt]
                    server.authorization.add(self.headers.get("Authorization", ""))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    server._respond(self, body, prompt, attempt)
                finally:
                    with server._lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}/v1"

    def __enter__(self) -> FakeOpenAIServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _respond(self, handler: BaseHTTPRequestHandler, body: dict, prompt: str, attempt: int) -> None:
        if self.latency:
            time.sleep(self.latency)
        for kind, count in _MARKER.findall(prompt):
            if attempt <= int(count):
                if kind == "FAIL429":
                    return self._send(handler, 429, {"error": {"message": "rate limited", "type": "rate_limit"}})
                if kind == "FAIL500":
                    return self._send(handler, 500, {"error": {"message": "boom", "type": "server_error"}})
                if kind == "BADJSON":
                    return self._send_raw(handler, 200, b"{this is not json")
                if kind == "SLOW":
                    time.sleep(self.slow_seconds)  # the client has timed out by now: no answer
                    return None
        if "AUTH401" in prompt:
            return self._send(handler, 401, {"error": {"message": "invalid api key", "type": "invalid_request_error"}})
        if "ALWAYS500" in prompt:
            return self._send(handler, 500, {"error": {"message": "always broken", "type": "server_error"}})
        with self._lock:
            self.successes[prompt] += 1
        answer = self.reply(prompt) if self.reply else f"answer to: {prompt}"
        self._send(
            handler,
            200,
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12},
            },
        )

    def _send(self, handler, status: int, payload: dict) -> None:
        self._send_raw(handler, status, json.dumps(payload).encode())

    @staticmethod
    def _send_raw(handler, status: int, data: bytes) -> None:
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            pass
