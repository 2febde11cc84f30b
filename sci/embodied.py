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

For comparison, Cloud Carbon Footprint's coefficients take 1,000 kgCO2e for a minimal
(one socket, 16 GB, no local disk) rack server, after Teads' 2021 reading of Dell's
R740 life-cycle assessment, and the same 4-year lifespan as Dell's PCF.
"""

from __future__ import annotations

from sci.formula import _finite, _non_negative, _positive, embodied_carbon, years_to_seconds

#: Embodied (non-use) emissions of a Dell PowerEdge R740: 8,640 × (1 − 0.843) kgCO2e.
DEFAULT_SERVER_EMBODIED_KGCO2E = 1356.48
#: The lifespan Dell's PCF (and Cloud Carbon Footprint) assume for a rack server.
DEFAULT_LIFESPAN_YEARS = 4.0


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
