"""sci.formula, sci.embodied and sci.power against the SCI specification's own numbers.

Worked examples come from the Green Software Foundation's SCI specification and its
published case studies; each test names its source. Where a published figure's
arithmetic is off, the test asserts the correct arithmetic and says what was published.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sci import (
    DEFAULT_LIFESPAN_YEARS,
    DEFAULT_SERVER_EMBODIED_KGCO2E,
    Interval,
    ccf_watts,
    embodied_carbon,
    energy_weighted_intensity,
    host_embodied_share,
    joules_to_kwh,
    kwh_to_joules,
    memory_watts,
    operational_carbon,
    sci,
    sci_over,
    teads_watts,
    time_weighted_intensity,
    years_to_seconds,
)

HOUR = 3600.0
YEAR_365 = 365 * 24 * HOUR  # the case studies' "4 years = 35,040 h"
NAN, INF = float("nan"), float("inf")


def close(a: float | None, b: float, rel: float = 1e-9) -> bool:
    return a is not None and math.isclose(a, b, rel_tol=rel)


# --- SCI specification ------------------------------------------------------------
# github.com/Green-Software-Foundation/sci, SPEC.md v1.1.0, "Embodied emissions":
# "1000 kg ... expected lifespan of four years ... reserved for one hour ... would be
# 1000 * 1/(4*365*24) or around 28 g". The exact value is 28.54 g, which rounds to 29 g:
# the published "around 28 g" truncates.


def test_spec_time_share_example() -> None:
    m = embodied_carbon(1000e3, HOUR, 4 * YEAR_365)
    assert close(m, 1000e3 / 35_040) and round(m, 2) == 28.54
    # sci-agent's years are 365.25 days: 28.52 g for the same hour.
    assert round(embodied_carbon(1000e3, HOUR, years_to_seconds(4)), 2) == 28.52


def test_spec_resource_share_is_a_fraction_of_the_time_share() -> None:
    # SPEC.md: M = TE × (TiR/EL) × (RR/ToR); e.g. 2 of 16 vCPUs reserved.
    whole = embodied_carbon(1000e3, HOUR, 4 * YEAR_365)
    assert close(embodied_carbon(1000e3, HOUR, 4 * YEAR_365, 2, 16), whole / 8)


# --- eShoppen case study ----------------------------------------------------------
# github.com/Green-Software-Foundation/sci, case-studies/eshoppen.md ("(Quantify) SCI
# Value Calculation"); also sci-guide use-case-submissions/msft-eShoppen.md.
# I = 951 gCO2e/kWh (India), TiR = 1 h, EL = 4 years = 35,040 h, R = 500 users in 1 h.
ESHOP_I = 951.0
EL_4Y = 35_040 * HOUR


def test_eshoppen_app_server() -> None:
    # E = 1 h × 1 chip × 205 W TDP × 0.32 / 1000 = 0.0656 kWh: 0.32 is the Teads curve
    # at 10 %, though the measured utilisation was 18.39 % (interpolated: 0.41 of TDP,
    # 0.0841 kWh). The case study kept the 10 % point; we check its E as published.
    e = teads_watts(205, 10) * 1 / 1000
    assert close(e, 0.0656)
    assert round(teads_watts(205, 18.3922) / 1000, 4) == 0.0841
    # M = 1205.52 kg × 1/35040 × 2/16 = 4.3005 g. Published: "4.305 gCO2e" (a slip of
    # one digit), hence its SCI of 66.6906 g; the correct SCI is 66.6861 g.
    m = embodied_carbon(1205.52e3, HOUR, EL_4Y, 2, 16)
    assert round(m, 4) == 4.3005
    assert round(sci(e, ESHOP_I, m, 1) or 0, 4) == 66.6861
    assert round(operational_carbon(e, ESHOP_I) + 4.305, 4) == 66.6906  # the published one


def test_eshoppen_database_server() -> None:
    # Published working: "(0.10 * 1 hour * 1 chip * 150 TDP * 0.32)/1000 = 0.048" — the
    # stray 0.10 factor would give 0.0048; the result 0.048 omits it, and SCI uses 0.048.
    e = 1 * 150 * 0.32 / 1000
    assert close(e, 0.048)
    m = embodied_carbon(1433.12e3, HOUR, EL_4Y, 2, 16)
    assert round(m, 3) == 5.112  # published 5.112 g: correct
    assert round(sci(e, ESHOP_I, m, 1) or 0, 2) == 50.76  # published 50.76 g: correct


def test_eshoppen_client_device() -> None:
    # CPU: 28 W × 0.12 × 1 h = 0.00336 kWh. Memory: published "12.16 TDP * 0.12 ... =
    # 0.01216" (the 0.12 is not applied in the result; we keep the published 0.01216).
    cpu, memory = 28 * 0.12 / 1000, 0.01216
    m = embodied_carbon(350e3, HOUR, EL_4Y)
    assert round(m, 4) == 9.9886  # published "9.98 gCO2e": truncated, rounds to 9.99
    # Published: ((0.0036 + 0.01216) × 951) + 9.98 = 24.96 g — it typed 0.0036 for the
    # CPU's 0.00336 kWh. With the case study's own numbers the SCI is 24.75 g.
    assert round(sci(cpu + memory, ESHOP_I, m, 1) or 0, 2) == 24.75
    assert round((0.0036 + memory) * ESHOP_I + 9.98, 3) == 24.968  # the published slip


def test_eshoppen_total() -> None:
    # Published total: 156.9586 g per R (500 users in 1 h). Its own four parts (66.6906
    # + 50.76 + 24.96 + 14.54) add up to 156.9506; with the slips above corrected the
    # application's SCI is 156.74 g per R, 0.3135 g per user.
    parts = [
        sci(0.0656, ESHOP_I, embodied_carbon(1205.52e3, HOUR, EL_4Y, 2, 16), 1),
        sci(0.048, ESHOP_I, embodied_carbon(1433.12e3, HOUR, EL_4Y, 2, 16), 1),
        sci(0.00336 + 0.01216, ESHOP_I, embodied_carbon(350e3, HOUR, EL_4Y), 1),
        sci(0.01529, ESHOP_I, 0.0, 1),  # network: 0.01529 kWh, no M (published 14.54 g)
    ]
    total = sum(p or 0 for p in parts)
    assert round(total, 2) == 156.74
    assert round(66.6906 + 50.76 + 24.96 + 14.54, 4) == 156.9506  # not 156.9586
    assert round(total / 500, 4) == 0.3135


# --- NTT DATA on-premise web system -----------------------------------------------
# github.com/Green-Software-Foundation/sci-guide,
# use-case-submissions/nttdatta-On-Premise-Web-system.md ("(Quantify) SCI Value
# Calculation"). I = 457 gCO2/kWh (TEPCO 2021), PUE 1.5 in E, R = 1 web interaction,
# 10,564.65 WIPS × 3600 = 38,032,740 WI per hour.
NTT_I = 457.0
NTT_R = 10_564.65 * 3600
NTT_SWITCH_M = embodied_carbon(251e3, HOUR, EL_4Y)  # 0.251 t per switch
NTT_SERVER_M = embodied_carbon(6270e3, HOUR, EL_4Y)  # HPE DL360 Gen10, 6,270 kg


def test_ntt_scale_factor_and_hourly_embodied() -> None:
    assert NTT_R == 38_032_740
    assert round(NTT_SWITCH_M, 2) == 7.16  # published 7.16 g/h
    # Published "178.93 gCO2eq/hour": 6,270,000 / 35,040 = 178.938, which rounds to 178.94.
    assert round(NTT_SERVER_M, 3) == 178.938


def test_ntt_components() -> None:
    # L3 switch: published 2.47e-7 g per WI (truncated; 2.479e-7).
    assert close(sci(4.96e-3, NTT_I, NTT_SWITCH_M, NTT_R), 2.4794e-7, rel=1e-4)
    # LB/Web server #1: published 63.74e-7 (truncated; 63.75e-7).
    assert close(sci(0.139, NTT_I, NTT_SERVER_M, NTT_R), 63.751e-7, rel=1e-4)
    # DB server #1: published 78.04e-7 (78.05e-7 rounded).
    assert close(sci(0.258, NTT_I, NTT_SERVER_M, NTT_R), 78.050e-7, rel=1e-4)


def test_ntt_total_is_the_sum_of_component_scores() -> None:
    switches = [4.96e-3, 8.11e-4, 0.0, 9.55e-4, 1.14e-8]  # L3, then L2 #1-#4 (kWh)
    servers = [0.139, 0.116, 0.149, 0.147, 0.258, 0.193]  # LB/Web, AP, DB (kWh)
    parts = [sci(e, NTT_I, NTT_SWITCH_M, NTT_R) for e in switches]
    parts += [sci(e, NTT_I, NTT_SERVER_M, NTT_R) for e in servers]
    total = sum(p or 0 for p in parts)
    # Published 4.12e-5 g per WI: each step truncated. Correct: 4.129e-5 (rounds to 4.13e-5).
    assert close(total, 4.1291e-5, rel=1e-4)
    # Components sharing one R: the sum of their SCIs is Σ carbon / R, as sci_over gives
    # when R is counted once.
    window = [Interval(e, NTT_I, NTT_SWITCH_M, 0) for e in switches]
    window += [Interval(e, NTT_I, NTT_SERVER_M, 0) for e in servers]
    assert close(sci_over([*window, Interval(0, 0, 0, NTT_R)]), total)


# --- Farm Insights (Raspberry Pi) -------------------------------------------------
# github.com/Green-Software-Foundation/sci-guide,
# use-case-submissions/farm-insights-Raspberry-Pi.md: 0.003 kWh/day, 0.713 kg/kWh, 55 kg
# embodied, R = one device for a year. Published: (1.095 × 260) + 55 = 339.7 "CO2e per
# year", where 260 = 0.713 × 365 multiplies the intensity by the days a second time.


def test_farm_insights_operational_carbon_per_year() -> None:
    energy = 0.003 * 365  # 1.095 kWh a year
    assert round(operational_carbon(energy, 713), 3) == 780.735  # 0.78 kg, not 284.7 kg
    # With its own M (all 55 kg in the year) the device-year is 55.78 kg, not 339.7 kg.
    assert round(sci(energy, 713, 55e3, 1) or 0, 3) == 55_780.735
    # Amortised over a 4-year life, as the specification asks, M is 13.75 kg a year.
    assert close(embodied_carbon(55e3, 1.0, 4.0), 13_750.0)


# --- Discussion: an example certification application ----------------------------
# github.com/Green-Software-Foundation/sci/discussions/404, "E-commerce API Service",
# R = 1,000 API requests, 45,000 requests in 30 days (45 units).


def test_certification_example_per_thousand_requests() -> None:
    energy = (21.6 + 1.44 + 14.4 + 0.9) * 1.2  # 38.34 kWh × PUE 1.2
    assert close(energy, 46.008)
    assert round(energy / 45, 3) == 1.022  # published 1.022 kWh per 1,000 requests
    # Published "M per 1,000 requests: (96,574.9 / 45,000) × 1,000 = 2.146 gCO2eq" — the
    # expression is 2,146.1 g: the result is per request, not per 1,000 requests.
    m = 49_315 + 30_821.9 + 16_438
    assert close(m, 96_574.9)
    assert round(sci(0, 0, m, 45) or 0, 1) == 2146.1


# --- Cloud Carbon Footprint coefficients ------------------------------------------
# github.com/cloud-carbon-footprint/cloud-carbon-coefficients, ccfcoef/constants.py:
# 1,000 kgCO2eq base server, 4-year life, hourly factor "1000 / 4 / 12 / 30 / 24" — a
# year of 12 × 30 = 360 days, so its 28.94 g/h is 1.46 % above 1,000 kg / 35,064 h.


def test_ccf_hourly_manufacturing_factor_uses_a_360_day_year() -> None:
    ccf = 1000e3 / 4 / 12 / 30 / 24
    ours = embodied_carbon(1000e3, HOUR, years_to_seconds(4))
    assert round(ccf, 2) == 28.94 and round(ours, 2) == 28.52
    assert round(ccf / ours - 1, 4) == 0.0146


# --- Default embodied figure ------------------------------------------------------
# Dell PowerEdge R740 PCF (January 2019), via Boavizta's boavizta-data-us.csv: 8,640 kg
# in total, 84.3 % use phase. HPE ProLiant DL380 Gen10 mainstream (US) PCF, via the
# Technology Carbon Standard (ScottLogic) server example: 30.5 % of 5,657 kg embodied.


def test_default_server_embodied_is_the_r740_non_use_share() -> None:
    assert math.isclose(DEFAULT_SERVER_EMBODIED_KGCO2E, 8640 * (1 - 0.843))
    assert DEFAULT_LIFESPAN_YEARS == 4
    # One hour of a whole R740: 1,356.48 kg / (4 × 365.25 × 24 h) = 38.69 g.
    assert round(host_embodied_share(DEFAULT_SERVER_EMBODIED_KGCO2E, 4, HOUR, 1.0), 2) == 38.69


def test_hpe_dl380_embodied_per_year() -> None:
    embodied = 5657 * 0.305  # 1,725.4 kg, published rounded to 1,726
    assert round(embodied) == 1725
    assert close(host_embodied_share(1726, 4, years_to_seconds(1), 1.0), 431.5e3)


def test_host_embodied_share_is_te_times_time_times_share() -> None:
    got = host_embodied_share(1200, 4, 300, 0.25)
    assert close(got, 1200e3 * 300 / years_to_seconds(4) * 0.25)
    assert host_embodied_share(1200, 4, 0, 1.0) == 0.0


# --- The window score is a ratio of sums ------------------------------------------


def test_sci_over_is_sum_over_sum_not_mean_of_ratios() -> None:
    # Two intervals of 10 g each: 1 unit, then 100 units.
    window = [(0.0, 0.0, 10.0, 1.0), (0.0, 0.0, 10.0, 100.0)]
    assert close(sci_over(window), 20 / 101)
    mean_of_ratios = (10 / 1 + 10 / 100) / 2
    assert mean_of_ratios == 5.05 and not close(sci_over(window), mean_of_ratios)


def test_sci_over_accepts_intervals_and_plain_tuples() -> None:
    named = [Interval(0.5, 200.0, 3.0, 10.0), Interval(1.5, 100.0, 1.0, 30.0)]
    plain = [(e, i, m, r) for e, i, m, r in named]
    assert close(sci_over(named), (100 + 3 + 150 + 1) / 40)
    assert sci_over(named) == sci_over(plain) == sci_over(iter(named))


def test_zero_units_is_undefined() -> None:
    assert sci(1.0, 100.0, 5.0, 0) is None
    assert sci_over([(1.0, 100.0, 5.0, 0.0), (2.0, 50.0, 1.0, 0.0)]) is None
    assert sci_over([]) is None


def test_weighted_intensities() -> None:
    # 1 h at 100 then 3 h at 300 g/kWh: time-weighted I = 250.
    assert close(time_weighted_intensity([(100.0, 3600.0), (300.0, 3 * 3600.0)]), 250.0)
    # 3 kWh at 100 and 1 kWh at 300: energy-weighted I = 150 and E × I = Σ O.
    samples = [(100.0, 3.0), (300.0, 1.0)]
    effective = energy_weighted_intensity(samples)
    assert close(effective, 150.0)
    assert close(operational_carbon(4.0, effective or 0), 100 * 3 + 300 * 1)
    assert time_weighted_intensity([]) is None
    assert time_weighted_intensity([(120.0, 0.0)]) is None
    assert energy_weighted_intensity([(120.0, 0.0)]) is None


def test_unit_helpers() -> None:
    assert joules_to_kwh(3.6e6) == 1.0 and kwh_to_joules(2.5) == 9e6
    assert close(joules_to_kwh(kwh_to_joules(0.123)), 0.123)
    assert years_to_seconds(1) == 365.25 * 86_400 == 31_557_600


# --- Validation: every bad argument is named --------------------------------------

INVALID: list[tuple[Callable[..., Any], tuple[Any, ...], str]] = [
    (operational_carbon, (-1, 100), "energy_kwh must be ≥ 0, got -1"),
    (operational_carbon, (1, -5), "intensity_gco2_per_kwh must be ≥ 0"),
    (operational_carbon, (NAN, 100), "energy_kwh must be a finite number"),
    (operational_carbon, (1, INF), "intensity_gco2_per_kwh must be a finite number"),
    (embodied_carbon, (-1, 1, 1), "total_embodied_g must be ≥ 0"),
    (embodied_carbon, (1, -1, 1), "time_reserved_s must be ≥ 0"),
    (embodied_carbon, (1, 1, 0), "expected_lifespan_s must be > 0, got 0"),
    (embodied_carbon, (1, 1, -4), "expected_lifespan_s must be > 0"),
    (embodied_carbon, (1, 1, NAN), "expected_lifespan_s must be a finite number"),
    (embodied_carbon, (1, 1, 1, -1, 2), "resources_reserved must be ≥ 0"),
    (embodied_carbon, (1, 1, 1, 3, 2), "resources_reserved must be ≤ total_resources (2)"),
    (embodied_carbon, (1, 1, 1, 0, 0), "total_resources must be > 0"),
    (embodied_carbon, (1, 1, 1, 1, INF), "total_resources must be a finite number"),
    (embodied_carbon, (INF, 1, 1), "total_embodied_g must be a finite number"),
    (sci, (-1, 1, 1, 1), "energy_kwh must be ≥ 0"),
    (sci, (1, -1, 1, 1), "intensity_gco2_per_kwh must be ≥ 0"),
    (sci, (1, 1, -1, 1), "embodied_g must be ≥ 0"),
    (sci, (1, 1, 1, -1), "functional_units must be ≥ 0"),
    (sci, (1, 1, NAN, 1), "embodied_g must be a finite number"),
    (sci, (1, 1, 1, NAN), "functional_units must be a finite number"),
    (sci, (1, 1, 1, INF), "functional_units must be a finite number"),
    (sci_over, ([(1, 1, 1, 1), (-1, 1, 1, 1)],), "intervals[1].energy_kwh must be ≥ 0"),
    (sci_over, ([(1, NAN, 1, 1)],), "intervals[0].intensity_gco2_per_kwh must be a finite"),
    (sci_over, ([(1, 1, -2, 1)],), "intervals[0].embodied_g must be ≥ 0"),
    (sci_over, ([(1, 1, 1, -3)],), "intervals[0].units must be ≥ 0"),
    (sci_over, ([(1, 1, 1)],), "intervals[0] must be (energy_kwh, intensity_gco2_per_kwh"),
    (time_weighted_intensity, ([(-1, 1)],), "samples[0].intensity_gco2_per_kwh must be ≥ 0"),
    (time_weighted_intensity, ([(1, 1), (1, -1)],), "samples[1].duration_s must be ≥ 0"),
    (energy_weighted_intensity, ([(1, INF)],), "samples[0].energy_kwh must be a finite"),
    (joules_to_kwh, (-1,), "joules must be ≥ 0"),
    (kwh_to_joules, (NAN,), "kwh must be a finite number"),
    (years_to_seconds, (-4,), "years must be ≥ 0"),
    (host_embodied_share, (-1, 4, 1, 1), "total_kgco2e must be ≥ 0"),
    (host_embodied_share, (1, 0, 1, 1), "lifespan_years must be > 0"),
    (host_embodied_share, (1, 4, -1, 1), "interval_s must be ≥ 0"),
    (host_embodied_share, (1, 4, 1, 1.5), "resource_share must be within 0..1, got 1.5"),
    (host_embodied_share, (1, 4, 1, NAN), "resource_share must be a finite number"),
]


@pytest.mark.parametrize(
    ("func", "args", "message"), INVALID, ids=[f"{f.__name__}-{m}" for f, _, m in INVALID]
)
def test_invalid_arguments_raise_a_named_value_error(
    func: Callable[..., Any], args: tuple[Any, ...], message: str
) -> None:
    with pytest.raises(ValueError) as err:
        func(*args)
    assert str(err.value).startswith(message)


# --- Properties -------------------------------------------------------------------

amount = st.floats(0, 1e6, allow_nan=False, allow_subnormal=False)
count = st.floats(1e-3, 1e6, allow_nan=False, allow_subnormal=False)
interval = st.builds(Interval, amount, st.floats(0, 2000, allow_subnormal=False), amount, count)


@given(interval)
def test_one_interval_window_is_its_sci(i: Interval) -> None:
    assert close(sci_over([i]), sci(*i) or 0)


@given(interval)
def test_halving_an_interval_keeps_the_score(i: Interval) -> None:
    half = Interval(i.energy_kwh / 2, i.intensity_gco2_per_kwh, i.embodied_g / 2, i.units / 2)
    assert close(sci_over([half, half]), sci_over([i]) or 0)


@given(st.lists(interval, min_size=1, max_size=20), st.floats(1e-3, 1e3))
def test_scaling_units_by_k_divides_the_score_by_k(window: list[Interval], k: float) -> None:
    scaled = [i._replace(units=i.units * k) for i in window]
    assert close(sci_over(scaled), (sci_over(window) or 0) / k)


@given(st.lists(interval, min_size=1, max_size=20))
def test_window_score_lies_between_interval_scores(window: list[Interval]) -> None:
    scores = [sci(*i) or 0 for i in window]
    got = sci_over(window) or 0
    assert min(scores) * (1 - 1e-9) <= got <= max(scores) * (1 + 1e-9)


@given(amount, amount, st.floats(0, 2000), st.floats(0, 1e3))
def test_operational_carbon_is_linear(e1: float, e2: float, i: float, a: float) -> None:
    both = operational_carbon(e1, i) + operational_carbon(e2, i)
    assert math.isclose(operational_carbon(e1 + e2, i), both, rel_tol=1e-9, abs_tol=1e-9)
    assert math.isclose(
        operational_carbon(a * e1, i), a * operational_carbon(e1, i), rel_tol=1e-9, abs_tol=1e-9
    )


@given(
    amount,
    st.floats(0, 1e9, allow_subnormal=False),
    st.floats(1, 1e10),
    st.floats(0, 1),
    st.floats(1, 1e3),
)
def test_embodied_carbon_never_exceeds_its_time_share(
    te: float, tir: float, el: float, share: float, tor: float
) -> None:
    m = embodied_carbon(te, tir, el, share * tor, tor)
    assert 0 <= m <= te * tir / el * (1 + 1e-9) + 1e-300  # subnormals round loosely


# --- sci.power --------------------------------------------------------------------
# Teads curve (Teads Engineering, 2021): 0/10/50/100 % load → 12/32/75/102 % of TDP.


@pytest.mark.parametrize(("load", "share"), [(0, 0.12), (10, 0.32), (50, 0.75), (100, 1.02)])
def test_teads_curve_points(load: float, share: float) -> None:
    assert close(teads_watts(200, load), 200 * share)


def test_teads_curve_is_linear_between_points() -> None:
    # 30 % is halfway from 10 % (32 %) to 50 % (75 %): 53.5 % of TDP.
    assert close(teads_watts(100, 30), 53.5)
    assert close(teads_watts(150, 75), 150 * (0.75 + 1.02) / 2)


def test_ccf_watts() -> None:
    # vCPUs × (min + u × (max − min)), CCF averages 0.74 W and 3.5 W per vCPU.
    assert close(ccf_watts(4, 0), 4 * 0.74)
    assert close(ccf_watts(4, 100), 4 * 3.5)
    assert close(ccf_watts(4, 50), 4 * (0.74 + 0.5 * (3.5 - 0.74)))
    assert close(ccf_watts(2, 25, 1.0, 5.0), 2 * (1.0 + 0.25 * 4.0))
    assert ccf_watts(0, 80) == 0


def test_memory_watts() -> None:
    assert close(memory_watts(16), 16 * 0.392)  # CCF: 0.392 W per GB
    assert close(memory_watts(10, 0.38), 3.8)


@pytest.mark.parametrize(
    ("func", "args", "message"),
    [
        (teads_watts, (0, 50), "tdp_w must be greater than 0"),
        (teads_watts, (-10, 50), "tdp_w must be greater than 0"),
        (teads_watts, (100, -1), "utilization_pct must be within 0..100"),
        (teads_watts, (100, 100.5), "utilization_pct must be within 0..100"),
        (teads_watts, (100, NAN), "utilization_pct must be within 0..100"),
        (ccf_watts, (-1, 50), "vcpus must be 0 or more"),
        (ccf_watts, (1, 101), "utilization_pct must be within 0..100"),
        (ccf_watts, (1, 50, -0.1), "min_w_per_vcpu must be 0 or more"),
        (ccf_watts, (1, 50, 2.0, 1.0), "max_w_per_vcpu (1.0) must be ≥ min_w_per_vcpu (2.0)"),
        (memory_watts, (-1,), "memory_gb must be 0 or more"),
        (memory_watts, (1, -0.1), "w_per_gb must be 0 or more"),
    ],
)
def test_power_model_validation(
    func: Callable[..., Any], args: tuple[Any, ...], message: str
) -> None:
    with pytest.raises(ValueError) as err:
        func(*args)
    assert str(err.value).startswith(message)
