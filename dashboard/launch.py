"""``sci-agent dashboard``: run the Streamlit app as a child process.

``python -m streamlit run dashboard/app.py --server.address HOST --server.port N
--server.headless true --browser.gatherUsageStats false --client.toolbarMode viewer
-- --config PATH``; SIGTERM and SIGINT are passed on, and the child's exit status is
returned. ``viewer`` hides Streamlit's "Deploy" button and developer menu.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

from agent.config import ConfigError

APP = Path(__file__).resolve().parent / "app.py"
DEFAULT_HOST = "127.0.0.1"
INSTALL_HINT = "pip install 'sci-agent[dashboard]'  (streamlit, plotly, pandas)"


def command(config_path: str | None, port: int, host: str) -> list[str]:
    """The streamlit command line (the config path is made absolute)."""
    argv = [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.address", host,
        "--server.port", str(port),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "viewer",  # no "Deploy" button, no developer menu
    ]  # fmt: skip
    if config_path:
        argv += ["--", "--config", str(Path(config_path).resolve())]
    return argv


def main(config_path: str | None = None, port: int | None = None, host: str | None = None) -> int:
    """Start the dashboard and wait for it; the port defaults to ``[dashboard] port``."""
    missing = [m for m in ("streamlit", "plotly", "pandas") if importlib.util.find_spec(m) is None]
    if missing:
        print(
            f"sci-agent: the dashboard needs {', '.join(missing)}: {INSTALL_HINT}", file=sys.stderr
        )
        return 1
    from dashboard import config as dash_config

    try:
        settings = dash_config.load(config_path)
    except ConfigError as exc:
        print(f"sci-agent: config error: {exc}", file=sys.stderr)
        return 2
    chosen_port = port if port is not None else settings.dashboard.port
    if not 0 < chosen_port < 65536:
        print(f"sci-agent: --port must be 1-65535, got {chosen_port}", file=sys.stderr)
        return 2
    argv = command(settings.source_path, chosen_port, host or DEFAULT_HOST)
    print(
        f"sci-agent: dashboard on http://{host or DEFAULT_HOST}:{chosen_port} "
        f"(reading {settings.dashboard.source})",
        file=sys.stderr,
        flush=True,
    )
    child = subprocess.Popen(
        argv, env={**os.environ, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    )

    def forward(signum: int, _frame: FrameType | None) -> None:
        child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
