"""``sci-agent install-service`` into a throwaway root, from a source with stand-in deploy files.

The real ``systemd-sysusers --root`` runs; the venv is created with ``--no-pip`` so the
tests install no packages (the pip step itself is shown by ``--dry-run``).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agent import install

REPO = Path(__file__).resolve().parent.parent
AGENT = [sys.executable, "-m", "agent"]

UNIT = """[Unit]
Description=stand-in
[Service]
Type=notify
User=sci-agent
ExecStart=/opt/sci-agent/venv/bin/sci-agent --config /etc/sci-agent/config.toml run
[Install]
WantedBy=multi-user.target
"""


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A checkout with stand-ins for the deploy files."""
    src = tmp_path / "src"
    for name, text in {
        install.UNIT_SOURCE: UNIT,
        install.SYSUSERS_SOURCE: 'u sci-agent - "sci-agent" /var/lib/sci-agent\n',
        install.TMPFILES_SOURCE: "z /sys/class/powercap/*/energy_uj 0440 root sci-agent\n",
        install.CONFIG_SOURCE: "# example\ninterval_s = 5\n",
        "pyproject.toml": '[project]\nname = "sci-agent"\n',
    }.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(text)
    return src


def _need_sysusers() -> None:
    if shutil.which("systemd-sysusers") is None:
        pytest.skip("systemd-sysusers is missing: apt-get install systemd")
    if os.geteuid() != 0:
        pytest.skip("systemd-sysusers --root and chown need root")


def installer(
    root: Path, source: Path, *extra: str, user: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [*AGENT, "install-service", "--root", str(root), "--source", str(source)]
    return subprocess.run(
        [*(user or []), *argv, "--no-start", "--no-pip", *extra],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_install_lays_out_files_with_their_modes_and_owners(tmp_path: Path, source: Path) -> None:
    _need_sysusers()
    root = tmp_path / "root"
    out = installer(root, source)
    assert out.returncode == 0, out.stderr
    unit = root / install.UNIT_TARGET
    assert unit.read_text() == UNIT and mode(unit) == 0o644
    for target, src in (
        (install.SYSUSERS_TARGET, install.SYSUSERS_SOURCE),
        (install.TMPFILES_TARGET, install.TMPFILES_SOURCE),
    ):
        assert (root / target).read_bytes() == (source / src).read_bytes()
        assert mode(root / target) == 0o644
    assert (root / install.VENV / "bin" / "python").exists()
    # systemd-sysusers really ran in the tree: the user exists there, not on this host.
    uid = install._account(root, "passwd", "sci-agent")
    gid = install._account(root, "group", "sci-agent")
    assert uid is not None and gid is not None
    config = root / install.CONFIG_TARGET
    assert config.read_text() == "# example\ninterval_s = 5\n"
    assert mode(config) == 0o600 and (config.stat().st_uid, config.stat().st_gid) == (uid, gid)
    lines = out.stdout.splitlines()
    assert f"created {root / install.VENV}" in lines
    assert f"created {config} (mode 0600, owner sci-agent: it may hold secrets)" in lines
    assert any(line.startswith("ran systemd-sysusers --root=") for line in lines)
    tmpfiles = "systemd-tmpfiles --create /usr/lib/tmpfiles.d/sci-agent.conf"
    assert f"skipped (under --root; applied at boot): {tmpfiles}" in lines
    assert (
        "skipped (under --root): run systemctl daemon-reload && "
        "systemctl enable --now sci-agent.service"
    ) in lines
    assert "nothing changed" not in out.stdout


def test_second_install_changes_nothing_and_keeps_the_edited_config(
    tmp_path: Path, source: Path
) -> None:
    _need_sysusers()
    root = tmp_path / "root"
    assert installer(root, source).returncode == 0
    config = root / install.CONFIG_TARGET
    config.write_text('interval_s = 10\n[influxdb]\ntoken = "secret"\n')
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    out = installer(root, source)
    assert out.returncode == 0, out.stderr
    assert config.read_text() == 'interval_s = 10\n[influxdb]\ntoken = "secret"\n'
    assert f"kept existing {config}" in out.stdout
    assert f"unchanged {root / install.UNIT_TARGET}" in out.stdout
    assert "nothing changed: sci-agent is installed as before" in out.stdout
    assert "ran " not in out.stdout  # systemd-sysusers not re-run either
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == before
    # A changed unit in the source is an update, said so.
    (source / install.UNIT_SOURCE).write_text(UNIT.replace("stand-in", "v2"))
    out = installer(root, source)
    assert f"updated {root / install.UNIT_TARGET} (mode 0644)" in out.stdout
    assert "nothing changed" not in out.stdout


def test_uninstall_keeps_data_and_purge_removes_it(tmp_path: Path, source: Path) -> None:
    _need_sysusers()
    root = tmp_path / "root"
    assert installer(root, source).returncode == 0
    store = root / install.STATE_DIR / "sci-agent.db"
    store.parent.mkdir(parents=True)
    store.write_bytes(b"data")
    out = installer(root, source, "--uninstall")
    assert out.returncode == 0, out.stderr
    for gone in (install.UNIT_TARGET, install.VENV, install.TMPFILES_TARGET):
        assert not (root / gone).exists(), gone
    assert not (root / install.SYSUSERS_TARGET).exists()
    assert not (root / install.PREFIX).exists()
    assert store.read_bytes() == b"data" and (root / install.CONFIG_TARGET).is_file()
    assert f"kept {root / install.STATE_DIR} (--purge removes it)" in out.stdout
    assert f"removed {root / install.UNIT_TARGET}" in out.stdout
    again = installer(root, source, "--uninstall")
    assert "nothing changed: sci-agent is not installed" in again.stdout
    out = installer(root, source, "--uninstall", "--purge")
    assert out.returncode == 0, out.stderr
    assert not (root / install.STATE_DIR).exists() and not (root / install.CONFIG_DIR).exists()
    assert f"removed {root / install.CONFIG_DIR} (--purge)" in out.stdout


def test_dry_run_shows_every_step_and_changes_nothing(tmp_path: Path, source: Path) -> None:
    root = tmp_path / "root"
    out = subprocess.run(
        [*AGENT, "install-service", "--root", str(root), "--source", str(source), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 0, out.stderr
    assert not root.exists()
    assert f"would create {root / install.VENV} (python -m venv)" in out.stdout
    assert f"pip install --upgrade '{source}[influxdb]'" in out.stdout
    assert f"would run: systemd-sysusers --root={root}" in out.stdout
    assert f"would create {root / install.CONFIG_TARGET}" in out.stdout


def test_refuses_without_root_unless_given_a_tree(tmp_path: Path, source: Path) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the command as another user")
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    out = subprocess.run(
        [*as_nobody, *AGENT, "install-service", "--source", str(source), "--no-start"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 1
    assert "install-service must run as root" in out.stderr
    assert "--root DIR" in out.stderr and out.stdout == ""


def test_purge_needs_uninstall_and_a_missing_deploy_file_is_named(
    tmp_path: Path, source: Path
) -> None:
    out = installer(tmp_path / "root", source, "--purge")
    assert out.returncode == 2 and "--purge only goes with --uninstall" in out.stderr
    (source / install.TMPFILES_SOURCE).unlink()
    out = installer(tmp_path / "root", source)
    assert out.returncode == 1
    assert f"missing {install.TMPFILES_SOURCE}): pass --source DIR" in out.stderr
    assert not (tmp_path / "root").exists()  # checked before anything is written


def test_without_systemd_running_the_start_is_printed_not_run(
    tmp_path: Path,
    source: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """In a chroot or an image build the files go in place and systemctl is left for boot."""
    monkeypatch.setattr(install, "SYSTEMD_RUNTIME", tmp_path / "no-systemd")
    opts = install.Options(root=Path("/"), source=source)
    steps = install.Installer(opts)
    steps.start(unit_changed=True)
    assert steps.offline() == f"systemd is not running here: no {tmp_path / 'no-systemd'}"
    out = capsys.readouterr().out
    assert out.startswith(f"skipped (systemd is not running here: no {tmp_path / 'no-systemd'})")
    assert "systemctl enable --now sci-agent.service" in out and steps.changed == 0


def test_an_installed_package_without_its_deploy_files_is_named(
    tmp_path: Path, source: Path
) -> None:
    """From package data (no checkout) a missing file says to reinstall, before any write."""
    package = tmp_path / "site-packages" / "agent"
    shutil.copytree(source / "deploy", package / "deploy")
    (package / install.CONFIG_SOURCE).unlink()
    root = tmp_path / "root"
    opts = install.Options(root=root, source=package, checkout=False, dry_run=True)
    with pytest.raises(install.InstallError) as caught:
        install.Installer(opts).install()
    assert str(caught.value) == (
        f"the installed package {package} lacks its deploy files (missing "
        f"{install.CONFIG_SOURCE}): reinstall sci-agent, or pass --source DIR"
    )
    assert not root.exists()
