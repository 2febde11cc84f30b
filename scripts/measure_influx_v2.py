"""Does the InfluxDB v2 write path need ``influxdb-client``? Measure it both ways.

Against a real VictoriaMetrics (``/api/v2/write``, started here on a free loopback port),
each path runs in a fresh interpreter: the time to import it and build a writer, the
RSS that adds (over ``agent.config`` and ``exporters.delivery``, which either needs), and
the throughput of gzip-compressed batches of line protocol.

- ``influxdb-client``: the official package as the sink used it (``SYNCHRONOUS``,
  ``retries=False``, gzip); it must be installed for this run only.
- ``httpclient``: ``exporters.influxdb_v2.InfluxV2Sink`` (``agent.httpclient``).

    PYTHONPATH=. python scripts/measure_influx_v2.py [--runs 5] [--batches 100] [--lines 5000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHILD = r"""
import json, sys, time
def rss_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
url, batches, n_lines, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
import agent.config, exporters.delivery  # what either sink needs anyway: not counted
before = rss_kib()
start = time.perf_counter()
if path == "influxdb-client":
    from influxdb_client.client.influxdb_client import InfluxDBClient
    from influxdb_client.client.write_api import SYNCHRONOUS
    from influxdb_client.domain.write_precision import WritePrecision
    client = InfluxDBClient(url=url, token="t", org="o", timeout=5000, enable_gzip=True,
                            retries=False)
    api = client.write_api(write_options=SYNCHRONOUS)
    def send(lines):
        api.write(bucket="b", org="o", record=lines, write_precision=WritePrecision.MS)
else:
    from agent.config import InfluxConfig
    from exporters.influxdb_v2 import InfluxV2Sink
    sink = InfluxV2Sink(InfluxConfig(url=url, token="t", org="o", bucket="b", timeout_s=5.0))
    send = sink.send
ready_s = time.perf_counter() - start
ready_rss = rss_kib() - before
t0 = int(time.time() * 1000) - 3_600_000
batch = [f"bench_{path.replace('-', '_')},host=h{i % 50},app=a{i % 300} joules={i * 1.25},"
         f"watts={i % 97}.5 {t0 + i}" for i in range(n_lines)]
send(batch)  # warm: the first connection
start = time.perf_counter()
for _ in range(batches):
    send(batch)
elapsed = time.perf_counter() - start
print(json.dumps({"ready_s": ready_s, "ready_rss_kib": ready_rss,
                  "lines_per_s": batches * n_lines / elapsed, "rss_kib": rss_kib() - before}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_victoria_metrics(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("victoria-metrics")
    if binary is None:
        sys.exit("victoria-metrics is not installed (apt-get install victoria-metrics)")
    port = free_port()
    command = [binary, f"-storageDataPath={workdir}", f"-httpListenAddr=127.0.0.1:{port}"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):
                return process, url
        except OSError:
            time.sleep(0.1)
    process.kill()
    sys.exit("victoria-metrics did not start")


def run(url: str, path: str, args: argparse.Namespace) -> dict[str, float]:
    """The median of ``args.runs`` fresh interpreters for ``path``."""
    results = []
    for _ in range(args.runs):
        out = subprocess.run(
            [sys.executable, "-c", CHILD, url, str(args.batches), str(args.lines), path],
            check=True,
            capture_output=True,
            text=True,
        )
        results.append(json.loads(out.stdout))
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--lines", type=int, default=5000, help="lines per batch")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        process, url = start_victoria_metrics(Path(workdir))
        try:
            rows = {path: run(url, path, args) for path in ("influxdb-client", "httpclient")}
        finally:
            process.terminate()
            process.wait(10)
    print(f"{args.runs} runs (median), {args.batches} batches of {args.lines} lines, gzip\n")
    print("| v2 write path | import + build | RSS added | RSS after writes | lines/s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for path, r in rows.items():
        print(
            f"| {path} | {r['ready_s'] * 1000:.0f} ms | {r['ready_rss_kib'] / 1024:.1f} MiB"
            f" | {r['rss_kib'] / 1024:.1f} MiB | {r['lines_per_s']:,.0f} |"
        )


if __name__ == "__main__":
    main()
