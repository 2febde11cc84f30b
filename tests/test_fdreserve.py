"""Descriptors for sampling: the soft limit raised at start, a reserve, EMFILE spotted."""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys

from agent.fdreserve import FdReserve, is_fd_exhaustion


def test_run_raises_the_soft_open_file_limit_to_the_hard_one() -> None:
    """systemd's default is 1,024 soft / 524,288 hard; here 64 soft / 4,096 hard."""

    def low_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 4096))

    code = (
        "import resource\n"
        "from agent.fdreserve import raise_soft_limit\n"
        "print(*raise_soft_limit(), *resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=low_soft_limit,
    )
    assert out.stdout.split() == ["64", "4096", "4096", "4096"]


def test_the_reserve_is_released_for_a_block_and_taken_back() -> None:
    reserve = FdReserve(3)
    before = len(os.listdir("/proc/self/fd"))
    try:
        assert reserve.take() == 3 and reserve.held == 3
        assert len(os.listdir("/proc/self/fd")) == before + 3
        with reserve.released() as freed:
            assert freed == 3 and reserve.held == 0
            assert len(os.listdir("/proc/self/fd")) == before
        assert reserve.held == 3
    finally:
        reserve.close()
    assert len(os.listdir("/proc/self/fd")) == before


def test_fd_exhaustion_is_recognised_through_exception_chains() -> None:
    emfile = OSError(errno.EMFILE, os.strerror(errno.EMFILE))
    enfile = OSError(errno.ENFILE, os.strerror(errno.ENFILE))
    try:
        try:
            raise emfile
        except OSError:
            raise ValueError("scan failed")  # noqa: B904 (implicit __context__ on purpose)
    except ValueError as chained:
        assert is_fd_exhaustion(chained)
    assert is_fd_exhaustion(enfile)
    assert not is_fd_exhaustion(OSError(errno.ENOENT, "gone"))
    assert not is_fd_exhaustion(ValueError("intensity must be >= 0"))
