"""A small tmpfs to fill up: the real "disk full", mounted only where it can be.

Mounting needs root (CAP_SYS_ADMIN). Elsewhere the tests that need it are skipped
with the reason, except in CI (``CI=true``), where a missing capability fails them:
CI must run them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the disk-full tests, but {reason}")
    pytest.skip(reason)


@contextlib.contextmanager
def small_tmpfs(directory: Path, size: str = "3m") -> Iterator[Path]:
    """Mount a tmpfs of ``size`` on ``directory`` for the block; unmount after."""
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        _unavailable("mounting a tmpfs (a small disk to fill) needs root")
    if shutil.which("mount") is None:
        _unavailable("no mount command")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        _unavailable(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def remount(directory: Path, mode: str) -> None:
    """Remount the tmpfs on ``directory`` ``ro`` or ``rw``."""
    subprocess.run(["mount", "-o", f"remount,{mode}", str(directory)], check=True)


def fill(directory: Path) -> Path:
    """Write a file until the file system is full; returns it (delete it to free)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    return filler
