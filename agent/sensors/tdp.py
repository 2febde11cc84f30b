"""Look up a CPU's thermal design power in the shipped table (CodeCarbon's, MIT)."""

from __future__ import annotations

import csv
import re
from functools import cache
from importlib import resources

_NOISE = re.compile(r"\(r\)|\(tm\)|®|™|\bcpu\b|\bprocessor\b|@.*$|\d+-core|\bwith\b.*$", re.I)


def _tokens(text: str) -> tuple[str, ...]:
    return tuple(_NOISE.sub(" ", text.lower()).split())


@cache
def _table() -> tuple[tuple[tuple[str, ...], float, str], ...]:
    rows: list[tuple[tuple[str, ...], float, str]] = []
    with resources.files("agent").joinpath("data/cpu-tdp.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            tokens = _tokens(row["cpu_model"])
            try:
                tdp = float(row["tdp_w"])
            except ValueError:  # a few upstream rows hold ranges ("27.29.5"): skip them
                continue
            if tokens:
                rows.append((tokens, tdp, row["cpu_model"]))
    return tuple(rows)


def lookup_tdp(cpu_model: str) -> float | None:
    """TDP in watts of the best table entry whose every token is in ``cpu_model``.

    The most specific entry (most tokens, then the longest) wins; a model name with
    no match (e.g. a VM's generic "AMD EPYC") gives ``None``.
    """
    found = lookup_tdp_row(cpu_model)
    return found[1] if found else None


def lookup_tdp_row(cpu_model: str) -> tuple[str, float] | None:
    """The best table entry for ``cpu_model``: (its ``cpu_model`` cell, TDP watts)."""
    have = set(_tokens(cpu_model))
    best: tuple[int, int, float, str] | None = None
    for tokens, tdp, name in _table():
        if all(t in have for t in tokens) and any(any(c.isdigit() for c in t) for t in tokens):
            key = (len(tokens), sum(map(len, tokens)), tdp, name)
            if best is None or key[:2] > best[:2]:
                best = key
    return (best[3], best[2]) if best else None
