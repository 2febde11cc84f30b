"""One number format for people: SI prefixes with units, never scientific notation."""

from __future__ import annotations

import pytest

from sci import humanize


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (4.584e-05, "45.84 µg"),
        (0.0004584, "458.4 µg"),
        (0.3049, "304.9 mg"),
        (12.345, "12.35 g"),
        (1234.5, "1.234 kg"),
        (2.5e6, "2.5 t"),
        (0.0, "0 g"),
    ],
)
def test_grams(value: float, text: str) -> None:
    assert humanize.grams(value) == text


def test_energy_power_and_time() -> None:
    assert [humanize.kwh(v) for v in (6.35e-07, 0.8124, 12.35, 3210)] == [
        "635 µWh",
        "812.4 Wh",
        "12.35 kWh",
        "3.21 MWh",
    ]
    assert [humanize.joules(v) for v in (2.29, 0.812, 4100, 3.6e6)] == [
        "2.29 J",
        "812 mJ",
        "4.1 kJ",
        "3.6 MJ",
    ]
    assert humanize.watts(84.2) == "84.2 W" and humanize.watts(0.35) == "350 mW"
    assert [humanize.seconds(v) for v in (1.15, 125, 3725)] == ["1.15 s", "2 min 5 s", "1 h 02 min"]
    assert humanize.number(1234567.8) == "1,234,568"


@pytest.mark.parametrize("value", [1.77291e-05, 3.3e-9, 7e-4, 123456.0, 0.1 + 0.2])
def test_never_scientific_notation(value: float) -> None:
    for fmt in (humanize.grams, humanize.joules, humanize.kwh, humanize.watts):
        assert "e-" not in fmt(value) and "e+" not in fmt(value)


def test_intensity_and_percent_are_plain_numbers() -> None:
    assert [humanize.intensity(v) for v in (56.2345, 412.4, 1234.5, 0.0)] == [
        "56.2 gCO2e/kWh",
        "412 gCO2e/kWh",
        "1,234 gCO2e/kWh",
        "0 gCO2e/kWh",
    ]
    assert [humanize.percent(v) for v in (0.125, 0.0032, 1.0, 2e-7)] == [
        "12.5 %",
        "0.32 %",
        "100 %",
        "0.00002 %",
    ]


def test_pico_and_floating_point_residue() -> None:
    assert humanize.grams(8.225e-11) == "82.25 pg"
    residue = (0.1 + 0.2 - 0.3) * 1e-1  # 5.6e-18: what subtracting equal totals leaves
    assert [humanize.joules(residue), humanize.grams(-4.4e-13), humanize.kwh(1e-16)] == [
        "0 J",
        "0 g",
        "0 Wh",
    ]
