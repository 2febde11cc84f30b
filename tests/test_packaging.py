"""The deployment files: the systemd unit verifies and scores, sysusers and tmpfiles apply.

The unit is checked with the real ``systemd-analyze`` (verify, and the offline security
score), the sysusers and tmpfiles rules are applied by the real ``systemd-sysusers`` and
``systemd-tmpfiles`` to a throwaway root, and the example configs load.
"""

from __future__ import annotations

import ctypes
import fnmatch
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agent import config

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy/systemd/sci-agent.service"
SYSUSERS = ROOT / "deploy/sysusers/sci-agent.conf"
TMPFILES = ROOT / "deploy/tmpfiles/sci-agent.conf"
EXAMPLE = ROOT / "deploy/config.toml"
EXEC_START = "/opt/sci-agent/venv/bin/sci-agent"
MAX_EXPOSURE = 1.5


def _need(command: str) -> str:
    found = shutil.which(command)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{command} is missing: install Debian's systemd package")
        pytest.skip(f"{command} is missing: apt-get install systemd")
    return found


def _settings(text: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit file, in order, under its key (comments dropped)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")) or "=" not in line:
            continue
        key, value = line.split("=", 1)
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def _one(settings: dict[str, list[str]], key: str) -> str:
    values = settings.get(key, [])
    assert len(values) == 1, f"{key}= should be set once, found {values}"
    return values[0]


@pytest.fixture(scope="module")
def unit() -> dict[str, list[str]]:
    return _settings(UNIT.read_text())


def _runnable_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointed at this interpreter, so verify finds the binary."""
    text = UNIT.read_text()
    assert EXEC_START in text
    target = tmp_path / "sci-agent.service"
    target.write_text(text.replace(EXEC_START, f"{sys.executable} -m agent"))
    return target


def _verify_problems(unit_file: Path) -> list[str]:
    """What ``systemd-analyze verify`` reports about a unit (warnings included)."""
    analyze = _need("systemd-analyze")
    out = subprocess.run(
        [analyze, "verify", "--man=no", str(unit_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Offline (a container, a build host) the ordering targets may not exist: not ours.
    problems = [
        line
        for line in (out.stdout + out.stderr).splitlines()
        if line.strip() and "network-online.target" not in line and "tmpfiles-setup" not in line
    ]
    if out.returncode != 0:
        problems.append(f"exit status {out.returncode}")
    return problems


def test_unit_file_verifies(tmp_path: Path) -> None:
    assert _verify_problems(_runnable_copy(tmp_path)) == []


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key and a missing binary are reported."""
    target = _runnable_copy(tmp_path)
    target.write_text(target.read_text().replace("NoNewPrivileges=", "NoNewPrivilege="))
    assert any("Unknown key 'NoNewPrivilege'" in p for p in _verify_problems(target))
    target.write_text(UNIT.read_text())
    assert any(EXEC_START in p for p in _verify_problems(target))


def _exposure(analyze: str, unit_file: Path) -> tuple[float, str]:
    out = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(unit_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    text = out.stdout + out.stderr
    found = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", text)
    assert found, text
    return float(found.group(1)), text


def test_unit_exposure_is_at_most_one_and_a_half(tmp_path: Path) -> None:
    analyze = _need("systemd-analyze")
    score, text = _exposure(analyze, _runnable_copy(tmp_path))
    assert score <= MAX_EXPOSURE, text
    # The old unit's capability would cost the score: the figure is not a constant.
    granted = tmp_path / "granted" / "sci-agent.service"
    granted.parent.mkdir()
    granted.write_text(
        _runnable_copy(tmp_path)
        .read_text()
        .replace("CapabilityBoundingSet=\n", "CapabilityBoundingSet=CAP_DAC_READ_SEARCH\n")
    )
    assert _exposure(analyze, granted)[0] > score


def test_unit_speaks_notify_with_a_watchdog_and_reloads_with_sighup(
    unit: dict[str, list[str]],
) -> None:
    assert _one(unit, "Type") == "notify"
    assert _one(unit, "NotifyAccess") == "main"
    watchdog = _one(unit, "WatchdogSec")
    assert re.fullmatch(r"\d+s", watchdog) and int(watchdog[:-1]) >= 2 * 5, watchdog
    assert _one(unit, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert _one(unit, "ExecStart") == f"{EXEC_START} --config /etc/sci-agent/config.toml run"
    assert _one(unit, "Restart") == "on-failure"
    assert _one(unit, "TimeoutStopSec").endswith("s")


def test_unit_runs_without_root_or_any_capability(unit: dict[str, list[str]]) -> None:
    assert _one(unit, "User") == "sci-agent" and _one(unit, "Group") == "sci-agent"
    assert "DynamicUser" not in unit  # the tmpfiles rule needs a stable group
    assert _one(unit, "CapabilityBoundingSet") == ""
    assert _one(unit, "AmbientCapabilities") == ""
    assert _one(unit, "NoNewPrivileges") == "yes"
    # Only the tmpfiles line runs privileged ("+"), and it is systemd's own tool.
    privileged = [v for k, vs in unit.items() if k.startswith("Exec") for v in vs if "+" in v[:2]]
    assert privileged == ["-+/usr/bin/systemd-tmpfiles --create sci-agent.conf"]


def test_unit_keeps_every_process_and_proc_file_visible(unit: dict[str, list[str]]) -> None:
    """hidepid would hide other users' /proc/PID; subset=pid would hide /proc/stat."""
    assert unit.get("ProtectProc", ["default"]) == ["default"]
    assert unit.get("ProcSubset", ["all"]) == ["all"]
    assert "PrivateUsers" not in unit  # would show every other user's files as nobody


def test_unit_lets_nvml_reach_the_nvidia_devices(unit: dict[str, list[str]]) -> None:
    binds = " ".join(unit.get("BindPaths", [])).split()
    assert {"-/dev/nvidiactl", "-/dev/nvidia0", "-/dev/nvidia-caps"} <= set(binds)
    assert _one(unit, "DevicePolicy") == "closed"
    assert _one(unit, "DeviceAllow") == "char-nvidia* rw"


def test_unit_keeps_the_open_file_limit_and_footprint(unit: dict[str, list[str]]) -> None:
    assert int(_one(unit, "LimitNOFILE")) == 65536
    assert _one(unit, "MemoryMax") == "256M" and _one(unit, "Nice") == "10"
    assert _one(unit, "StateDirectory") == "sci-agent"
    assert _one(unit, "WorkingDirectory") == "/var/lib/sci-agent"


def test_sysusers_creates_the_user_and_group(tmp_path: Path) -> None:
    sysusers = _need("systemd-sysusers")
    (tmp_path / "etc").mkdir()
    subprocess.run(
        [sysusers, "--root", str(tmp_path), str(SYSUSERS)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    users = [line.split(":") for line in (tmp_path / "etc/passwd").read_text().splitlines()]
    groups = [line.split(":") for line in (tmp_path / "etc/group").read_text().splitlines()]
    (user,) = [u for u in users if u[0] == "sci-agent"]
    (group,) = [g for g in groups if g[0] == "sci-agent"]
    assert 0 < int(user[2]) < 1000, "a system user"
    assert user[3] == group[2], "its primary group is sci-agent"
    assert user[5] == "/var/lib/sci-agent" and user[6].endswith("nologin")


def _powercap_tree(root: Path) -> list[Path]:
    """Root-only counters like Linux ≥ 5.10 has them: Intel/AMD zones, a subzone, MMIO."""
    counters = []
    for zone in ("intel-rapl:0", "intel-rapl:0:0", "intel-rapl:1", "intel-rapl-mmio:0"):
        d = root / "sys/class/powercap" / zone
        d.mkdir(parents=True)
        (d / "max_energy_range_uj").write_text("262143328850\n")
        counter = d / "energy_uj"
        counter.write_text("123456\n")
        counter.chmod(0o400)
        counters.append(counter)
    return counters


def test_tmpfiles_rule_matches_every_zone_and_subzone() -> None:
    lines = [
        line.split()
        for line in TMPFILES.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    rule = ["z", "/sys/class/powercap/*/energy_uj", "0440", "root", "sci-agent", "-", "-"]
    assert lines == [rule]
    pattern = lines[0][1]
    for zone in ("intel-rapl:0", "intel-rapl:0:0", "intel-rapl-mmio:0", "intel-rapl:1"):
        assert fnmatch.fnmatch(f"/sys/class/powercap/{zone}/energy_uj", pattern)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's group needs root")
def test_tmpfiles_gives_the_group_read_access_to_the_counters(tmp_path: Path) -> None:
    sysusers, tmpfiles = _need("systemd-sysusers"), _need("systemd-tmpfiles")
    (tmp_path / "etc").mkdir()
    counters = _powercap_tree(tmp_path)
    subprocess.run([sysusers, "--root", str(tmp_path), str(SYSUSERS)], check=True, timeout=60)
    gid = next(
        int(g.split(":")[2])
        for g in (tmp_path / "etc/group").read_text().splitlines()
        if g.startswith("sci-agent:")
    )
    subprocess.run(
        [tmpfiles, "--create", "--root", str(tmp_path), str(TMPFILES)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    for counter in counters:
        st = counter.stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o440, 0, gid), counter
    ranges = tmp_path / "sys/class/powercap/intel-rapl:0/max_energy_range_uj"
    assert stat.S_IMODE(ranges.stat().st_mode) == 0o644, "only energy_uj is touched"


def test_the_example_config_loads_with_absolute_state_paths() -> None:
    cfg = config.load(EXAMPLE)
    assert cfg.interval_s == 5
    state = "/var/lib/sci-agent/"
    assert cfg.store.path.startswith(state)
    assert cfg.spool.dir.startswith(state)
    assert cfg.sensors.state_dir.startswith(state)


@pytest.mark.parametrize("name", ["examples/local.toml", "deploy/config.toml"])
def test_example_configs_load(name: str) -> None:
    cfg = config.load(ROOT / name)
    assert cfg.interval_s == 5


PR_GET_MDWE = 66  # PR_SET_MDWE is 65, PR_MDWE_REFUSE_EXEC_GAIN 1

# Runs in a child: turn on the kernel's memory-deny-write-execute (the same rule as the
# unit's MemoryDenyWriteExecute=, inherited across exec) and exec the agent.
_MDWE_EXEC = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:
    sys.exit(77)
os.execv(sys.executable, [sys.executable, "-m", "agent", *sys.argv[1:]])
"""


def _mdwe_supported() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(PR_GET_MDWE, 0, 0, 0, 0) >= 0)


@pytest.mark.skipif(not _mdwe_supported(), reason="PR_SET_MDWE needs Linux 6.3 or later")
def test_the_agent_runs_under_memory_deny_write_execute(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f'host = "mdwe"\n[store]\npath = "{tmp_path}/store.db"\n'
        f'[sensors]\nstate_dir = "{tmp_path}/state"\n[http]\nenabled = false\n'
    )
    once = ["--config", str(cfg), "once", "--interval", "0.3", "--json"]
    out = subprocess.run(
        [sys.executable, "-c", _MDWE_EXEC, *once],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["host"] == "mdwe"
