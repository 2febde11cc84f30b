"""A tiny web-like workload, so the first dashboard shows an SCI per request.

``make run`` starts it beside the agent (``make run DEMO=0`` leaves it out; ``make demo``
runs it alone against a running agent). Each "request" does a little CPU work and is
counted with ``sci.client.count("web", "request")``; ``examples/local.toml`` names this
process ``web`` (``cmdline = "demo_web\\.py"``) with ``unit = "request"``, so within a
minute the agent reports the grams of CO2e per request of ``web``.

The client posts to ``$SCI_AGENT_URL`` (default ``http://127.0.0.1:9475``, the agent's
``[http] listen``) with ``$SCI_AGENT_TOKEN`` when the agent needs one.

    python examples/demo_web.py --rate 20
"""

from __future__ import annotations

import argparse
import signal
import time
from types import FrameType

from sci.client import count, flush

APP, UNIT = "web", "request"


def handle_request(work: int) -> int:
    """The work of one request: a little arithmetic, about a millisecond per 10,000."""
    return sum(i * i for i in range(work))


def serve(rate: float, work: int, seconds: float | None) -> int:
    """Serve ``rate`` requests per second until SIGTERM/SIGINT (or ``seconds``); the count."""
    stopping = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    start = next_at = time.monotonic()
    served = 0
    while not stopping and (seconds is None or time.monotonic() - start < seconds):
        handle_request(work)
        count(APP, UNIT)
        served += 1
        next_at += 1 / rate
        time.sleep(max(0.0, next_at - time.monotonic()))
    flush()
    return served


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20, help="requests per second (20)")
    parser.add_argument("--work", type=int, default=20_000, help="loop steps per request")
    parser.add_argument("--seconds", type=float, help="stop after this long (default: never)")
    args = parser.parse_args()
    if not args.rate > 0:
        parser.error("--rate must be greater than 0")
    served = serve(args.rate, args.work, args.seconds)
    print(f"demo_web: served {served} requests as app {APP!r}", flush=True)


if __name__ == "__main__":
    main()
