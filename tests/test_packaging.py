"""The deployment files: the systemd unit verifies and scores, sysusers and tmpfiles apply.

The unit is checked with the real ``systemd-analyze`` (verify, and the offline security
score), the sysusers and tmpfiles rules are applied by the real ``systemd-sysusers`` and
``systemd-tmpfiles`` to a throwaway root, and the example configs load. The wheel and
sdist are built by the real setuptools backend, and the built wheel, installed into a
fresh venv, runs ``sci-agent install-service`` with the deploy files it carries.
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
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from agent import config

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy/systemd/sci-agent.service"
SYSUSERS = ROOT / "deploy/sysusers/sci-agent.conf"
TMPFILES = ROOT / "deploy/tmpfiles/sci-agent.conf"
EXAMPLE = ROOT / "deploy/config.toml"
LICENSE = ROOT / "LICENSE"
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


# -- the built distributions ---------------------------------------------------------------

_BUILD = """
import sys
from setuptools import build_meta
out = sys.argv[1]  # build_meta rewrites sys.argv
print("wheel:", build_meta.build_wheel(out))
print("sdist:", build_meta.build_sdist(out))
"""
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "var", "build", "dist", "*.egg-info", "__pycache__", "*.pyc", "*.db*",
    ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis", "test-artifacts",
)  # fmt: skip


class Built:
    """A wheel and an sdist built from a copy of this checkout, and what the build printed."""

    def __init__(self, out: Path, log: str) -> None:
        (self.wheel,) = out.glob("*.whl")
        (self.sdist,) = out.glob("*.tar.gz")
        self.log = log
        self.wheel_names = zipfile.ZipFile(self.wheel).namelist()

    def wheel_file(self, name: str) -> bytes:
        return zipfile.ZipFile(self.wheel).read(name)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """Build as pip would, with this interpreter's setuptools (no network, no isolation)."""
    tmp = tmp_path_factory.mktemp("build")
    src, out = tmp / "src", tmp / "out"
    shutil.copytree(ROOT, src, ignore=_NOT_SOURCE, symlinks=True)
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", _BUILD, str(out)],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, f"the build failed (setuptools>=77 is in [test]):\n{log[-3000:]}"
    return Built(out, log)


def test_the_build_prints_no_license_deprecation(built: Built) -> None:
    """``project.license`` as a table made setuptools print its deprecation block."""
    warned = [line for line in built.log.splitlines() if "Deprecat" in line or "license" in line]
    assert not any("SetuptoolsDeprecationWarning" in line for line in warned), warned
    assert not any("project.license" in line for line in warned), warned


def test_the_wheel_and_sdist_carry_the_apache_license(built: Built) -> None:
    text = LICENSE.read_text()
    assert text.lstrip().startswith("Apache License\n") and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    dist_info = next(n.split("/")[0] for n in built.wheel_names if ".dist-info/" in n)
    assert built.wheel_file(f"{dist_info}/licenses/LICENSE") == LICENSE.read_bytes()
    metadata = built.wheel_file(f"{dist_info}/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    with tarfile.open(built.sdist) as sdist:
        top = sdist.getnames()[0].split("/")[0]
        member = sdist.extractfile(f"{top}/LICENSE")
        assert member is not None and member.read() == LICENSE.read_bytes()


def _deploy_files() -> dict[str, bytes]:
    deploy = ROOT / "deploy"
    return {
        str(p.relative_to(deploy)): p.read_bytes()
        for p in sorted(deploy.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_the_wheel_ships_every_deploy_file_from_the_one_copy(built: Built) -> None:
    """agent/deploy is the repository's deploy/ (a link, not a copy that could drift)."""
    assert (ROOT / "agent/deploy").is_symlink()
    assert (ROOT / "agent/deploy").resolve() == (ROOT / "deploy").resolve()
    files = _deploy_files()
    for must in (UNIT, SYSUSERS, TMPFILES, EXAMPLE, ROOT / "deploy/prometheus/sci-agent.rules.yml"):
        assert str(must.relative_to(ROOT / "deploy")) in files
    shipped = {n.removeprefix("agent/deploy/") for n in built.wheel_names}
    assert set(files) <= shipped, set(files) - shipped
    for name, data in files.items():
        assert built.wheel_file(f"agent/deploy/{name}") == data, name
    with tarfile.open(built.sdist) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    assert {f"agent/deploy/{name}" for name in files} <= names


def test_the_wheel_ships_only_the_four_packages(built: Built) -> None:
    """devtools/ (servers and the NVML double for tests and benchmarks), tests/ and bench/
    stay out of the wheel: pyproject's package discovery lists the four packages."""
    tops = {n.split("/", 1)[0] for n in built.wheel_names if "/" in n}
    tops = {t for t in tops if not t.endswith(".dist-info")}
    assert tops == {"agent", "sci", "exporters", "dashboard"}


@pytest.fixture(scope="module")
def wheel_venv(built: Built, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The built wheel in a fresh venv at ROOT/opt/sci-agent/venv (where the unit runs it).

    Its dependencies come from this interpreter's site-packages (``.pth`` lines, which do
    not run that folder's own ``.pth`` files, so an editable sci-agent there stays out),
    so nothing is downloaded and the sci-agent code comes only from the wheel.
    """
    root = tmp_path_factory.mktemp("target")
    venv = root / "opt/sci-agent/venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-deps", "--no-index", str(built.wheel)],
        check=True,
        timeout=300,
    )  # fmt: skip
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    ours = [p for p in sys.path if p.endswith("-packages")] or [sysconfig.get_paths()["purelib"]]
    (site / "zz-test-deps.pth").write_text("".join(f"{p}\n" for p in ours))
    return root, site


def _installed_agent(venv_root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``sci-agent`` from the wheel's venv, with nothing of this checkout on its path."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [str(venv_root / "opt/sci-agent/venv/bin/sci-agent"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=venv_root,
        env=env,
    )


def test_install_service_from_the_wheel_finds_its_deploy_files(
    wheel_venv: tuple[Path, Path], tmp_path: Path
) -> None:
    root, site = wheel_venv
    helped = _installed_agent(root, "install-service", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "--dry-run" in helped.stdout and "--source" in helped.stdout
    venv = root / "opt/sci-agent/venv"
    out = _installed_agent(root, "install-service", "--root", str(root), "--dry-run")
    assert out.returncode == 0, out.stderr
    packaged = site / "agent" / "deploy"
    lines = out.stdout.splitlines()
    assert f"deploy files from the installed package: {packaged}" in lines
    unit_target = root / "etc/systemd/system/sci-agent.service"
    assert f"would have created {unit_target} from {packaged}/systemd/sci-agent.service" in lines
    assert f"would create {root}/etc/sci-agent/config.toml from {packaged}/config.toml" in lines
    # Run from /opt/sci-agent/venv itself, it keeps that venv and installs nothing.
    assert f"kept existing {venv}" in lines
    assert f"unchanged sci-agent[influxdb]==0.1.0 in {venv} (the installer runs from it)" in lines
    # Elsewhere (pipx, another venv) it installs the same release into /opt/sci-agent/venv.
    other = tmp_path / "other"
    out = _installed_agent(root, "install-service", "--root", str(other), "--dry-run")
    assert out.returncode == 0, out.stderr
    pip = f"{other}/opt/sci-agent/venv/bin/pip install --upgrade 'sci-agent[influxdb]==0.1.0'"
    assert f"would run: {pip}" in out.stdout.splitlines()


def test_install_service_from_the_wheel_installs_the_shipped_files(
    wheel_venv: tuple[Path, Path],
) -> None:
    if os.geteuid() != 0:
        pytest.skip("systemd-sysusers --root and chown need root")
    _need("systemd-sysusers")
    root, _ = wheel_venv
    out = _installed_agent(root, "install-service", "--root", str(root), "--no-start")
    assert out.returncode == 0, out.stderr
    assert (root / "etc/systemd/system/sci-agent.service").read_bytes() == UNIT.read_bytes()
    assert (root / "usr/lib/sysusers.d/sci-agent.conf").read_bytes() == SYSUSERS.read_bytes()
    assert (root / "usr/lib/tmpfiles.d/sci-agent.conf").read_bytes() == TMPFILES.read_bytes()
    assert (root / "etc/sci-agent/config.toml").read_bytes() == EXAMPLE.read_bytes()
    again = _installed_agent(root, "install-service", "--root", str(root), "--no-start")
    assert again.returncode == 0, again.stderr
    assert "nothing changed: sci-agent is installed as before" in again.stdout


def _shell_lines(markdown: str) -> list[list[str]]:
    """The lines of each ```sh block of a Markdown file, comments dropped."""
    blocks = re.findall(r"^```sh\n(.*?)^```", markdown, flags=re.S | re.M)
    return [[line.split("  #")[0].strip() for line in block.splitlines()] for block in blocks]


def test_deployment_doc_installs_into_the_venv_the_installer_uses() -> None:
    """No ``sudo pip install`` (PEP 668 refuses it): a venv at the unit's path, the installer."""
    from agent import install

    blocks = _shell_lines((ROOT / "docs/deployment.md").read_text())
    venv = f"/{install.VENV}"
    pips = [line for block in blocks for line in block if "pip install" in line]
    assert pips, "the doc shows how to install the agent"
    for line in pips:
        assert line.startswith(f"sudo {venv}/bin/pip install "), line
    release = [
        "sudo python3 -m venv /opt/sci-agent/venv",
        f"sudo {venv}/bin/pip install 'sci-agent[{install.EXTRAS}]'",
        f"sudo {venv}/bin/sci-agent install-service",
    ]
    assert any(block[: len(release)] == release for block in blocks), blocks
    assert f"{venv}/bin/sci-agent" == EXEC_START
