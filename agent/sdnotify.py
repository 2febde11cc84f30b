"""systemd's notify protocol, spoken without a library: one datagram per message.

Under ``Type=notify`` systemd passes ``$NOTIFY_SOCKET``: a filesystem path, or an
abstract socket name when it starts with ``@``. Each message is ``KEY=VALUE`` lines
sent as one ``AF_UNIX`` datagram. Outside systemd the variable is unset and every
call is a no-op; a socket that is missing or broken is never an error either (the
agent measures with or without a supervisor): it is logged once, at debug level.

``$WATCHDOG_USEC`` asks for a ``WATCHDOG=1`` at least that often; we ping at half of
it, and only when ``$WATCHDOG_PID`` is unset or names this process.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("sci_agent.sdnotify")

ENV_SOCKET = "NOTIFY_SOCKET"
ENV_WATCHDOG_USEC = "WATCHDOG_USEC"
ENV_WATCHDOG_PID = "WATCHDOG_PID"


class Notifier:
    """Sends notify messages to ``$NOTIFY_SOCKET``; never raises."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        environ = os.environ if env is None else env
        self.address = _address(environ.get(ENV_SOCKET, ""))
        self._sock: socket.socket | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        """True when systemd gave us a socket to talk to."""
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send ``fields`` (``KEY=VALUE`` each) as one datagram; False when not delivered."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            if not self._failed:
                log.debug("sd_notify to %s failed: %s", os.fsdecode(self.address), exc)
            self._failed = True
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Start-up (or a reload) is done."""
        return self.send("READY=1", *_status(status))

    def reloading(self) -> bool:
        """A reload begins; systemd 253+ also wants the monotonic time of the request."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        """Stopping begins."""
        return self.send("STOPPING=1")

    def watchdog(self) -> bool:
        """Tell the watchdog the loop is alive."""
        return self.send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        """One line shown by ``systemctl status``."""
        return self.send(*_status(text))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_period_s(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``$WATCHDOG_USEC``), or None: no watchdog."""
    environ = os.environ if env is None else env
    owner = environ.get(ENV_WATCHDOG_PID, "").strip()
    if owner and owner != str(pid if pid is not None else os.getpid()):
        return None
    try:
        usec = int(environ.get(ENV_WATCHDOG_USEC, "0"))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


def _address(value: str) -> str | bytes | None:
    """The socket address in ``$NOTIFY_SOCKET``: a path, or ``@name`` for an abstract one."""
    if not value or value[0] not in "/@":
        return None  # unset, or not a unix socket (e.g. a vsock address we do not speak)
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def _status(text: str | None) -> list[str]:
    """``STATUS=`` field for ``text``, on one line."""
    if not text:
        return []
    return ["STATUS=" + " ".join(text.split())]
