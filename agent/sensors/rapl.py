"""RAPL energy counters from the Linux powercap sysfs tree (Intel, and AMD Zen on Linux ≥ 5.8).

Zones are found by listing the powercap root (``/sys/class/powercap``) and reading each
``intel-rapl:N[:M]`` entry's ``name``; nested subzone directories are scanned as well.
Reported components, all ``source="rapl"``:

- ``cpu{N}`` (kind ``cpu``) per package zone ``package-N`` (``cpu{N}-die{D}`` for
  ``package-N-die-D``); N falls back to the zone index when the name has none;
- ``dram{N}`` (kind ``dram``) per ``dram`` subzone, N being its parent package's;
- ``psys`` (kind ``psys``), the platform zone.

``core`` and ``uncore`` subzones are parts of their package and are ignored. An
``intel-rapl-mmio`` zone duplicates the MSR zone of the same name and is used only when
no MSR zone gives that component.

psys measures the whole platform *including* the packages and DRAM, so to avoid
counting them twice the ``psys`` reading is only the remainder
``psys_delta − Σ(package deltas + dram deltas)`` of the same interval, clamped at 0:
the sum of all readings then equals the platform's energy. When a package or DRAM
reading is dropped in an interval, the remainder cannot be formed and ``psys`` is
dropped for that interval too.

``energy_uj`` is a cumulative µJ counter that wraps at ``max_energy_range_uj``. A value
below the previous one is taken as one wrap when that range is known; a counter that
goes backwards with no known range, an impossible wrapped delta (≥ the range, or more
than ``MAX_PLAUSIBLE_WATTS`` over the interval: a counter reset), or a counter that
cannot be read drops that component for the interval (never a negative or huge value,
never a silent zero) with one warning per zone and problem; the new value becomes the
next baseline. Each counter file is opened once and re-read with one ``pread`` per
cycle.

Every reading carries its static (zero-load) part, ``static_joules``, from an
``agent.static_power.StaticPowerLearner``: configured per component, else learned from
a regression of the zone's power on utilisation (a package's and its DRAM's on that
package's busy share from ``/proc/stat``, psys's on the machine's), else 0 W.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agent.records import ComponentKind, ComponentReading
from agent.sensors import learner
from agent.sensors.base import IntervalContext, SensorUnavailable
from agent.sensors.registry import SENSORS
from agent.static_power import StaticPowerLearner

if TYPE_CHECKING:
    from agent.config import Config
    from agent.sensors import SensorSet

log = logging.getLogger("sci_agent.sensors.rapl")

#: A wrapped delta implying more than this average power is a counter reset, not a wrap.
MAX_PLAUSIBLE_WATTS = 10_000.0

_ZONE = re.compile(r"^(intel-rapl(?:-mmio)?):(\d+)(?::(\d+))?$")
_PACKAGE = re.compile(r"^package-(\d+)(?:-die-(\d+))?$")
_KIND_ORDER: dict[ComponentKind, int] = {"cpu": 0, "dram": 1, "psys": 2}

_NO_ZONES_FIX = (
    "on bare metal, load the powercap RAPL drivers (modprobe intel_rapl_msr; AMD Zen needs "
    "Linux ≥ 5.8); virtual machines and most cloud instances expose no RAPL counters, and "
    "the power-model sensor estimates instead"
)
_PERMISSION_FIX = (
    "make the counters readable by the agent's group: install deploy/tmpfiles/sci-agent.conf "
    "('z /sys/class/powercap/*/energy_uj 0440 root sci-agent') into /etc/tmpfiles.d/ and run "
    "'systemd-tmpfiles --create sci-agent.conf' (sci-agent install-service does both), with "
    "the agent in group sci-agent; or grant the service CAP_DAC_READ_SEARCH "
    "(AmbientCapabilities=, which lets it read every file); or run it as root"
)


@dataclass(slots=True)
class _Zone:
    """One powercap zone the sensor reports (or uses for the psys remainder)."""

    entry: str  # directory name, e.g. intel-rapl:0:2
    path: Path  # the zone directory
    component: str
    kind: ComponentKind
    max_uj: int | None  # wrap range, None when unreadable or 0
    package: int | None = None  # the socket a cpu/dram zone is on; None for psys
    fd: int = -1
    previous: int | None = None
    warned: set[str] = field(default_factory=set)

    @property
    def counter(self) -> Path:
        return self.path / "energy_uj"


@dataclass(frozen=True, slots=True)
class _Found:
    """A zone directory as discovered, before classification."""

    entry: str
    path: Path
    mmio: bool
    indices: tuple[int, ...]
    name: str


def _open_counter(path: Path) -> int:
    """Open a counter file for repeated ``pread``; raises ``OSError``."""
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def _read_counter(fd: int) -> int:
    """The counter's current value in µJ; raises ``OSError`` or ``ValueError``."""
    return int(os.pread(fd, 32, 0))


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None


class RaplSensor:
    """Joules per CPU package, DRAM and platform (psys) zone from powercap RAPL."""

    name = "rapl"

    def __init__(
        self, root: str | Path = "/sys/class/powercap", static: StaticPowerLearner | None = None
    ) -> None:
        self._root = Path(root)
        self._zones: list[_Zone] = []
        self.static = static or StaticPowerLearner("rapl")

    # -- discovery -------------------------------------------------------------------------

    def _discover(self) -> list[_Found]:
        try:
            entries = sorted(os.listdir(self._root))
        except OSError as exc:
            raise SensorUnavailable(
                f"no RAPL zones under {self._root} ({exc.strerror or exc}: this machine or VM "
                "exposes no RAPL counters)",
                _NO_ZONES_FIX,
            ) from None
        dirs: dict[str, Path] = {}
        for entry in entries:
            if _ZONE.match(entry):
                dirs[entry] = self._root / entry
        for path in list(dirs.values()):  # subzones nested in their package's directory
            try:
                children = os.listdir(path)
            except OSError:
                continue
            for child in children:
                if _ZONE.match(child) and child not in dirs:
                    dirs[child] = path / child
        found: list[_Found] = []
        for entry, path in sorted(dirs.items()):
            m = _ZONE.match(entry)
            assert m is not None
            try:
                name = (path / "name").read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError):
                log.debug("skipping %s: no readable name", path)
                continue
            indices = tuple(int(g) for g in m.group(2, 3) if g is not None)
            found.append(_Found(entry, path, m.group(1).endswith("-mmio"), indices, name))
        return found

    def _classify(self, found: list[_Found]) -> list[_Zone]:
        """Map zones to components; MSR zones win over MMIO duplicates."""
        package_suffix: dict[tuple[bool, int], str] = {}
        package_of: dict[tuple[bool, int], int] = {}
        for f in found:
            if len(f.indices) == 1 and f.name.startswith("package"):
                m = _PACKAGE.match(f.name)
                if m is None:
                    suffix = str(f.indices[0])
                elif m.group(2) is None:
                    suffix = m.group(1)
                else:
                    suffix = f"{m.group(1)}-die{m.group(2)}"
                package_suffix[(f.mmio, f.indices[0])] = suffix
                package_of[(f.mmio, f.indices[0])] = int(m.group(1)) if m else f.indices[0]
        chosen: dict[str, _Zone] = {}
        for f in sorted(found, key=lambda f: (f.mmio, f.indices)):
            kind: ComponentKind
            if len(f.indices) == 1 and (f.mmio, f.indices[0]) in package_suffix:
                kind, component = "cpu", f"cpu{package_suffix[(f.mmio, f.indices[0])]}"
            elif len(f.indices) == 1 and f.name == "psys":
                kind, component = "psys", "psys"
            elif len(f.indices) == 2 and f.name == "dram":
                parent = package_suffix.get((f.mmio, f.indices[0]), str(f.indices[0]))
                kind, component = "dram", f"dram{parent}"
            else:
                continue  # core, uncore, the control type or an unknown zone
            if component in chosen:
                if not f.mmio:
                    log.warning("ignoring %s: a second RAPL zone for %s", f.path, component)
                continue
            max_uj = _read_int(f.path / "max_energy_range_uj")
            package = package_of.get((f.mmio, f.indices[0]), f.indices[0])
            chosen[component] = _Zone(
                f.entry,
                f.path,
                component,
                kind,
                max_uj if max_uj and max_uj > 0 else None,
                None if kind == "psys" else package,
            )
        return sorted(chosen.values(), key=_order)

    # -- Sensor protocol -------------------------------------------------------------------

    def open(self) -> None:
        """Discover the zones and prime every counter; raise ``SensorUnavailable``."""
        self.close()
        zones = self._classify(self._discover())
        if not zones:
            raise SensorUnavailable(
                f"no RAPL zones under {self._root} (this machine or VM exposes no RAPL counters)",
                _NO_ZONES_FIX,
            )
        try:
            for zone in zones:
                try:
                    zone.fd = _open_counter(zone.counter)
                    zone.previous = _read_counter(zone.fd)
                except PermissionError:
                    raise SensorUnavailable(
                        f"cannot read {zone.counter}: permission denied (root-only since "
                        "Linux 5.10, CVE-2020-8694)",
                        _PERMISSION_FIX,
                    ) from None
                except (OSError, ValueError) as exc:
                    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                    raise SensorUnavailable(
                        f"cannot read {zone.counter}: {why}",
                        "check that the powercap RAPL driver works (cat the file as root)",
                    ) from None
        except SensorUnavailable:
            _close_all(zones)
            raise
        self._zones = zones

    def kinds(self) -> frozenset[ComponentKind]:
        """The kinds found by ``open`` (empty before)."""
        return frozenset(z.kind for z in self._zones)

    def read(self, ctx: IntervalContext) -> list[ComponentReading]:
        """Joules per component since the previous read (see the module docstring)."""
        if not self._zones:
            raise RuntimeError("RaplSensor.read() called before a successful open()")
        readings: list[ComponentReading] = []
        measured = 0.0
        parts_complete = True
        psys: float | None = None
        for zone in self._zones:
            joules = self._delta(zone, ctx.interval_s)
            if zone.kind == "psys":
                psys = joules
            elif joules is None:
                parts_complete = False
            else:
                measured += joules
                readings.append(self._reading(zone.component, zone.kind, joules, ctx, zone.package))
        if psys is not None:
            if parts_complete:
                readings.append(
                    self._reading("psys", "psys", max(0.0, psys - measured), ctx, None)
                )
            else:
                log.debug("psys dropped this interval: a package or DRAM reading is missing")
        return readings

    def _reading(
        self,
        component: str,
        kind: ComponentKind,
        joules: float,
        ctx: IntervalContext,
        package: int | None,
    ) -> ComponentReading:
        """A reading with its static part; the interval also teaches the learner.

        The learner sees the busy share of the reading's package (psys: the machine's).
        """
        if ctx.interval_s > 0:
            busy = ctx.cpu.busy_fraction_of(package)
            self.static.observe(component, busy, joules / ctx.interval_s)
        static, source = self.static.static_joules(component, joules, ctx.interval_s)
        return ComponentReading(
            component, kind, "rapl", joules, None, static, source, package=package
        )

    def close(self) -> None:
        """Close the counter files and save the learned floors; ``open`` may be called again."""
        _close_all(self._zones)
        self._zones = []
        self.static.save()

    # -- counters --------------------------------------------------------------------------

    def _delta(self, zone: _Zone, interval_s: float) -> float | None:
        """Joules since the zone's previous value, or ``None`` to drop this interval."""
        try:
            current = _read_counter(zone.fd)
        except (OSError, ValueError) as exc:
            self._warn_once(zone, "unreadable", "cannot read %s (%s); dropping it", exc)
            zone.previous = None  # re-prime on recovery, never lump the gap into one interval
            return None
        previous, zone.previous = zone.previous, current
        if previous is None:
            return None
        delta = current - previous
        if delta >= 0:
            return delta / 1e6
        if zone.max_uj is None:
            self._warn_once(
                zone,
                "backwards",
                "%s went backwards with no known wrap range (%s); dropping it",
                f"{previous} → {current} µJ",
            )
            return None
        delta += zone.max_uj
        limit_uj = MAX_PLAUSIBLE_WATTS * interval_s * 1e6 if interval_s > 0 else float("inf")
        if not 0 <= delta < zone.max_uj or delta > limit_uj:
            self._warn_once(
                zone,
                "reset",
                "%s: implausible wrap (%s), counter reset? dropping it",
                f"{previous} → {current} µJ, range {zone.max_uj} µJ",
            )
            return None
        return delta / 1e6

    @staticmethod
    def _warn_once(zone: _Zone, problem: str, message: str, detail: object) -> None:
        if problem not in zone.warned:
            zone.warned.add(problem)
            log.warning(message + " from the readings (warned once per zone)", zone.counter, detail)


def _order(zone: _Zone) -> tuple[int, list[int | str]]:
    """Kind, then natural order of the component name (cpu2 before cpu10)."""
    parts = re.split(r"(\d+)", zone.component)
    return _KIND_ORDER[zone.kind], [int(p) if p.isdigit() else p for p in parts]


def _close_all(zones: list[_Zone]) -> None:
    for zone in zones:
        if zone.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(zone.fd)
            zone.fd = -1


# -- registration: the [sensors.rapl] section and the factory ----------------------------------


@dataclass(frozen=True)
class RaplConfig:
    enabled: bool = True
    root: str = "/sys/class/powercap"


def _open_rapl(found: SensorSet, config: Config) -> None:
    """Open RAPL unless disabled; a missing powercap tree (a VM) is logged at INFO only."""
    cfg: RaplConfig = config.sensors.rapl
    if not cfg.enabled:
        found.disabled("rapl")
        return
    rapl = RaplSensor(cfg.root, static=learner(config, "rapl"))
    # No powercap tree at all is normal on VMs; a tree we cannot read is worth a warning.
    found.try_open(rapl, quiet=not os.path.isdir(cfg.root))


SENSORS.register("rapl", _open_rapl, section=RaplConfig, order=10)
