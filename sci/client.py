"""Report functional units to the local sci-agent from an application.

    from sci.client import count

    count("web", "request")          # one request served
    count("llm", "token", n=412)     # tokens generated

    from sci.client import call      # a remote AI call the request made
    call("web", "openai", "gpt-4o-mini", input_tokens=812, output_tokens=96, latency_s=1.4)

``count`` only adds to an in-memory sum under a lock; a daemon thread sends the sums
to the agent (``POST /v1/units``, one JSON array per flush) every second; ``call``
does the same for remote AI calls (``POST /v1/calls``, summed per app, provider,
model and cache hit, see docs/ai-calls.md). Nothing
here ever raises into the application: while the agent is down, slow or answering
errors the sums are kept and retried on the next flush, and each distinct problem
is logged once at WARNING on the ``sci_agent.client`` logger.

Delivery is at least once: a request that timed out may have been counted by the
agent and is sent again. ``SCI_AGENT_URL`` and ``SCI_AGENT_TOKEN`` set the agent's
address and bearer token when the constructor is not given them.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import threading
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable
from typing import Any

log = logging.getLogger("sci_agent.client")

DEFAULT_URL = "http://127.0.0.1:9475"
ENV_URL = "SCI_AGENT_URL"
ENV_TOKEN = "SCI_AGENT_TOKEN"
UNITS_PATH = "/v1/units"
CALLS_PATH = "/v1/calls"
_MAX_WARNINGS = 100

Key = tuple[str, str]  # (app, unit)


class UnitsClient:
    """Batches unit counts in memory and ships them to the agent in the background.

    Subclasses batch other reports (``CallsClient``) by overriding ``path`` and the
    ``_merge``/``_size``/``_encode_item``/``_label`` hooks.

    ``max_pending`` bounds the distinct (app, unit) pairs held while the agent is
    unreachable; counts for a new pair beyond it are dropped and added to
    ``dropped``. Reports the agent refuses for good (unknown app, wrong unit) are
    dropped too and added to ``rejected``. Both are in units, not calls.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        flush_interval_s: float = 1.0,
        max_pending: int = 100_000,
        timeout_s: float = 2.0,
        max_body_bytes: int = 65536,
    ) -> None:
        base = url or os.environ.get(ENV_URL) or DEFAULT_URL
        self.url = base.rstrip("/") + self.path
        self.token = token if token is not None else os.environ.get(ENV_TOKEN) or None
        self.flush_interval_s = flush_interval_s
        self.max_pending = max_pending
        self.timeout_s = timeout_s
        self.max_body_bytes = max_body_bytes
        self.dropped = 0.0
        self.rejected = 0.0
        self.sent = 0.0
        self._pending: dict[Any, Any] = {}
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._warned: set[str] = set()
        self._failing = False
        # The agent is local: never route its traffic through an HTTP(S)_PROXY.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        _clients.add(self)

    def count(self, app: str, unit: str, n: int | float = 1) -> None:
        """Add ``n`` units; never blocks on the network and never raises."""
        try:
            self._count(app, unit, n)
        except Exception as exc:  # e.g. no new thread at interpreter shutdown
            self._warn(f"count() failed: {type(exc).__name__}: {exc}", key="count-failed")

    def _count(self, app: str, unit: str, n: int | float) -> None:
        numeric = isinstance(n, int | float) and not isinstance(n, bool)
        try:
            value = float(n) if numeric else math.nan
        except OverflowError:
            value = math.inf
        if not (isinstance(app, str) and isinstance(unit, str) and 0 <= value < math.inf):
            self._warn(
                f"ignored count({app!r:.60}, {unit!r:.60}, {n!r:.40}): app and unit must be"
                " strings and n a finite number >= 0",
                key="bad-arguments",
            )
            return
        self._add((app, unit), value)

    def _add(self, key: Any, value: Any) -> None:
        """Add ``value`` to the pending sums under ``key``; start the sender if needed."""
        full = False
        with self._lock:
            if key in self._pending:
                self._pending[key] = self._merge(self._pending[key], value)
            elif len(self._pending) < self.max_pending:
                self._pending[key] = value
            else:
                self.dropped += self._size(value)
                full = True
            if self._thread is None and not self._closed:
                self._start()
        if full:
            self._warn(f"more than {self.max_pending} reports pending; dropping counts")

    # -- what a report is (overridden for other kinds of report) ------------------

    path = UNITS_PATH

    def _merge(self, old: Any, new: Any) -> Any:
        return float(old + new)

    def _size(self, value: Any) -> float:
        """How much ``value`` counts in ``sent``, ``dropped`` and ``rejected``."""
        return float(value)

    def _encode_item(self, key: Any, value: Any) -> str:
        return _item(key, value)

    def _label(self, key: Any) -> str:
        return f"{key[0]}/{key[1]}"

    def pending(self) -> dict[Any, Any]:
        """Counts not yet delivered, per (app, unit)."""
        with self._lock:
            return dict(self._pending)

    def flush(self) -> bool:
        """Send what is pending now; True when everything was delivered. Never raises."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, {}
            if not batch:
                return True
            try:
                undelivered = self._send(list(batch.items()))
            except Exception as exc:  # a bug here must not reach the application
                self._warn(f"flush failed: {type(exc).__name__}: {exc}")
                undelivered = list(batch.items())
            if undelivered:
                self._requeue(undelivered)
            return not undelivered

    def close(self) -> None:
        """Stop the background thread and flush once more; later counts wait for flush()."""
        self._closed = True
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.timeout_s + 1)
        self.flush()

    # -- internals --------------------------------------------------------------

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sci-agent-client", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            try:
                self.flush()
            except Exception:  # pragma: no cover - flush already catches; keep the thread
                log.debug("flush failed", exc_info=True)

    def _send(self, items: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
        """POST ``items`` in chunks; return those to retry later."""
        queue = _chunks(items, self.max_body_bytes, self._encode_item)
        while queue:
            chunk = queue.pop(0)
            status, answer = self._post(chunk)
            if 200 <= status < 300:
                self.sent += sum(self._size(v) for _, v in chunk)
                self._recovered()
                continue
            if status in (400, 422):  # refused for good: drop the bad report, resend the rest
                index = answer.get("index") if isinstance(answer, dict) else None
                error = answer.get("error") if isinstance(answer, dict) else None
                bad = (
                    [chunk[index]] if isinstance(index, int) and 0 <= index < len(chunk) else chunk
                )
                self.rejected += sum(self._size(v) for _, v in bad)
                pairs = ", ".join(self._label(k) for k, _ in bad[:5])
                self._warn(f"agent refused {pairs}: {error or status}; those counts are dropped")
                rest = [item for item in chunk if item not in bad]
                if rest:
                    queue.insert(0, rest)
                continue
            if status == 413:  # the agent's body limit is lower than ours: halve the chunk
                if len(chunk) > 1:
                    half = len(chunk) // 2
                    queue[:0] = [chunk[:half], chunk[half:]]
                    continue
                self._fail(f"agent at {self.url} refuses a single report as too large (413)")
            return [item for part in [chunk, *queue] for item in part]
        return []

    def _post(self, chunk: list[tuple[Any, Any]]) -> tuple[int, object]:
        """One POST; the HTTP status (0 when none came) and the decoded JSON answer."""
        body = ("[" + ",".join(self._encode_item(k, v) for k, v in chunk) + "]").encode()
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = _latin1_header(f"Bearer {self.token}")
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout_s) as reply:
                status, raw = reply.status, reply.read(65536)
        except urllib.error.HTTPError as exc:
            try:
                raw = exc.read(65536)
            except Exception:
                raw = b""
            finally:
                exc.close()
            status = exc.code
            if status not in (400, 413, 422):
                self._fail(f"agent at {self.url} answered {status}: {_error_text(raw)}")
        except Exception as exc:  # URLError, timeouts, resets, bad URL…
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            self._fail(f"agent at {self.url} unreachable: {reason}")
            return 0, None
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, None

    def _requeue(self, items: list[tuple[Any, Any]]) -> None:
        lost = 0.0
        with self._lock:
            for key, value in items:
                if key in self._pending:
                    self._pending[key] = self._merge(self._pending[key], value)
                elif len(self._pending) < self.max_pending:
                    self._pending[key] = value
                else:
                    lost += self._size(value)
            self.dropped += lost
        if lost:
            self._warn(f"more than {self.max_pending} reports pending; dropping counts")

    def _fail(self, message: str) -> None:
        """A delivery failure: the counts stay pending."""
        self._failing = True
        self._warn(f"{message} (counts are kept and retried)")

    def _warn(self, message: str, key: str | None = None) -> None:
        """Log ``message`` at WARNING the first time its ``key`` (or text) is seen."""
        key = key or message
        with self._lock:
            if key in self._warned or len(self._warned) >= _MAX_WARNINGS:
                return
            self._warned.add(key)
        log.warning("%s", message)

    def _recovered(self) -> None:
        if self._failing:
            self._failing = False
            log.info("agent at %s reachable again", self.url)

    def _after_fork(self) -> None:
        """In a forked child: forget the parent's counts and thread, keep the settings."""
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._pending = {}
        self._thread = None
        self._stop = threading.Event()


CallKey = tuple[str, str, str, bool]  # (app, provider, model, cached)
#: (calls, input tokens, output tokens, latency seconds, calls that had a latency)
CallValue = tuple[float, float, float, float, float]


class CallsClient(UnitsClient):
    """Batches remote AI calls (``POST /v1/calls``) like ``UnitsClient`` batches units.

    Calls to the same (app, provider, model, cached) are summed between flushes and
    sent as one report with ``count``; ``sent``, ``dropped`` and ``rejected`` are in
    calls.
    """

    path = CALLS_PATH

    def call(
        self,
        app: str,
        provider: str,
        model: str,
        input_tokens: int | float = 0,
        output_tokens: int | float = 0,
        latency_s: float | None = None,
        cached: bool = False,
    ) -> None:
        """Record one call; never blocks on the network and never raises."""
        try:
            self._call(app, provider, model, input_tokens, output_tokens, latency_s, cached)
        except Exception as exc:
            self._warn(f"call() failed: {type(exc).__name__}: {exc}", key="call-failed")

    def _call(
        self,
        app: str,
        provider: str,
        model: str,
        input_tokens: int | float,
        output_tokens: int | float,
        latency_s: float | None,
        cached: bool,
    ) -> None:
        numbers = [input_tokens, output_tokens, 0 if latency_s is None else latency_s]
        names_ok = all(isinstance(x, str) and x for x in (app, provider, model))
        if not (names_ok and isinstance(cached, bool) and all(map(_finite, numbers))):
            self._warn(
                f"ignored call({app!r:.60}, {provider!r:.40}, {model!r:.60}, ...): app, provider"
                " and model must be non-empty strings, tokens and latency finite numbers >= 0",
                key="bad-call-arguments",
            )
            return
        timed = 0.0 if latency_s is None else 1.0
        value = (1.0, float(input_tokens), float(output_tokens), float(numbers[2]), timed)
        self._add((app, provider, model, cached), value)

    def _merge(self, old: Any, new: Any) -> Any:
        return tuple(a + b for a, b in zip(old, new, strict=True))

    def _size(self, value: Any) -> float:
        return float(value[0])

    def _label(self, key: Any) -> str:
        return f"{key[0]}/{key[1]}/{key[2]}"

    def _encode_item(self, key: Any, value: Any) -> str:
        app, provider, model, cached = key
        count, tokens_in, tokens_out, latency, timed = value
        item: dict[str, object] = {
            "app": app,
            "provider": provider,
            "model": model,
            "input_tokens": _plain(tokens_in),
            "output_tokens": _plain(tokens_out),
            "cached": cached,
            "count": _plain(count),
        }
        if timed == count:  # the agent reads latency_s as every call's; else leave it out
            item["latency_s"] = latency
        return json.dumps(item, separators=(",", ":"))


def _finite(value: object) -> bool:
    """A number (not a bool) that is finite and >= 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return 0 <= float(value) < math.inf
    except OverflowError:
        return False


def _plain(value: float) -> int | float:
    return int(value) if value.is_integer() else value


def _latin1_header(value: str) -> str:
    """A header value http.client can send: a token outside latin-1 goes as its UTF-8 bytes."""
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8").decode("latin-1")
    return value


def _item(key: Key, value: float) -> str:
    count: int | float = int(value) if value.is_integer() else value
    return json.dumps({"app": key[0], "unit": key[1], "count": count}, separators=(",", ":"))


def _chunks(
    items: list[tuple[Any, Any]], max_bytes: int, encode: Callable[[Any, Any], str] = _item
) -> list[list[tuple[Any, Any]]]:
    """Split ``items`` so that each JSON array fits in ``max_bytes``."""
    chunks: list[list[tuple[Any, Any]]] = []
    current: list[tuple[Any, Any]] = []
    size = 2
    for key, value in items:
        length = len(encode(key, value).encode()) + 1
        if current and size + length > max_bytes:
            chunks.append(current)
            current, size = [], 2
        current.append((key, value))
        size += length
    if current:
        chunks.append(current)
    return chunks


def _error_text(raw: bytes) -> str:
    try:
        answer = json.loads(raw)
    except ValueError:
        return raw[:200].decode("utf-8", "replace") or "(no body)"
    if isinstance(answer, dict) and isinstance(answer.get("error"), str):
        return str(answer["error"])
    return str(answer)[:200]


_clients: weakref.WeakSet[UnitsClient] = weakref.WeakSet()
_default: UnitsClient | None = None
_default_lock = threading.Lock()


def default_client() -> UnitsClient:
    """The process-wide client used by ``count``, created on first use."""
    global _default
    client = _default
    if client is None:
        with _default_lock:
            if _default is None:
                _default = UnitsClient()
            client = _default
    return client


def count(app: str, unit: str, n: int | float = 1) -> None:
    """Count ``n`` units for ``app`` with the default client; never raises."""
    default_client().count(app, unit, n)


def flush() -> bool:
    """Flush the default clients now; True when everything was delivered."""
    units = default_client().flush()
    return (_calls.flush() if _calls is not None else True) and units


_calls: CallsClient | None = None


def default_calls_client() -> CallsClient:
    """The process-wide client used by ``call``, created on first use."""
    global _calls
    client = _calls
    if client is None:
        with _default_lock:
            if _calls is None:
                _calls = CallsClient()
            client = _calls
    return client


def call(
    app: str,
    provider: str,
    model: str,
    input_tokens: int | float = 0,
    output_tokens: int | float = 0,
    latency_s: float | None = None,
    cached: bool = False,
) -> None:
    """Record one remote AI call of ``app`` with the default client; never raises.

    ``cached=True`` for an answer served from a cache (no remote energy); ``latency_s``
    is the request's duration, which EcoLogits uses to bound the generation time.
    """
    default_calls_client().call(
        app, provider, model, input_tokens, output_tokens, latency_s, cached
    )


def _close_all() -> None:
    for client in list(_clients):
        client.close()


def _reset_in_child() -> None:
    global _default_lock
    _default_lock = threading.Lock()
    for client in list(_clients):
        client._after_fork()


atexit.register(_close_all)
os.register_at_fork(after_in_child=_reset_in_child)
