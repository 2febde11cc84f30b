"""Published power models for hosts without energy counters.

- Teads curve: CPU power as a share of TDP at 0/10/50/100 % load
  (12/32/75/102 %), linear between the points (Teads Engineering, "Building an AWS
  EC2 carbon emissions dataset", 2021).
- Cloud Carbon Footprint (CCF): per-vCPU minimum and maximum watts, linear in
  utilisation; the CCF averages are 0.74 W and 3.5 W per vCPU (AWS, CCF's
  "Methodology" page, Appendix I); per-microarchitecture figures ship in
  ``agent/data/ccf-cpu-coefficients.csv``.
- Memory: CCF's 0.392 W per GB.

Each model's zero-load power (``*_static_watts``) is the floor the attribution stage
keeps out of processes' dynamic energy: Teads 12 % of TDP, CCF vCPUs × minimum watts,
and all of the memory model (it does not depend on load).
"""

from __future__ import annotations

import math
from itertools import pairwise

#: (utilisation %, share of TDP) points of the Teads curve.
TEADS_POINTS: tuple[tuple[float, float], ...] = (
    (0.0, 0.12),
    (10.0, 0.32),
    (50.0, 0.75),
    (100.0, 1.02),
)
CCF_MIN_W_PER_VCPU = 0.74
CCF_MAX_W_PER_VCPU = 3.5
CCF_MEMORY_W_PER_GB = 0.392


def _check_non_negative(name: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be 0 or more (and finite), got {value}")


def _check_utilization(utilization_pct: float) -> None:
    if not 0.0 <= utilization_pct <= 100.0:  # also rejects NaN
        raise ValueError(f"utilization_pct must be within 0..100, got {utilization_pct}")


def teads_watts(tdp_w: float, utilization_pct: float) -> float:
    """CPU watts at ``utilization_pct`` for a CPU of ``tdp_w`` on the Teads curve."""
    if not (math.isfinite(tdp_w) and tdp_w > 0):
        raise ValueError(f"tdp_w must be greater than 0, got {tdp_w}")
    _check_utilization(utilization_pct)
    for (x0, y0), (x1, y1) in pairwise(TEADS_POINTS):
        if utilization_pct <= x1:
            return tdp_w * (y0 + (y1 - y0) * (utilization_pct - x0) / (x1 - x0))
    return tdp_w * TEADS_POINTS[-1][1]  # pragma: no cover - 100 % is the last point


def ccf_watts(
    vcpus: float,
    utilization_pct: float,
    min_w_per_vcpu: float = CCF_MIN_W_PER_VCPU,
    max_w_per_vcpu: float = CCF_MAX_W_PER_VCPU,
) -> float:
    """CPU watts of ``vcpus`` at ``utilization_pct``: vCPUs × (min + u × (max − min))."""
    _check_non_negative("vcpus", vcpus)
    _check_non_negative("min_w_per_vcpu", min_w_per_vcpu)
    _check_non_negative("max_w_per_vcpu", max_w_per_vcpu)
    if max_w_per_vcpu < min_w_per_vcpu:
        raise ValueError(
            f"max_w_per_vcpu ({max_w_per_vcpu}) must be ≥ min_w_per_vcpu ({min_w_per_vcpu})"
        )
    _check_utilization(utilization_pct)
    share = utilization_pct / 100.0
    return vcpus * (min_w_per_vcpu + share * (max_w_per_vcpu - min_w_per_vcpu))


def teads_static_watts(tdp_w: float) -> float:
    """The Teads curve at zero load: 12 % of TDP."""
    return teads_watts(tdp_w, 0.0)


def ccf_static_watts(vcpus: float, min_w_per_vcpu: float = CCF_MIN_W_PER_VCPU) -> float:
    """CCF at zero load: vCPUs × minimum watts per vCPU."""
    return ccf_watts(vcpus, 0.0, min_w_per_vcpu, min_w_per_vcpu)


def memory_watts(memory_gb: float, w_per_gb: float = CCF_MEMORY_W_PER_GB) -> float:
    """Memory watts for ``memory_gb`` gigabytes at ``w_per_gb``."""
    _check_non_negative("memory_gb", memory_gb)
    _check_non_negative("w_per_gb", w_per_gb)
    return memory_gb * w_per_gb
