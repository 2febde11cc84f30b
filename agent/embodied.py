"""The embodied emissions (TE) charged to this host, from the config and the host's facts.

``[embodied] total_kgco2e`` set explicitly wins. Otherwise the cloud instance type
(``[embodied] instance_type``, else read from the DMI product name an AWS Nitro
instance exposes) selects the host of its family in the shipped table
(``agent/data/aws-instance-embodied.csv``), and the instance is charged its vCPUs'
share of it; else a virtual machine (cpuinfo ``hypervisor`` flag) is charged its
vCPUs' share of the reference server; else (bare metal) the whole reference server.
The arithmetic is ``sci.embodied.embodied_figure``.
"""

from __future__ import annotations

import csv
import re
from functools import cache
from importlib import resources
from pathlib import Path

from agent.config import Config, ConfigError
from agent.sensors.model import CpuInfo
from sci.embodied import EmbodiedFigure, InstanceHost, embodied_figure

_INSTANCE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$")
CCF_SOURCE = "Cloud Carbon Footprint AWS embodied coefficients"


@cache
def instance_table() -> dict[str, tuple[float, int]]:
    """Instance family → (host TE in kgCO2e, host vCPUs)."""
    out: dict[str, tuple[float, int]] = {}
    path = resources.files("agent").joinpath("data/aws-instance-embodied.csv")
    with path.open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            out[row["family"]] = (float(row["host_kgco2e"]), int(row["host_vcpus"]))
    return out


def instance_host(instance_type: str) -> InstanceHost | None:
    """The host of ``instance_type``'s family, or ``None`` when the table lacks it."""
    family = instance_type.split(".", 1)[0]
    found = instance_table().get(family)
    if found is None:
        return None
    return InstanceHost(instance_type, found[0], found[1], CCF_SOURCE)


def detect_instance_type(sys_root: str | Path = "/sys") -> str | None:
    """The EC2 instance type from DMI (Nitro instances name it), or ``None``."""
    dmi = Path(sys_root, "class/dmi/id")
    try:
        vendor = (dmi / "sys_vendor").read_text(encoding="utf-8").strip()
        product = (dmi / "product_name").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    if vendor == "Amazon EC2" and _INSTANCE.match(product):
        return product
    return None


def host_embodied(
    config: Config, vcpus: int, cpuinfo: CpuInfo | None = None, sys_root: str | None = None
) -> EmbodiedFigure:
    """The TE of this host; raises ``ConfigError`` for an instance type not in the table."""
    cfg = config.embodied
    info = cpuinfo or CpuInfo.read(config.procfs.root)
    instance: InstanceHost | None = None
    if cfg.total_kgco2e is None:
        if cfg.instance_type is not None:
            instance = instance_host(cfg.instance_type)
            if instance is None:
                families = ", ".join(sorted(instance_table()))
                raise ConfigError(
                    f"embodied.instance_type: no embodied data for {cfg.instance_type!r}"
                    f" (families shipped: {families}); set embodied.total_kgco2e instead"
                )
        else:
            detected = detect_instance_type(sys_root or config.procfs.sys_root)
            instance = instance_host(detected) if detected else None
    return embodied_figure(
        configured_kgco2e=cfg.total_kgco2e,
        vcpus=max(1, vcpus),
        virtualised=info.virtualised,
        instance=instance,
        host_threads=cfg.host_threads,
    )


HOW_TO_SET = (
    "set [embodied] total_kgco2e to the host's LCA or PCF figure (a VM: its share),"
    " or instance_type (e.g. m5.large) or host_threads"
)
