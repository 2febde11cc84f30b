"""Cloud Carbon Footprint's per-vCPU watts by CPU microarchitecture, and which row fits.

The table (``agent/data/ccf-cpu-coefficients.csv``, sources in ``agent/data/README.md``)
holds CCF's minimum and maximum watts per vCPU for each microarchitecture it
publishes. The row is chosen from ``/proc/cpuinfo``: the model name first (Xeon
Scalable and E5/E3 numbering, EPYC numbering, the names QEMU gives its CPU models),
then the vendor's family/model numbers, which still identify the chip when a
hypervisor shows only "AMD EPYC". A CPU CCF has no row for (Ice Lake, Sapphire
Rapids, EPYC 4th Gen…) gets ``None`` and a reason, so the model says why it uses
CCF's average instead.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

#: Microarchitectures CCF publishes no coefficients for (named so the reason says so).
_UNPUBLISHED = "CCF publishes no coefficients for"


@dataclass(frozen=True, slots=True)
class CcfRow:
    """One row of CCF's table: watts per vCPU at 0 % and 100 % load."""

    microarchitecture: str
    min_w_per_vcpu: float
    max_w_per_vcpu: float


@dataclass(frozen=True, slots=True)
class Processor:
    """The ``/proc/cpuinfo`` fields that identify a CPU's microarchitecture."""

    model_name: str = ""
    vendor: str = ""  # GenuineIntel, AuthenticAMD; "" on Arm
    family: int | None = None
    model: int | None = None
    stepping: int | None = None
    arm_implementer: str = ""  # "0x41" (Arm Ltd)
    arm_part: str = ""  # "0xd0c" (Neoverse N1)


@cache
def table() -> dict[str, CcfRow]:
    """CCF's rows by microarchitecture name."""
    rows: dict[str, CcfRow] = {}
    path = resources.files("agent").joinpath("data/ccf-cpu-coefficients.csv")
    with path.open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            name = row["microarchitecture"]
            rows[name] = CcfRow(name, float(row["min_w_per_vcpu"]), float(row["max_w_per_vcpu"]))
    return rows


_SCALABLE = re.compile(r"xeon.*\b(?:platinum|gold|silver|bronze)\s+\d(\d)\d\d", re.I)
_E5 = re.compile(r"\bE([357])-\d{4}[A-Z]*\b(?:\s+v(\d))?", re.I)
_XEON_E = re.compile(r"xeon.*\bE-2[12]\d\d", re.I)
_EPYC = re.compile(r"\bEPYC\s+(\d)\w\w(\d)\b", re.I)
_SCALABLE_GEN = {"1": "Skylake", "2": "Cascade Lake", "3": "Ice Lake", "4": "Sapphire Rapids"}
_E5_GEN = {None: "Sandy Bridge", "2": "Ivy Bridge", "3": "Haswell", "4": "Broadwell"}
_E3_GEN = _E5_GEN | {"5": "Skylake"}
_E7_GEN = {"2": "Ivy Bridge", "3": "Haswell", "4": "Broadwell"}
_EPYC_GEN = {
    "1": "AMD EPYC 1st Gen",
    "2": "AMD EPYC 2nd Gen",
    "3": "AMD EPYC 3rd Gen",
    "4": "AMD EPYC 4th Gen",
}
#: Names hypervisors (QEMU/KVM CPU models) give, searched in the lower-cased model name.
_KEYWORDS = (
    ("cascadelake", "Cascade Lake"),
    ("cascade lake", "Cascade Lake"),
    ("skylake", "Skylake"),
    ("broadwell", "Broadwell"),
    ("haswell", "Haswell"),
    ("ivybridge", "Ivy Bridge"),
    ("ivy bridge", "Ivy Bridge"),
    ("sandybridge", "Sandy Bridge"),
    ("sandy bridge", "Sandy Bridge"),
    ("icelake", "Ice Lake"),
    ("sapphirerapids", "Sapphire Rapids"),
    ("epyc-naples", "AMD EPYC 1st Gen"),
    ("epyc-rome", "AMD EPYC 2nd Gen"),
    ("epyc-milan", "AMD EPYC 3rd Gen"),
    ("epyc-genoa", "AMD EPYC 4th Gen"),
)
#: Intel family 6 server/desktop model numbers (Intel SDM, vol. 4, table 2-1).
_INTEL_MODELS = {
    42: "Sandy Bridge",
    45: "Sandy Bridge",
    58: "Ivy Bridge",
    62: "Ivy Bridge",
    60: "Haswell",
    63: "Haswell",
    69: "Haswell",
    70: "Haswell",
    61: "Broadwell",
    71: "Broadwell",
    79: "Broadwell",
    86: "Broadwell",
    78: "Skylake",
    94: "Skylake",
    106: "Ice Lake",
    108: "Ice Lake",
    143: "Sapphire Rapids",
}
#: Arm Ltd cores AWS builds Graviton on: Cortex-A72 (Graviton), Neoverse N1 (Graviton2).
_ARM_PARTS = {"0xd08": "AWS Graviton", "0xd0c": "AWS Graviton2"}


def microarchitecture(cpu: Processor) -> tuple[str | None, str]:
    """The microarchitecture of ``cpu`` and how it was recognised (None: not recognised)."""
    name = cpu.model_name
    if match := _SCALABLE.search(name):
        digit = match.group(1)
        return _SCALABLE_GEN.get(digit), f"Xeon Scalable {digit}xxx numbering in {name!r}"
    if match := _EPYC.search(name):
        digit = match.group(2)
        return _EPYC_GEN.get(digit), f"EPYC numbering (last digit {digit}) in {name!r}"
    if match := _E5.search(name):
        kind, version = match.group(1), match.group(2)
        versions = _E3_GEN if kind == "3" else _E5_GEN if kind == "5" else _E7_GEN
        return versions.get(version), f"Xeon E{kind} v{version or '1'} in {name!r}"
    if _XEON_E.search(name):
        return "Coffee Lake", f"Xeon E-2100/E-2200 in {name!r}"
    lowered = name.lower()
    for keyword, arch in _KEYWORDS:
        if keyword in lowered:
            return arch, f"{keyword!r} in {name!r}"
    return _from_numbers(cpu)


def _from_numbers(cpu: Processor) -> tuple[str | None, str]:
    where = f"family {cpu.family} model {cpu.model}"
    if cpu.vendor == "AuthenticAMD" and cpu.family is not None and cpu.model is not None:
        if cpu.family == 0x17 and cpu.model == 0x01:
            return "AMD EPYC 1st Gen", f"AMD {where} (Naples)"
        if cpu.family == 0x17 and cpu.model == 0x31:
            return "AMD EPYC 2nd Gen", f"AMD {where} (Rome)"
        if cpu.family == 0x19 and cpu.model < 0x10:
            return "AMD EPYC 3rd Gen", f"AMD {where} (Milan)"
        if cpu.family == 0x19 and 0x10 <= cpu.model < 0x20:
            return "AMD EPYC 4th Gen", f"AMD {where} (Genoa)"
    if cpu.vendor == "GenuineIntel" and cpu.family == 6 and cpu.model is not None:
        if cpu.model == 85:  # Skylake-SP, Cascade Lake (stepping 5-7), Cooper Lake (10-11)
            stepping = cpu.stepping or 0
            arch = "Skylake" if stepping < 5 else "Cascade Lake" if stepping < 8 else "Cooper Lake"
            return arch, f"Intel {where} stepping {stepping}"
        if cpu.model == 158 and (cpu.stepping or 0) >= 10:
            return "Coffee Lake", f"Intel {where} stepping {cpu.stepping}"
        if cpu.model in _INTEL_MODELS:
            return _INTEL_MODELS[cpu.model], f"Intel {where}"
    if cpu.arm_implementer == "0x41" and cpu.arm_part in _ARM_PARTS:
        return _ARM_PARTS[cpu.arm_part], f"Arm part {cpu.arm_part}"
    return None, f"{cpu.model_name or 'no model name'!r} ({cpu.vendor or 'unknown vendor'} {where})"


def ccf_row(cpu: Processor) -> tuple[CcfRow | None, str]:
    """CCF's row for ``cpu`` and why; ``None`` (with the reason) when CCF has none."""
    arch, how = microarchitecture(cpu)
    if arch is None:
        return None, f"microarchitecture not recognised from {how}"
    row = table().get(arch)
    if row is None:
        return None, f"{_UNPUBLISHED} {arch} ({how})"
    return row, how
