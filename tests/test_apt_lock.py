"""``make test``'s Debian install waits for another apt process's dpkg lock, and says so."""

from __future__ import annotations

import fcntl
import os
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WAIT = ROOT / "scripts" / "wait-for-dpkg-lock.sh"
INSTALL = ROOT / "scripts" / "install-debian-deps.sh"


def wait_for_lock(locks: list[Path], timeout_s: int) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SCI_AGENT_DPKG_LOCKS": " ".join(map(str, locks)),
        "SCI_AGENT_APT_LOCK_TIMEOUT": str(timeout_s),
    }
    return subprocess.run([str(WAIT)], capture_output=True, text=True, timeout=60, env=env)


def test_a_free_lock_passes_at_once_and_says_nothing(tmp_path: Path) -> None:
    lock = tmp_path / "lock-frontend"
    lock.write_text("")
    out = wait_for_lock([lock, tmp_path / "absent"], timeout_s=5)
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")
    assert not (tmp_path / "absent").exists()  # probing creates no lock file


def test_a_held_lock_is_waited_for_until_released(tmp_path: Path) -> None:
    lock = tmp_path / "lock-frontend"
    lock.write_text("")
    with lock.open("r+") as held:
        fcntl.lockf(held, fcntl.LOCK_EX)  # as dpkg and apt hold it
        release = threading.Timer(2.0, lambda: fcntl.lockf(held, fcntl.LOCK_UN))
        release.start()
        started = time.monotonic()
        out = wait_for_lock([lock], timeout_s=30)
        release.join()
    assert out.returncode == 0, out.stderr
    assert time.monotonic() - started >= 1.5
    assert "waiting for another apt process (dpkg lock) to finish, up to 30 s" in out.stdout
    assert "the dpkg lock is free after" in out.stdout


def test_a_lock_held_past_the_timeout_fails_with_one_clear_line(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    lock.write_text("")
    with lock.open("r+") as held:
        fcntl.lockf(held, fcntl.LOCK_EX)
        out = wait_for_lock([lock], timeout_s=1)
    assert out.returncode == 1
    assert "waiting for another apt process (dpkg lock)" in out.stdout
    assert out.stderr.startswith("error: another apt process still holds the dpkg lock after 1 s")


def test_the_installer_waits_before_apt_get_and_apt_get_waits_too() -> None:
    text = INSTALL.read_text()
    assert text.index("wait-for-dpkg-lock.sh") < text.index("apt-get -o")
    assert 'apt-get -o DPkg::Lock::Timeout="$wait_s" update' in text
    assert 'apt-get -o DPkg::Lock::Timeout="$wait_s" install' in text
