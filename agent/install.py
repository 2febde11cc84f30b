"""``sci-agent install-service``: install (or remove) the agent as a systemd service.

What it installs: the unit, the sysusers and tmpfiles rules and the commented example
config under ``deploy/``, and the agent itself in an isolated virtual environment under
``/opt/sci-agent``. They come from a sci-agent checkout (``--source``, by default the
checkout this package was imported from), pip-installed from a copy; or, from an
installed wheel, from the package data ``agent/deploy/`` (the wheel ships the checkout's
``deploy/``), with the same release pip-installed from the package index, or nothing
installed when the installer already runs from ``/opt/sci-agent/venv``.

Every step prints what it did (``created``, ``updated``, ``kept``, ``removed``...), and a
second run changes nothing and says so. ``--root DIR`` installs into a directory tree
(for images and tests): ``systemd-sysusers --root DIR`` still runs, while applying the
tmpfiles rule to ``/sys`` and starting the unit are left to the host (the commands are
printed). Only the standard library is used, so ``python3 -m agent.install`` works from
a checkout before any dependency is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.resources
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

#: What the installer copies, relative to the source checkout (or to the installed
#: ``agent`` package, whose ``deploy/`` holds the same files).
UNIT_SOURCE = "deploy/systemd/sci-agent.service"
SYSUSERS_SOURCE = "deploy/sysusers/sci-agent.conf"
TMPFILES_SOURCE = "deploy/tmpfiles/sci-agent.conf"
CONFIG_SOURCE = "deploy/config.toml"

#: Where it goes, relative to the target root (``/`` unless ``--root``).
PREFIX = "opt/sci-agent"
VENV = "opt/sci-agent/venv"
UNIT_TARGET = "etc/systemd/system/sci-agent.service"
SYSUSERS_TARGET = "usr/lib/sysusers.d/sci-agent.conf"
TMPFILES_TARGET = "usr/lib/tmpfiles.d/sci-agent.conf"
CONFIG_DIR = "etc/sci-agent"
CONFIG_TARGET = "etc/sci-agent/config.toml"
STATE_DIR = "var/lib/sci-agent"
#: Present when systemd runs this system (``sd_booted``); absent in a chroot or a build.
SYSTEMD_RUNTIME = Path("/run/systemd/system")

SERVICE = "sci-agent.service"
SERVICE_USER = "sci-agent"
SERVICE_GROUP = "sci-agent"
#: The extra installed with the agent: the InfluxDB v2 client, imported only when configured.
EXTRAS = "influxdb"
#: The distribution pip installs into the venv when there is no checkout.
DISTRIBUTION = "sci-agent"
#: Written into the venv after a successful pip install: the fingerprint of the source.
STAMP = ".sci-agent-source"

#: Owner-only: the config may hold secrets (an InfluxDB token, grid API keys), and the
#: config loader warns about any group- or world-readable file that holds one.
CONFIG_MODE = 0o600
FILE_MODE = 0o644
DIR_MODE = 0o755

_SKIP = shutil.ignore_patterns(
    ".git", ".venv", "venv", "var", "build", "dist", "*.egg-info", "__pycache__", "*.pyc",
    ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis", "node_modules",
)  # fmt: skip


class InstallError(Exception):
    """A step that cannot be done; the message names it and the cause."""


@dataclass(frozen=True)
class Options:
    """What the command line asked for.

    ``source`` is a checkout (``checkout``) or the installed ``agent`` package, whose
    ``deploy/`` holds the same files (then the venv gets the release from the index).
    """

    root: Path
    source: Path
    checkout: bool = True
    dry_run: bool = False
    no_start: bool = False
    no_pip: bool = False
    uninstall: bool = False
    purge: bool = False

    @property
    def in_tree(self) -> bool:
        """True when installing into a directory tree rather than this running system."""
        return self.root != Path("/")

    def target(self, relative: str) -> Path:
        return self.root / relative


def default_source() -> Path | None:
    """The checkout this package was imported from, if it is one (has ``deploy/``)."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").is_file() and (here / "deploy").is_dir() else None


def packaged_source() -> Path | None:
    """The installed ``agent`` package, if it carries the deploy files (a wheel does)."""
    package = importlib.resources.files("agent")
    if not isinstance(package, Path) or not (package / UNIT_SOURCE).is_file():
        return None
    return package


def installed_version() -> str:
    """The version of the installed sci-agent distribution (``InstallError`` if none)."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise InstallError(f"{DISTRIBUTION} is not installed: pass --source DIR") from None


def fingerprint(source: Path) -> str:
    """A hash of what pip would install from ``source`` (packages and pyproject.toml)."""
    digest = hashlib.sha256()
    files = [source / "pyproject.toml"]
    for package in ("agent", "sci", "exporters", "dashboard"):
        if (source / package).is_dir():
            files += sorted(
                p for p in (source / package).rglob("*") if p.is_file() and p.suffix != ".pyc"
            )
    for path in files:
        if path.is_file():
            digest.update(str(path.relative_to(source)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _account(root: Path, table: str, name: str) -> int | None:
    """The uid (``passwd``) or gid (``group``) of ``name`` in ``root``'s ``/etc``."""
    try:
        lines = (root / "etc" / table).read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(":")
        if len(fields) > 3 and fields[0] == name and fields[2].isdigit():
            return int(fields[2])
    return None


class Installer:
    """Runs the steps in order, printing each; counts what changed."""

    def __init__(self, opts: Options, out: TextIO | None = None) -> None:
        self.opts = opts
        self.out = out or sys.stdout
        self.changed = 0

    # -- reporting and primitives -------------------------------------------------------

    def say(self, text: str, changed: bool = False) -> None:
        """Print one step; ``changed`` counts it (a dry run prints "would ...")."""
        if changed:
            self.changed += 1
        print(text, file=self.out, flush=True)

    def command(self, argv: Sequence[str]) -> None:
        """Run ``argv`` (or print it on a dry run); ``InstallError`` on failure."""
        shown = " ".join(argv)
        if self.opts.dry_run:
            self.say(f"would run: {shown}", changed=True)
            return
        if shutil.which(argv[0]) is None and not os.path.isabs(argv[0]):
            raise InstallError(f"{argv[0]} not found: this installer needs systemd")
        done = subprocess.run(list(argv), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            why = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
            raise InstallError(f"{shown} failed (exit {done.returncode}): {why[0]}")
        self.say(f"ran {shown}", changed=True)

    def put_file(self, source: str, target: str, mode: int = FILE_MODE) -> bool:
        """Copy a deploy file into place (atomically); True when it was created or updated."""
        src = self.opts.source / source
        dst = self.opts.target(target)
        try:
            data = src.read_bytes()
        except OSError as exc:
            raise InstallError(f"cannot read {src}: {exc.strerror or exc}") from None
        if dst.is_file() and dst.read_bytes() == data and dst.stat().st_mode & 0o7777 == mode:
            self.say(f"unchanged {dst}")
            return False
        verb = "updated" if dst.exists() else "created"
        if self.opts.dry_run:
            self.say(f"would have {verb} {dst} from {src}", changed=True)
            return True
        self._write(dst, data, mode)
        self.say(f"{verb} {dst} (mode {mode:04o})", changed=True)
        return True

    def _write(self, dst: Path, data: bytes, mode: int, uid: int = -1, gid: int = -1) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, mode)
            if uid >= 0 or gid >= 0:
                os.chown(tmp, uid, gid)
            os.replace(tmp, dst)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def offline(self) -> str | None:
        """Why systemd is not asked to act now (None: it is): --root, or no systemd running."""
        if self.opts.in_tree:
            return "under --root"
        if not SYSTEMD_RUNTIME.is_dir():
            return f"systemd is not running here: no {SYSTEMD_RUNTIME}"
        return None

    def remove(self, target: str, what: str = "") -> None:
        """Remove a file or a folder tree under the root, saying so (or that it was absent)."""
        path = self.opts.target(target)
        if not path.exists() and not path.is_symlink():
            self.say(f"absent {path}{what}")
            return
        if self.opts.dry_run:
            self.say(f"would remove {path}{what}", changed=True)
            return
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        self.say(f"removed {path}{what}", changed=True)

    # -- install --------------------------------------------------------------------------

    def install(self) -> None:
        """Every step of an install, in order."""
        self.check_source()
        self.venv()
        self.user()
        self.tmpfiles()
        self.config()
        unit_changed = self.unit()
        self.start(unit_changed)

    def check_source(self) -> None:
        missing = [
            name
            for name in (UNIT_SOURCE, SYSUSERS_SOURCE, TMPFILES_SOURCE, CONFIG_SOURCE)
            if not (self.opts.source / name).is_file()
        ]
        if not self.opts.checkout:
            if missing:
                raise InstallError(
                    f"the installed package {self.opts.source} lacks its deploy files "
                    f"(missing {', '.join(missing)}): reinstall sci-agent, or pass --source DIR"
                )
            self.say(f"deploy files from the installed package: {self.opts.source / 'deploy'}")
            return
        if not (self.opts.source / "pyproject.toml").is_file():
            missing.insert(0, "pyproject.toml")
        if missing:
            raise InstallError(
                f"{self.opts.source} is not a sci-agent checkout with its deploy files "
                f"(missing {', '.join(missing)}): pass --source DIR"
            )

    def venv(self) -> None:
        """An isolated virtual environment under /opt/sci-agent holding this checkout."""
        venv = self.opts.target(VENV)
        python = venv / "bin" / "python"
        if python.exists():
            self.say(f"kept existing {venv}")
        elif self.opts.dry_run:
            self.say(f"would create {venv} (python -m venv)", changed=True)
        else:
            self.opts.target(PREFIX).mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
            argv = [sys.executable, "-m", "venv", str(venv)]
            if self.opts.no_pip:
                argv.append("--without-pip")
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise InstallError(f"python -m venv {venv} failed: {done.stderr.strip()}")
            self.say(f"created {venv}", changed=True)
            if self.opts.in_tree:
                self.say(
                    f"note: a venv is not relocatable: its scripts name {venv}; to build an "
                    "image, run install-service inside it (chroot, container build)"
                )
        if self.opts.no_pip:
            self.say(
                f"skipped pip install (--no-pip): {venv} holds no sci-agent; install it with "
                f"{python} -m ensurepip && {venv}/bin/pip install '{self.pip_spec()}'"
            )
            return
        if self.opts.checkout:
            self.pip_install(venv)
        else:
            self.pip_install_release(venv)

    def pip_spec(self) -> str:
        """What pip installs: the checkout, or this very release from the package index."""
        if self.opts.checkout:
            return f"{self.opts.source}[{EXTRAS}]"
        return f"{DISTRIBUTION}[{EXTRAS}]=={installed_version()}"

    def pip_install_release(self, venv: Path) -> None:
        """``pip install sci-agent[influxdb]==VERSION``, unless the installer runs from the venv."""
        spec = self.pip_spec()
        if Path(sys.prefix).resolve() == venv.resolve():
            self.say(f"unchanged {spec} in {venv} (the installer runs from it)")
            return
        stamp = venv / STAMP
        if stamp.is_file() and stamp.read_text(encoding="ascii").strip() == spec:
            self.say(f"unchanged {spec} in {venv} (installed by an earlier run)")
            return
        if self.opts.dry_run:
            self.say(f"would run: {venv}/bin/pip install --upgrade '{spec}'", changed=True)
            return
        python = str(venv / "bin" / "python")
        if not list((venv / "bin").glob("pip*")):  # a venv made by an earlier --no-pip run
            self.command([python, "-m", "ensurepip", "--upgrade"])
        argv = [python, "-m", "pip", "install", "--quiet", "--upgrade", spec]
        if subprocess.run(argv, text=True, check=False).returncode != 0:
            raise InstallError(f"pip install '{spec}' into {venv} failed (see pip's output)")
        stamp.write_text(spec + "\n", encoding="ascii")
        self.say(f"installed {spec} into {venv}", changed=True)

    def pip_install(self, venv: Path) -> None:
        """``pip install SOURCE[influxdb]``, from a copy so the checkout gets no build debris."""
        stamp = venv / STAMP
        wanted = fingerprint(self.opts.source)
        if stamp.is_file() and stamp.read_text(encoding="ascii").strip() == wanted:
            self.say(f"unchanged sci-agent in {venv} (installed from this source already)")
            return
        spec = f"{self.opts.source}[{EXTRAS}]"
        if self.opts.dry_run:
            self.say(f"would run: {venv}/bin/pip install --upgrade '{spec}'", changed=True)
            return
        python = str(venv / "bin" / "python")
        if not list((venv / "bin").glob("pip*")):  # a venv made by an earlier --no-pip run
            self.command([python, "-m", "ensurepip", "--upgrade"])
        with tempfile.TemporaryDirectory(prefix="sci-agent-build-") as tmp:
            copy = Path(tmp) / "src"
            shutil.copytree(self.opts.source, copy, ignore=_SKIP, symlinks=True)
            argv = [python, "-m", "pip", "install", "--quiet"]
            done = subprocess.run(
                [*argv, "--upgrade", f"{copy}[{EXTRAS}]"], text=True, check=False
            )
        if done.returncode != 0:
            raise InstallError(f"pip install '{spec}' into {venv} failed (see pip's output)")
        stamp.write_text(wanted + "\n", encoding="ascii")
        self.say(f"installed sci-agent from {self.opts.source} into {venv}", changed=True)

    def user(self) -> None:
        """The system user and group, from the sysusers rule (``systemd-sysusers``)."""
        changed = self.put_file(SYSUSERS_SOURCE, SYSUSERS_TARGET)
        uid = _account(self.opts.root, "passwd", SERVICE_USER)
        if uid is not None and not changed:
            self.say(f"kept user {SERVICE_USER} (uid {uid})")
            return
        argv = ["systemd-sysusers"]
        if self.opts.in_tree:
            if not self.opts.dry_run:  # systemd-sysusers --root needs the tree's /etc
                self.opts.target("etc").mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
            argv.append(f"--root={self.opts.root}")
        self.command([*argv, str(self.opts.target(SYSUSERS_TARGET))])

    def tmpfiles(self) -> None:
        """The rule giving the service's group read access to the RAPL counters at boot."""
        changed = self.put_file(TMPFILES_SOURCE, TMPFILES_TARGET)
        apply = ["systemd-tmpfiles", "--create", f"/{TMPFILES_TARGET}"]
        why = self.offline()
        if why is not None:
            self.say(f"skipped ({why}; applied at boot): {' '.join(apply)}")
        elif changed:
            self.command(apply)

    def config(self) -> None:
        """/etc/sci-agent/config.toml from the example, never overwriting an existing one."""
        target = self.opts.target(CONFIG_TARGET)
        if target.exists():
            self.say(f"kept existing {target}")
            return
        if self.opts.dry_run:
            self.say(f"would create {target} from {self.opts.source / CONFIG_SOURCE}", True)
            return
        uid = _account(self.opts.root, "passwd", SERVICE_USER)
        gid = _account(self.opts.root, "group", SERVICE_GROUP)
        if uid is None or gid is None:
            raise InstallError(f"user {SERVICE_USER} not found in {self.opts.target('etc')}")
        self.opts.target(CONFIG_DIR).mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        data = (self.opts.source / CONFIG_SOURCE).read_bytes()
        self._write(target, data, CONFIG_MODE, uid, gid)
        self.say(f"created {target} (mode 0600, owner {SERVICE_USER}: it may hold secrets)", True)

    def unit(self) -> bool:
        """The unit file; True when it was created or changed."""
        changed = self.put_file(UNIT_SOURCE, UNIT_TARGET)
        exec_start = f"/{VENV}/bin/sci-agent"
        if exec_start not in (self.opts.source / UNIT_SOURCE).read_text(encoding="utf-8"):
            self.say(f"warning: the unit's ExecStart does not run {exec_start}")
        return changed

    def start(self, unit_changed: bool) -> None:
        """daemon-reload, then enable and start (or restart after an upgrade)."""
        reload = ["systemctl", "daemon-reload"]
        enable = ["systemctl", "enable", "--now", SERVICE]
        why = self.offline() or ("--no-start" if self.opts.no_start else None)
        if why is not None:
            self.say(f"skipped ({why}): run {' '.join(reload)} && {' '.join(enable)}")
            return
        if unit_changed:
            self.command(reload)
        if _systemctl_is("is-enabled") and _systemctl_is("is-active"):
            if self.changed:
                self.command(["systemctl", "restart", SERVICE])
            else:
                self.say(f"kept {SERVICE} enabled and running")
            return
        self.command(enable)

    # -- uninstall ------------------------------------------------------------------------

    def uninstall(self) -> None:
        """Stop and remove the unit, the venv and the rules; data only with --purge."""
        unit = self.opts.target(UNIT_TARGET)
        why = self.offline()
        if why is not None:
            self.say(f"skipped ({why}): systemctl disable --now {SERVICE}")
        elif unit.exists():
            self.command(["systemctl", "disable", "--now", SERVICE])
        self.remove(UNIT_TARGET)
        if why is None and self.changed:
            self.command(["systemctl", "daemon-reload"])
        self.remove(VENV)
        prefix = self.opts.target(PREFIX)
        if prefix.is_dir() and not any(prefix.iterdir()) and not self.opts.dry_run:
            prefix.rmdir()
            self.say(f"removed {prefix}", changed=True)
        self.remove(TMPFILES_TARGET, " (the counters keep their group until reboot)")
        self.remove(SYSUSERS_TARGET)
        if _account(self.opts.root, "passwd", SERVICE_USER) is not None:
            self.say(
                f"kept user {SERVICE_USER}: system users are not removed (files may still "
                f"carry its uid); userdel {SERVICE_USER} if you must"
            )
        for data in (STATE_DIR, CONFIG_DIR):
            if self.opts.purge:
                self.remove(data, " (--purge)")
            elif self.opts.target(data).exists():
                self.say(f"kept {self.opts.target(data)} (--purge removes it)")


def _systemctl_is(verb: str) -> bool:
    done = subprocess.run(
        ["systemctl", verb, "--quiet", SERVICE], capture_output=True, check=False
    )
    return done.returncode == 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``install-service`` options (shared by ``sci-agent`` and ``python -m agent.install``)."""
    parser.add_argument("--root", metavar="DIR", help="install into this directory tree")
    parser.add_argument(
        "--source",
        metavar="DIR",
        help="the sci-agent checkout (default: this package's checkout, else its deploy files)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the steps, change nothing")
    parser.add_argument("--uninstall", action="store_true", help="remove what install made")
    parser.add_argument(
        "--purge", action="store_true", help="with --uninstall: remove /etc and /var/lib data too"
    )
    parser.add_argument(
        "--no-start", action="store_true", help="do not run systemctl daemon-reload/enable --now"
    )
    parser.add_argument(
        "--no-pip",
        action="store_true",
        help="create the venv without pip and install nothing into it (tests, offline hosts)",
    )


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run the install (or uninstall) the parsed ``args`` ask for; the exit status."""
    if args.purge and not args.uninstall:
        print("sci-agent: --purge only goes with --uninstall", file=sys.stderr)
        return 2
    if os.geteuid() != 0 and args.root is None and not args.dry_run:
        print(
            "sci-agent: install-service must run as root (it creates a system user and "
            "writes /opt, /etc and /usr/lib): use sudo, or --root DIR to install into a "
            "directory tree, or --dry-run to see the steps",
            file=sys.stderr,
        )
        return 1
    source = Path(args.source).resolve() if args.source else default_source()
    packaged = packaged_source() if source is None else None
    if source is None and packaged is None and not args.uninstall:
        print(
            "sci-agent: no sci-agent checkout next to this package and no deploy files in "
            "it: pass --source DIR",
            file=sys.stderr,
        )
        return 2
    opts = Options(
        root=Path(args.root).resolve() if args.root else Path("/"),
        source=source or packaged or Path("."),
        checkout=source is not None,
        dry_run=args.dry_run,
        no_start=args.no_start,
        no_pip=args.no_pip,
        uninstall=args.uninstall,
        purge=args.purge,
    )
    installer = Installer(opts, out)
    os.umask(0o022)  # the venv must be readable by the service's user whatever root's umask
    try:
        installer.uninstall() if opts.uninstall else installer.install()
    except (InstallError, OSError) as exc:
        print(f"sci-agent: install-service: {exc}", file=sys.stderr)
        return 1
    if installer.changed == 0:
        state = "not installed" if opts.uninstall else "installed as before"
        print(f"nothing changed: sci-agent is {state}", file=installer.out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python3 -m agent.install``: the same as ``sci-agent install-service``."""
    parser = argparse.ArgumentParser(
        prog="python3 -m agent.install",
        description="Install sci-agent as a systemd service (as root; --uninstall reverses it).",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
