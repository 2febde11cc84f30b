"""Numbers for people: one format everywhere, SI prefixes with units, never ``1e-05``.

Four significant digits at most, trailing zeros dropped; the prefix is chosen so the
number reads between 1 and 1,000 (``0.4584 mg`` is written ``458.4 µg``), down to
pico; below a pico-unit a figure is floating-point residue and reads ``0``.
"""

from __future__ import annotations

import math

_SMALL = (("", 1.0), ("m", 1e-3), ("µ", 1e-6), ("n", 1e-9), ("p", 1e-12))
NOISE = 1e-12  # below a pico-unit a figure is floating-point residue (13.98 J - 13.98 J): 0


def number(value: float, digits: int = 4) -> str:
    """``value`` to ``digits`` significant digits, plain notation, no trailing zeros."""
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    text = f"{value:,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _prefixed(value: float, unit: str, large: tuple[tuple[str, float], ...]) -> str:
    size = abs(value)
    if size < NOISE or not math.isfinite(value):
        return f"{number(0.0 if size < NOISE else value)} {unit}"
    for prefix, scale in large:
        if size >= scale:
            return f"{number(value / scale)} {prefix}{unit}"
    for prefix, scale in _SMALL:
        if size >= scale * 0.9999:
            return f"{number(value / scale)} {prefix}{unit}"
    return f"{number(value / 1e-12)} p{unit}"


def grams(g: float) -> str:
    """Grams of CO2e: ``458.4 µg``, ``12.35 g``, ``3.2 kg``, ``1.5 t``."""
    if abs(g) >= 1e6:
        return f"{number(g / 1e6)} t"
    return _prefixed(g, "g", (("k", 1e3),))


def joules(j: float) -> str:
    """``2.29 J``, ``812 mJ``, ``4.1 kJ``, ``3.6 MJ``."""
    return _prefixed(j, "J", (("G", 1e9), ("M", 1e6), ("k", 1e3)))


def kwh(value: float) -> str:
    """Energy from kWh: ``635 µWh``, ``812.4 Wh``, ``12.35 kWh``, ``3.21 MWh``."""
    wh = value * 1000
    return _prefixed(wh, "Wh", (("G", 1e9), ("M", 1e6), ("k", 1e3)))


def watts(w: float) -> str:
    """``84.2 W``, ``350 mW``, ``1.2 kW``."""
    return _prefixed(w, "W", (("M", 1e6), ("k", 1e3)))


def seconds(s: float) -> str:
    """``1.15 s``, ``2 min 5 s``, ``1 h 02 min``."""
    if s < 60:
        return f"{number(s, 3)} s"
    if s < 3600:
        m, rest = divmod(round(s), 60)
        return f"{m} min {rest} s" if rest else f"{m} min"
    h, rest = divmod(round(s) // 60, 60)
    return f"{h} h {rest:02d} min"


def intensity(g_per_kwh: float) -> str:
    """Grid carbon intensity as a plain number: ``56.3 gCO2e/kWh``, ``412 gCO2e/kWh``."""
    return f"{number(g_per_kwh, 3 if abs(g_per_kwh) < 1000 else 4)} gCO2e/kWh"


def percent(share: float) -> str:
    """A share (0..1) as a percentage: ``12.5 %``, ``0.32 %``, ``100 %``."""
    return f"{number(share * 100, 3)} %"
