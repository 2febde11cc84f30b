"""A fake hosted-LLM server for tests and examples: OpenAI and Anthropic shapes, loopback.

``POST /v1/chat/completions`` answers like OpenAI's Chat Completions (``usage.
prompt_tokens``/``completion_tokens``), ``POST /v1/messages`` like Anthropic's Messages
(``usage.input_tokens``/``output_tokens``). Input tokens are the words of the messages,
output tokens ``output_tokens`` (or the request's ``max_tokens`` when lower); each
answer takes ``delay_s``. ``requests`` counts what it served, so a test can see that a
cache hit never reached it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeProvider:
    """The server; ``url`` is its base (``http://127.0.0.1:PORT``), port 0 picks a free one."""

    def __init__(self, output_tokens: int = 120, delay_s: float = 0.0) -> None:
        self.output_tokens = output_tokens
        self.delay_s = delay_s
        self.requests = 0
        self._lock = threading.Lock()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                answer = provider.answer(self.path, body)
                data = json.dumps(answer).encode()
                self.send_response(200 if "error" not in answer else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeProvider:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """The JSON answer to one request."""
        with self._lock:
            self.requests += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        words = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        limit = body.get("max_tokens")
        out = min(self.output_tokens, limit) if isinstance(limit, int) else self.output_tokens
        model = str(body.get("model", ""))
        text = " ".join(["token"] * out)
        if path == "/v1/chat/completions":
            return {
                "id": f"chatcmpl-{self.requests}",
                "object": "chat.completion",
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": words, "completion_tokens": out},
            }
        if path == "/v1/messages":
            return {
                "id": f"msg_{self.requests}",
                "type": "message",
                "model": model,
                "content": [{"type": "text", "text": text}],
                "usage": {"input_tokens": words, "output_tokens": out},
            }
        return {"error": f"no such path: {path}"}


@contextmanager
def fake_provider(output_tokens: int = 120, delay_s: float = 0.0) -> Iterator[FakeProvider]:
    """A started ``FakeProvider``, stopped on exit."""
    server = FakeProvider(output_tokens, delay_s).start()
    try:
        yield server
    finally:
        server.stop()
