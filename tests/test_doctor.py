"""``sci-agent doctor`` in the service context: what would stop ``run``, judged as ``run`` would.

Store and spool folders are probed by creating a file (a mode check passes for root on a
file where a folder should be); the local endpoint by binding it; RAPL counters by
reading them, as another user (setpriv) since root reads a mode-000 file anyway.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import HttpConfig
from agent.doctor import rapl_lines, writable_dir
from agent.units.counter import UnitCounter
from agent.units.http_api import LocalApi
from tests.powercap_fixtures import build_powercap, package, subzone

REPO = Path(__file__).resolve().parent.parent
AGENT = [sys.executable, "-m", "agent"]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def config(folder: Path, extra: str = "", http: bool = False) -> Path:
    f = folder / "agent.toml"
    f.write_text(
        f'host = "doctor-host"\n[store]\npath = "{folder}/data/store.db"\n'
        f'[sensors]\nstate_dir = "{folder}/state"\n'
        f'[sensors.rapl]\nroot = "{folder}/no-powercap"\n[sensors.nvml]\nenabled = false\n'
        + ("" if http else "[http]\nenabled = false\n")
        + extra
    )
    return f


def doctor(cfg: Path, user: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(user or []), *AGENT, "--config", str(cfg), "doctor"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_a_file_where_the_store_folder_should_be_fails(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("not a folder")
    out = doctor(config(tmp_path))
    assert out.returncode == 1, out.stdout
    assert f"store:    FAILS  {tmp_path / 'data'} is not a directory" in out.stdout
    assert "but run cannot start here: see FAILS above" in out.stdout
    assert not (tmp_path / "data" / "store.db").exists()


def test_a_writable_store_folder_is_probed_and_left_clean(tmp_path: Path) -> None:
    out = doctor(config(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"store:    ok  {tmp_path / 'data' / 'store.db'} (will be created)" in out.stdout
    assert not (tmp_path / "data").exists()  # doctor creates neither the store nor its folder
    assert writable_dir(tmp_path) is None and os.listdir(tmp_path) == ["agent.toml"]


def test_an_unwritable_spool_folder_fails(tmp_path: Path) -> None:
    (tmp_path / "spool").write_text("a file")
    extra = (
        f'[spool]\ndir = "{tmp_path}/spool"\n[influxdb]\nenabled = true\n'
        'url = "http://127.0.0.1:9"\norg = "o"\nbucket = "b"\ntoken = "t"\ntimeout_s = 1\n'
    )
    cfg = config(tmp_path, extra)
    cfg.chmod(0o600)
    out = doctor(cfg)
    assert out.returncode == 1, out.stdout
    assert f"spool:    FAILS  {tmp_path / 'spool'} is not a directory" in out.stdout
    assert "influxdb: FAILS" in out.stdout  # unreachable: reported, not fatal (run spools)


def test_a_jsonl_file_in_an_unwritable_place_fails(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("a file")
    out = doctor(config(tmp_path, f'[jsonl]\npath = "{tmp_path}/out/intervals.jsonl"\n'))
    assert out.returncode == 1, out.stdout
    assert f"jsonl:    FAILS  {tmp_path / 'out'} is not a directory" in out.stdout


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield int(other.getsockname()[1])


def test_a_listen_port_in_use_by_another_program_fails(tmp_path: Path, taken_port: int) -> None:
    out = doctor(config(tmp_path, f'[http]\nlisten = "127.0.0.1:{taken_port}"\n', http=True))
    assert out.returncode == 1, out.stdout
    assert f"http:     FAILS  127.0.0.1:{taken_port} is in use by another program" in out.stdout
    assert f"ss -ltnp 'sport = :{taken_port}'" in out.stdout


def test_a_free_listen_port_is_bound_and_released(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    out = doctor(config(tmp_path, f'[http]\nlisten = "127.0.0.1:{port}"\n', http=True))
    assert out.returncode == 0, out.stdout
    assert f"http:     ok  127.0.0.1:{port} can be bound (and was released)" in out.stdout
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # released: free again


def test_an_agent_already_serving_there_is_recognised(tmp_path: Path) -> None:
    api = LocalApi(HttpConfig(listen="127.0.0.1:0"), UnitCounter({}))
    api.start()
    try:
        listen = f"127.0.0.1:{api.port}"
        out = doctor(config(tmp_path, f'[http]\nlisten = "{listen}"\n', http=True))
    finally:
        api.stop()
    assert out.returncode == 0, out.stdout
    assert f"http:     in use  {listen}: a sci-agent already serves there" in out.stdout
    assert "GET /healthz answers" in out.stdout and "another program" not in out.stdout


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder another user can reach (pytest's tmp_path is root-only)."""
    folder = Path(tempfile.mkdtemp(prefix="sci-agent-doctor-"))
    folder.chmod(0o1777)
    yield folder
    shutil.rmtree(folder)


def test_unreadable_rapl_counters_print_the_group_fix(open_dir: Path) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run doctor as another user")
    powercap = open_dir / "powercap"
    tree = build_powercap(powercap, [package(0), subzone(0, 0, "dram")])
    for entry in ("intel-rapl:0", "intel-rapl:0:0"):
        tree.counter(entry).chmod(0o000)
    cfg = config(open_dir)
    cfg.write_text(cfg.read_text().replace(f"{open_dir}/no-powercap", str(powercap)))
    cfg.chmod(0o644)
    out = doctor(cfg, NOBODY)
    assert out.returncode == 0, out.stdout + out.stderr  # run falls back to the model
    first = tree.counter("intel-rapl:0")
    assert f"rapl:     no  2 of 2 counters not readable by uid 65534 (nobody), e.g. {first}" in (
        out.stdout
    )
    assert "tmpfiles rule /usr/lib/tmpfiles.d/sci-agent.conf" in out.stdout
    assert "systemd-tmpfiles --create sci-agent.conf" in out.stdout
    assert "usermod -aG sci-agent nobody" in out.stdout
    assert "or:  grant CAP_DAC_READ_SEARCH" in out.stdout
    assert "cpu   model" in out.stdout
    # Root reads the same files: the check reads, as the sensor does, not mode bits.
    assert rapl_lines(str(powercap)) == ["rapl:     ok  2 counters readable by uid 0 (root)"]


def test_a_store_the_service_user_cannot_write_fails(open_dir: Path) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run doctor as another user")
    cfg = config(open_dir)
    cfg.chmod(0o644)
    store = open_dir / "data" / "store.db"
    store.parent.mkdir(mode=0o777)
    store.parent.chmod(0o777)
    store.write_bytes(b"")  # left by a manual run as root: 0644 root
    store.chmod(0o644)
    out = doctor(cfg, NOBODY)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"store:    FAILS  {store} is not writable by uid 65534 (nobody)" in out.stdout
    assert "user:     uid 65534 (nobody)" in out.stdout


def test_no_rapl_zones_adds_no_rapl_access_line(tmp_path: Path) -> None:
    assert rapl_lines(str(tmp_path / "absent")) == []
