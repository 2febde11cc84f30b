"""File descriptors for sampling, which must go on when everything else has taken them.

The agent shares its open-file limit with whatever it serves: slow connections on
the local endpoint once took all 1,024 descriptors of systemd's default limit and
opening ``/proc/stat`` failed with EMFILE. Sampling needs few descriptors, so:

- the files read every cycle whatever runs (``/proc/stat``) stay open and are read
  with ``os.pread`` (``agent/procfs.py``);
- ``raise_soft_limit`` lifts the soft ``RLIMIT_NOFILE`` to the hard limit at start
  (systemd's default is 1,024 soft, 524,288 hard), as Go programs do;
- ``FdReserve`` holds a few descriptors open on ``/dev/null``. When a cycle fails for
  lack of descriptors, the loop releases them, measures again at once and takes them
  back. The per-process reads of ``/proc/PID/stat`` need a new descriptor each, so a
  cycle can still fail while the limit is exhausted; it then fails cleanly, before
  any sampling state advanced, and the next cycle covers its window.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("sci_agent.fdreserve")

#: Descriptors held back for sampling. A cycle needs one or two at a time, but a
#: connection waiting to be accepted may take one as soon as the reserve is released.
DEFAULT_RESERVE = 16
#: The soft limit is raised at most this far: nothing in the agent needs more.
SOFT_LIMIT_CAP = 65_536

_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE})


def is_fd_exhaustion(exc: BaseException) -> bool:
    """True when ``exc``, or an exception it was raised from, is EMFILE or ENFILE."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _EXHAUSTED:
            return True
        current = current.__cause__ or current.__context__
    return False


def raise_soft_limit(cap: int = SOFT_LIMIT_CAP) -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` towards the hard limit; return (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:
            log.debug("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
            return soft, soft
        return soft, target
    return soft, soft


class FdReserve:
    """A few descriptors held on ``/dev/null``, released when sampling runs short."""

    def __init__(self, size: int = DEFAULT_RESERVE) -> None:
        self.size = size
        self._fds: list[int] = []

    @property
    def held(self) -> int:
        """How many descriptors the reserve holds now."""
        return len(self._fds)

    def take(self) -> int:
        """Top the reserve up to ``size`` (as far as the limit allows); return how many it holds."""
        while len(self._fds) < self.size:
            try:
                self._fds.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
            except OSError:
                break  # still exhausted: the next take() tries again
        return len(self._fds)

    def release(self) -> int:
        """Close every held descriptor, making room under the limit; return how many."""
        fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)
        return len(fds)

    @contextmanager
    def released(self) -> Iterator[int]:
        """Release the reserve for the ``with`` block, then take it back."""
        count = self.release()
        try:
            yield count
        finally:
            self.take()

    def close(self) -> None:
        self.release()
