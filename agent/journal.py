"""Log lines journald reads well: a ``<N>`` priority prefix, no timestamp, one line each.

journald stamps every line itself and parses a leading ``<N>`` (syslog priority) as
the entry's level; each newline starts a new entry, so a traceback is folded into
its event's line (`` | `` between its lines). Outside systemd the usual format with
a timestamp is kept.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TextIO

#: Python level → syslog priority (emerg 0 … debug 7).
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}
PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JournalFormatter(logging.Formatter):
    """``<N>name: message``, the traceback on the same line."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)  # message, then exc_info and stack on new lines
        return f"<{priority(record.levelno)}>" + " | ".join(
            line for line in text.splitlines() if line.strip()
        )


def priority(levelno: int) -> int:
    """The syslog priority of a Python log level (custom levels round down)."""
    for level in sorted(_PRIORITY, reverse=True):
        if levelno >= level:
            return _PRIORITY[level]
    return 7


def under_journald(stream: TextIO | None = None, env: Mapping[str, str] | None = None) -> bool:
    """True when ``stream`` goes to the journal.

    ``$JOURNAL_STREAM`` is ``DEVICE:INODE`` of the journal's socket, and decides when
    set: a child of a service whose stderr was redirected inherits it, and no longer
    matches. Without it, ``$INVOCATION_ID`` (set for every systemd service) decides.
    """
    environ = os.environ if env is None else env
    expected = environ.get("JOURNAL_STREAM", "")
    if not expected:
        return bool(environ.get("INVOCATION_ID"))
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


def setup_logging(level: str, stream: TextIO | None = None) -> None:
    """Log to ``stream`` (stderr): journald's form under systemd, else timestamped lines."""
    out = stream or sys.stderr
    handler = logging.StreamHandler(out)
    if under_journald(out):
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter(PLAIN_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])  # no-op if already set up
