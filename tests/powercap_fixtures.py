"""Build fake ``/sys/class/powercap`` trees under a test's ``tmp_path``.

Zones are plain directories (real sysfs has symlinks) holding ``name``, ``energy_uj``
and ``max_energy_range_uj``. Counters are rewritten in place (same inode), so a sensor
holding the file open sees the new value, as with sysfs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: A typical Intel package/DRAM wrap range (~262 kJ).
MAX_UJ = 262_143_328_850


@dataclass(frozen=True)
class ZoneSpec:
    """One zone: its directory name, ``name`` file, start value and wrap range.

    ``max_uj=None`` leaves ``max_energy_range_uj`` out; ``parent`` nests the zone's
    directory inside that zone's directory instead of the root.
    """

    entry: str
    name: str
    energy_uj: int = 1_000_000
    max_uj: int | None = MAX_UJ
    parent: str | None = None


class PowercapTree:
    """A fake powercap root whose counters a test moves between reads."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._dirs: dict[str, Path] = {}
        self._values: dict[str, int] = {}

    def add(self, spec: ZoneSpec) -> Path:
        base = self._dirs[spec.parent] if spec.parent else self.root
        path = base / spec.entry
        path.mkdir(parents=True)
        (path / "name").write_text(spec.name + "\n")
        if spec.max_uj is not None:
            (path / "max_energy_range_uj").write_text(f"{spec.max_uj}\n")
        (path / "enabled").write_text("1\n")
        self._dirs[spec.entry] = path
        self.set(spec.entry, spec.energy_uj)
        return path

    def path(self, entry: str) -> Path:
        """The zone's directory."""
        return self._dirs[entry]

    def counter(self, entry: str) -> Path:
        """The zone's ``energy_uj`` file."""
        return self._dirs[entry] / "energy_uj"

    def value(self, entry: str) -> int:
        return self._values[entry]

    def set(self, entry: str, energy_uj: int) -> None:
        """Write the counter in place (truncate and rewrite, same inode)."""
        self.counter(entry).write_text(f"{energy_uj}\n")
        self._values[entry] = energy_uj

    def advance(self, entry: str, delta_uj: int) -> None:
        self.set(entry, self._values[entry] + delta_uj)


def build_powercap(
    root: Path, zones: Iterable[ZoneSpec], control_types: bool = True
) -> PowercapTree:
    """Create the tree under ``root`` (which may already exist, e.g. ``tmp_path``).

    ``control_types`` adds the ``intel-rapl`` (and, when MMIO zones are present,
    ``intel-rapl-mmio``) control-type directories, which have no counters.
    """
    root.mkdir(parents=True, exist_ok=True)
    specs = list(zones)
    tree = PowercapTree(root)
    if control_types:
        types = {"intel-rapl"} | {
            "intel-rapl-mmio" for s in specs if s.entry.startswith("intel-rapl-mmio")
        }
        for control in sorted(types):
            (root / control).mkdir()
            (root / control / "enabled").write_text("1\n")
    for spec in specs:
        tree.add(spec)
    return tree


def package(index: int, energy_uj: int = 1_000_000, max_uj: int | None = MAX_UJ) -> ZoneSpec:
    """``intel-rapl:N`` named ``package-N``."""
    return ZoneSpec(f"intel-rapl:{index}", f"package-{index}", energy_uj, max_uj)


def subzone(
    package_index: int,
    sub: int,
    name: str,
    energy_uj: int = 1_000_000,
    max_uj: int | None = MAX_UJ,
    nested: bool = False,
) -> ZoneSpec:
    """``intel-rapl:N:M`` named ``core``, ``uncore`` or ``dram``."""
    parent = f"intel-rapl:{package_index}" if nested else None
    return ZoneSpec(f"intel-rapl:{package_index}:{sub}", name, energy_uj, max_uj, parent)


def socket(index: int, dram: bool = True, nested: bool = False) -> list[ZoneSpec]:
    """A package with core and uncore subzones, and a DRAM subzone when ``dram``."""
    zones = [
        package(index),
        subzone(index, 0, "core", nested=nested),
        subzone(index, 1, "uncore", nested=nested),
    ]
    if dram:
        zones.append(subzone(index, 2, "dram", nested=nested))
    return zones


def one_socket(root: Path, nested: bool = False) -> PowercapTree:
    """package-0 with core, uncore and dram."""
    return build_powercap(root, socket(0, nested=nested))


def two_sockets(root: Path) -> PowercapTree:
    """package-0 and package-1, each with core, uncore and dram."""
    return build_powercap(root, socket(0) + socket(1))


def laptop_with_psys(root: Path, psys_uj: int = 5_000_000) -> PowercapTree:
    """package-0 (core, uncore, dram) plus a ``psys`` zone at ``intel-rapl:1``."""
    return build_powercap(root, [*socket(0), ZoneSpec("intel-rapl:1", "psys", psys_uj)])


def with_mmio_duplicate(root: Path) -> PowercapTree:
    """One socket plus ``intel-rapl-mmio:0`` duplicating package-0."""
    return build_powercap(root, [*socket(0), ZoneSpec("intel-rapl-mmio:0", "package-0")])


def mmio_only(root: Path) -> PowercapTree:
    """Only ``intel-rapl-mmio:0`` (package-0): no MSR zones."""
    return build_powercap(root, [ZoneSpec("intel-rapl-mmio:0", "package-0")])


def amd_two_sockets(root: Path) -> PowercapTree:
    """AMD Zen: two packages through the intel-rapl interface, no DRAM zone."""
    return build_powercap(root, [package(0), package(1)])
