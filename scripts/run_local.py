"""``make run``: the agent, its dashboard and a demo workload, started and stopped together.

    python scripts/run_local.py --config examples/local.toml [--demo]
    python scripts/run_local.py --config examples/local.toml --demo-only   # `make demo`

Reads the config for the real addresses (the dashboard on ``127.0.0.1:[dashboard] port``,
the local API on ``[http] listen``) and refuses at once, with one line, when either is
already taken. Then runs ``doctor``, starts the agent (``run --print``) and the dashboard,
waits until both answer, and prints the banner with those URLs. When the agent or the
dashboard exits, the other is stopped and this exits non-zero; Ctrl-C (SIGINT), SIGTERM or
SIGHUP stops everything (the demo first) and exits 0. The demo (``examples/demo_web.py``)
posts its units to the agent through ``SCI_AGENT_URL``, set from ``[http] listen``.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's packages, installed or not

from agent import config as config_mod  # noqa: E402
from agent.config import Config, ConfigError  # noqa: E402

DASHBOARD_HOST = "127.0.0.1"  # where `sci-agent dashboard` listens without --host
DEMO = ROOT / "examples" / "demo_web.py"
START_TIMEOUT_S = float(os.environ.get("SCI_AGENT_START_TIMEOUT_S", "90"))
STOP_TIMEOUT_S = 15.0
PREFIX = "make run:"


@dataclass(frozen=True)
class Endpoint:
    """A TCP address one part serves, and the config key that sets it."""

    what: str
    host: str
    port: int
    key: str

    @property
    def url(self) -> str:
        """The URL a browser or client on this machine uses (a wildcard means loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"


def endpoints(cfg: Config) -> list[Endpoint]:
    """The dashboard's address and, when enabled, the local API's."""
    found = [Endpoint("dashboard", DASHBOARD_HOST, cfg.dashboard.port, "[dashboard] port")]
    if cfg.http.enabled:
        host, _, port = cfg.http.listen.rpartition(":")
        found.append(Endpoint("local API", host.strip("[]"), int(port), "[http] listen"))
    return found


def port_problem(end: Endpoint) -> str | None:
    """None when ``end`` can be bound now; else why not (taken, not an address here…)."""
    try:
        infos = socket.getaddrinfo(end.host or None, end.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"not an address of this machine ({exc.strerror})"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "already in use by another program"
            return exc.strerror or str(exc)
    return None


def answers(end: Endpoint) -> bool:
    """Whether something accepts connections at ``end`` now."""
    host = end.url.split("//", 1)[1].rsplit(":", 1)[0].strip("[]")
    try:
        with socket.create_connection((host, end.port), timeout=1):
            return True
    except OSError:
        return False


def say(text: str) -> None:
    print(f"{PREFIX} {text}", file=sys.stderr, flush=True)


def agent_cmd(config: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "agent", "--config", config, *args]


def child_env() -> dict[str, str]:
    """Our environment, with this checkout first on ``PYTHONPATH`` (as the venv installs it)."""
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


def demo_env(cfg: Config) -> dict[str, str]:
    """The environment of the demo: ``SCI_AGENT_URL`` (and token) from the config."""
    env = child_env()
    api = [e for e in endpoints(cfg) if e.what == "local API"]
    if api:
        env["SCI_AGENT_URL"] = api[0].url
    if cfg.http.token:
        env["SCI_AGENT_TOKEN"] = cfg.http.token
    return env


class Launcher:
    """The children of one ``make run`` and their fate."""

    def __init__(self) -> None:
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping = False

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        # its own session: Ctrl-C reaches this launcher only, which stops the parts in order
        self.children[name] = subprocess.Popen(
            list(argv), env=env or child_env(), start_new_session=True
        )

    def exited(self) -> tuple[str, int] | None:
        """The first child (agent or dashboard) that has exited, and its status."""
        for name in ("agent", "dashboard"):
            child = self.children.get(name)
            if child is not None and child.poll() is not None:
                return name, child.returncode
        return None

    def stop(self) -> None:
        """SIGTERM every child still running (the demo first, so its last units land), wait
        for them, SIGKILL what lingers."""
        order = sorted(self.children.items(), key=lambda item: item[0] != "demo")
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for name, child in order:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
            if name == "demo":
                self._reap(child, deadline)
        for _, child in order:
            self._reap(child, deadline)

    @staticmethod
    def _reap(child: subprocess.Popen[bytes], deadline: float) -> None:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:  # its whole group: the dashboard's streamlit too
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()

    def wait_ready(self, ends: list[Endpoint]) -> tuple[str, int] | None:
        """Wait until every endpoint answers; a child that exits first is returned."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.stopping:
            gone = self.exited()
            if gone is not None or all(answers(e) for e in ends):
                return gone
            if time.monotonic() > deadline:
                late = ", ".join(e.what for e in ends if not answers(e))
                say(f"the {late} did not answer within {START_TIMEOUT_S:g} s; stopping everything")
                return ("timeout", 1)
            time.sleep(0.25)
        return None

    def watch(self) -> tuple[str, int] | None:
        """Wait until a child exits (returned) or a signal asks to stop (None)."""
        while not self.stopping:
            gone = self.exited()
            if gone is not None:
                return gone
            demo = self.children.get("demo")
            if demo is not None and demo.poll() is not None:
                say(f"the demo workload exited (status {demo.returncode}); the rest runs on")
                del self.children["demo"]
            time.sleep(0.25)
        return None


def banner(config: str, cfg: Config, ends: list[Endpoint], demo: bool) -> str:
    urls = {e.what: e.url for e in ends}
    lines = [
        f"sci-agent is running ({config}; Ctrl-C stops everything):",
        f"  dashboard   {urls['dashboard']}",
    ]
    api = urls.get("local API")
    if api:
        lines.append(f"  local API   {api}/v1/units  (sci.client reads SCI_AGENT_URL={api})")
    else:
        lines.append("  local API   disabled ([http] enabled = false)")
    if cfg.store.enabled:
        lines.append(
            f"  store       {os.path.abspath(cfg.store.path)}, one line per interval below"
        )
    if demo:
        lines.append(
            "  demo        examples/demo_web.py counts requests as app 'web': its SCI per request"
            " shows within a minute (make run DEMO=0 leaves it out)"
        )
    lines.append(f"  one interval in full: sci-agent --config {config} once")
    return "\n".join(lines)


def run(config: str, cfg: Config, with_demo: bool) -> int:
    ends = endpoints(cfg)
    for end in ends:
        problem = port_problem(end)
        if problem is not None:
            say(
                f"cannot start: the {end.what}'s address {end.host}:{end.port} is {problem};"
                f" stop that program or set {end.key} in {config}"
            )
            return 1
    subprocess.run(agent_cmd(config, "doctor"), env=child_env(), check=False)
    launcher = Launcher()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        launcher.stopping = True

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    launcher.start("agent", agent_cmd(config, "run", "--print"))
    launcher.start("dashboard", agent_cmd(config, "dashboard"))
    gone = launcher.wait_ready(ends)
    if gone is None and not launcher.stopping:
        if with_demo:
            launcher.start("demo", [sys.executable, str(DEMO)], env=demo_env(cfg))
        print(banner(config, cfg, ends, with_demo), file=sys.stderr, flush=True)
        gone = launcher.watch()
    if gone is not None and gone[0] != "timeout":
        name, status = gone
        others = " and ".join(n for n in launcher.children if n != name) or "nothing"
        say(f"the {name} exited (status {status}; its message is above); stopping the {others}")
    launcher.stop()
    if gone is None:
        say("stopped")
        return 0
    return gone[1] or 1


def demo_only(config: str, cfg: Config) -> int:
    """``make demo``: the demo workload alone, against an agent that is already running."""
    api = [e for e in endpoints(cfg) if e.what == "local API"]
    if not api:
        say(f"the demo needs the agent's local API: [http] enabled = false in {config}")
        return 1
    if not answers(api[0]):
        say(f"no agent answers at {api[0].url}: start it first (make run DEMO=0)")
        return 1
    print(f"demo: counting requests as app 'web' at SCI_AGENT_URL={api[0].url}", file=sys.stderr)
    return subprocess.run([sys.executable, str(DEMO)], env=demo_env(cfg), check=False).returncode


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run the agent and its dashboard together")
    parser.add_argument("--config", default="examples/local.toml")
    parser.add_argument("--demo", action="store_true", help="also run examples/demo_web.py")
    parser.add_argument("--demo-only", action="store_true", help="only the demo workload")
    args = parser.parse_args(argv)
    try:
        cfg = config_mod.load(args.config)
    except ConfigError as exc:
        say(f"config error: {exc}")
        return 2
    if args.demo_only:
        return demo_only(args.config, cfg)
    return run(args.config, cfg, args.demo)


if __name__ == "__main__":
    sys.exit(main())
