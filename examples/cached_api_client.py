"""An API client with and without a response cache: same answers, fewer calls, less carbon.

A local HTTP API (standard library, port 0) answers "how many primes below N?" by
counting them, a little work per call. A batch of questions with many repeats is
answered twice: by a naive client that calls the API for every question, and by one
that keeps each answer. The server runs in this process, so its work is measured with
the client's (as a local service's would be; a remote API's energy is on its own host).

    PYTHONPATH=. python examples/cached_api_client.py
"""

from __future__ import annotations

import json
import random
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sci import Tracker


class PrimeApi(BaseHTTPRequestHandler):
    """``GET /primes?below=N`` → ``{"below": N, "count": …}``."""

    calls = 0

    def do_GET(self) -> None:
        below = int(self.path.partition("below=")[2])
        sieve = bytearray([1]) * below
        sieve[:2] = b"\0\0"
        for i in range(2, int(below**0.5) + 1):
            if sieve[i]:
                for j in range(i * i, below, i):  # a slow sieve: work worth caching
                    sieve[j] = 0
        body = json.dumps({"below": below, "count": sum(sieve)}).encode()
        PrimeApi.calls += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class Client:
    def __init__(self, base_url: str, cache: bool) -> None:
        self.base_url = base_url
        self.cache: dict[int, int] | None = {} if cache else None

    def primes_below(self, n: int) -> int:
        if self.cache is not None and n in self.cache:
            return self.cache[n]
        with urllib.request.urlopen(f"{self.base_url}/primes?below={n}", timeout=10) as r:
            count = int(json.load(r)["count"])
        if self.cache is not None:
            self.cache[n] = count
        return count


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), PrimeApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base_url = f"http://127.0.0.1:{server.server_address[1]}"
    rng = random.Random(5)
    distinct = [100_000 + 20_000 * i for i in range(8)]
    questions = [rng.choice(distinct) for _ in range(80)]

    runs = {}
    for name, cache in (("naive client", False), ("cached client", True)):
        PrimeApi.calls = 0
        client = Client(base_url, cache)
        with Tracker(app="api-client", units=len(questions), unit="answer") as t:
            answers = [client.primes_below(n) for n in questions]
        runs[name] = (answers, PrimeApi.calls, t)
    server.shutdown()

    print(f"{len(questions)} questions, {len(set(questions))} distinct\n")
    print(
        f"{'client':<14} {'API calls':>9} {'cpu s':>6} {'energy J':>9} {'mg CO2e':>8}"
        f" {'µg per answer':>13}"
    )
    for name, (_, calls, t) in runs.items():
        print(
            f"{name:<14} {calls:>9} {t.cpu_s:>6.2f} {t.energy_joules:>9.2f}"
            f" {t.carbon_g * 1000:>8.3f} {t.sci() * 1e6:>13.2f}"
        )
    (naive, _, tn), (cached, _, tc) = runs.values()
    print(f"\nsame answers: {naive == cached}")
    print(
        f"grams per answered question: {tn.sci():.2e} naive, {tc.sci():.2e} cached"
        f" ({tc.sci() / tn.sci():.0%} of the naive client's)"
    )


if __name__ == "__main__":
    main()
