"""A host's embodied emissions (TE) and the share of them one interval carries. Pure.

``DEFAULT_SERVER_EMBODIED_KGCO2E`` is Dell's published product carbon footprint of a
typical 2U rack server, the PowerEdge R740 (Dell, "Product Carbon Footprint PowerEdge
R740", January 2019,
https://i.dell.com/sites/csdocuments/CorpComm_Docs/en/carbon-footprint-poweredge-r740.pdf
as transcribed in Boavizta's environmental-footprint-data, boavizta-data-us.csv): a
life-cycle total of 8,640 kgCO2e for 4 years of use in Europe, 84.3 % of it the use
phase. The remaining 15.7 % is the embodied part, 1,356.48 kgCO2e: manufacturing
(15.2 %, 1,313 kg), the other 0.5 % transport and end of life. Configuration assessed: 2 CPUs,
32 GB RAM, 2 × 300 GB and 1 × 1 TB 2.5" HDDs. The estimate is uncertain (Boavizta
records an error margin of about 98 %); use a host's own LCA when one exists.

That figure is the whole server. Dell's PCF names two CPUs but not the part; as the
**reference server** for virtual machines sci-agent takes it with two 20-core Intel
Xeon Gold 6148 (Skylake-SP, the R740's launch generation, mid-range of its 4–28 cores
per socket) and Hyper-Threading: ``REFERENCE_SERVER_THREADS`` = 80 hardware threads.
A VM's default TE is then its share of that host, TE × vCPUs / 80 (the SCI
specification's resource share, RR/ToR, with vCPUs as the resource). Where the cloud
instance type is known, the host of its family and that host's vCPUs come from Cloud
Carbon Footprint's per-instance embodied coefficients instead (``InstanceHost``).

For comparison, Cloud Carbon Footprint's coefficients take 1,000 kgCO2e for a minimal
(one socket, 16 GB, no local disk) rack server, after Teads' 2021 reading of Dell's
R740 life-cycle assessment, and the same 4-year lifespan as Dell's PCF.
"""

from __future__ import annotations

from dataclasses import dataclass

from sci.formula import _finite, _non_negative, _positive, embodied_carbon, years_to_seconds

#: Embodied (non-use) emissions of a Dell PowerEdge R740: 8,640 × (1 − 0.843) kgCO2e.
DEFAULT_SERVER_EMBODIED_KGCO2E = 1356.48
#: The lifespan Dell's PCF (and Cloud Carbon Footprint) assume for a rack server.
DEFAULT_LIFESPAN_YEARS = 4.0
#: Hardware threads of the reference server (2 × 20 cores × 2 threads, our assumption).
REFERENCE_SERVER_THREADS = 80
REFERENCE_SERVER = "Dell PowerEdge R740 PCF (2019), 2 × 20-core Xeon Gold 6148 assumed"


@dataclass(frozen=True, slots=True)
class InstanceHost:
    """The physical host of a cloud instance family: its TE and its vCPUs (threads)."""

    instance_type: str
    host_kgco2e: float
    host_vcpus: int
    source: str


@dataclass(frozen=True, slots=True)
class EmbodiedFigure:
    """The TE charged to this host (after any VM scaling) and where it came from.

    ``is_default`` is false only when the operator configured the figure.
    """

    kgco2e: float
    basis: str
    is_default: bool


def vm_share_kgco2e(host_kgco2e: float, vcpus: int, host_threads: int) -> float:
    """A VM's share of its host's TE: TE × vCPUs / host threads (at most the whole host)."""
    _non_negative("host_kgco2e", host_kgco2e)
    if vcpus < 1:
        raise ValueError(f"vcpus must be 1 or more, got {vcpus}")
    if host_threads < 1:
        raise ValueError(f"host_threads must be 1 or more, got {host_threads}")
    return host_kgco2e * min(1.0, vcpus / host_threads)


def embodied_figure(
    *,
    configured_kgco2e: float | None,
    vcpus: int,
    virtualised: bool,
    instance: InstanceHost | None = None,
    host_threads: int | None = None,
) -> EmbodiedFigure:
    """The TE of this host: configured, else the instance's share of its host, else (on a
    VM) its share of the reference server, else (bare metal) the whole reference server."""
    if configured_kgco2e is not None:
        _non_negative("configured_kgco2e", configured_kgco2e)
        return EmbodiedFigure(
            configured_kgco2e, f"configured: {configured_kgco2e:g} kgCO2e", is_default=False
        )
    if instance is not None:
        kg = vm_share_kgco2e(instance.host_kgco2e, vcpus, instance.host_vcpus)
        basis = (
            f"cloud instance {instance.instance_type}: {instance.host_kgco2e:g} kgCO2e host × "
            f"{vcpus}/{instance.host_vcpus} vCPUs ({instance.source})"
        )
        return EmbodiedFigure(kg, basis, is_default=True)
    if virtualised:
        threads = host_threads or REFERENCE_SERVER_THREADS
        kg = vm_share_kgco2e(DEFAULT_SERVER_EMBODIED_KGCO2E, vcpus, threads)
        origin = "configured host_threads" if host_threads else REFERENCE_SERVER
        basis = (
            f"virtual machine: {DEFAULT_SERVER_EMBODIED_KGCO2E:g} kgCO2e reference server × "
            f"{vcpus}/{threads} threads ({origin})"
        )
        return EmbodiedFigure(kg, basis, is_default=True)
    basis = f"bare metal: the whole reference server, {DEFAULT_SERVER_EMBODIED_KGCO2E:g} kgCO2e"
    return EmbodiedFigure(
        DEFAULT_SERVER_EMBODIED_KGCO2E, f"{basis} (Dell PowerEdge R740 PCF, 2019)", is_default=True
    )


def host_embodied_share(
    total_kgco2e: float, lifespan_years: float, interval_s: float, resource_share: float
) -> float:
    """Grams of TE × interval / lifespan × resource_share (a share within 0..1)."""
    _non_negative("total_kgco2e", total_kgco2e)
    _positive("lifespan_years", lifespan_years)
    _non_negative("interval_s", interval_s)
    if not 0.0 <= _finite("resource_share", resource_share) <= 1.0:
        raise ValueError(f"resource_share must be within 0..1, got {resource_share}")
    return embodied_carbon(
        total_kgco2e * 1000.0, interval_s, years_to_seconds(lifespan_years), resource_share
    )
