"""The static (zero-load) power of counter-measured components, learned while they work.

RAPL and NVML measure a component's whole energy; attribution needs the part it would
draw at zero load. A production machine is rarely idle, so the floor is learned from a
regression of power on utilisation, per component:

- **Window.** Each interval's (utilisation 0..1, mean watts) goes into one of
  ``BINS`` utilisation bins, each keeping its newest ``PER_BIN`` observations: memory
  is bounded, recent data replaces old, and hours at one load cannot outvote the rest.
- **Estimate.** An idle bin (mean utilisation ≤ ``IDLE_UTILISATION``) is a direct
  observation: the floor is its lowest power (the power tail after work stops lands
  there too, and is higher). Otherwise the floor is the intercept at 0 % of a
  least-squares line through each bin's (mean utilisation, median watts), bins with at
  least ``MIN_PER_BIN`` observations weighted alike (a median ignores spikes), once
  at least two bins span ``MIN_SPREAD`` of utilisation. It is clamped to [0, the
  lowest power in the window]: a floor above a measured interval is impossible.
- **Fallback.** Until then the floor is 0 W (``static_source = "fallback"``): all the
  energy follows work, nothing is moved to ``_idle``, so no app is under-charged
  while the floor is unknown.
- **Configured.** ``[sensors] static_watts`` (or the GPUs' ``[sensors.nvml]
  idle_watts``) wins over what is learned (``"configured"``).
- **State.** ``{state_dir}/static-{sensor}.json`` keeps the window across restarts; it
  is written atomically (temporary file, fsync, rename) at most every ``SAVE_EVERY_S``
  and on close. An unreadable or malformed file is logged and ignored.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import statistics
import tempfile
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("sci_agent.static_power")

BINS = 20  # 5 % of utilisation each
PER_BIN = 16  # newest observations kept per bin
MIN_PER_BIN = 3  # observations a bin needs to enter the regression
MIN_SPREAD = 0.10  # utilisation the regression's bins must span
IDLE_UTILISATION = 0.02  # a bin this close to 0 % is a direct observation
SAVE_EVERY_S = 300.0
STATE_VERSION = 1

Observation = tuple[float, float]  # (utilisation 0..1, watts)


@dataclass(frozen=True, slots=True)
class Floor:
    """A component's static power and where it came from."""

    watts: float
    source: str  # "configured", "learned" or "fallback"


class _Window:
    """One component's observations, binned by utilisation."""

    def __init__(self) -> None:
        self.bins: list[deque[Observation]] = [deque(maxlen=PER_BIN) for _ in range(BINS)]

    def add(self, utilisation: float, watts: float) -> None:
        self.bins[min(BINS - 1, int(utilisation * BINS))].append((utilisation, watts))

    def estimate(self) -> float | None:
        """The learned floor in watts, or None while the window cannot tell."""
        filled = [b for b in self.bins if b]
        if not filled:
            return None
        lowest = min(w for b in filled for _, w in b)
        first = filled[0]
        if statistics.fmean(u for u, _ in first) <= IDLE_UTILISATION:
            return max(0.0, min(w for _, w in first))
        points = [
            (statistics.fmean(u for u, _ in b), statistics.median(w for _, w in b))
            for b in filled
            if len(b) >= MIN_PER_BIN
        ]
        if len(points) < 2 or points[-1][0] - points[0][0] < MIN_SPREAD:
            return None
        return min(lowest, max(0.0, _intercept(points)))

    def to_json(self) -> list[list[list[float]]]:
        return [[[u, w] for u, w in b] for b in self.bins]

    @classmethod
    def from_json(cls, data: Any) -> _Window:
        """Rebuild from ``to_json``; raises ``ValueError`` on anything else."""
        if not isinstance(data, list) or len(data) != BINS:
            raise ValueError(f"expected {BINS} bins")
        window = cls()
        for b in data:
            if not isinstance(b, list):
                raise ValueError("a bin is not a list")
            for pair in b[-PER_BIN:]:
                u, w = _observation(pair)
                window.add(u, w)
        return window


def _observation(pair: Any) -> Observation:
    if not (isinstance(pair, list) and len(pair) == 2):
        raise ValueError("an observation is not a [utilisation, watts] pair")
    u, w = pair
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in (u, w)):
        raise ValueError("an observation is not finite")
    if not (0.0 <= u <= 1.0 and w >= 0.0):
        raise ValueError("an observation is out of range")
    return float(u), float(w)


def _intercept(points: list[Observation]) -> float:
    """Least-squares intercept at x = 0 through ``points`` (x spread > 0)."""
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    sxy = sum((x - mx) * (y - my) for x, y in points)
    return my - (sxy / sxx) * mx


class StaticPowerLearner:
    """Learns, keeps and persists the static power of one sensor's components."""

    def __init__(
        self,
        sensor: str,
        state_dir: str | Path | None = None,
        configured: Mapping[str, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sensor = sensor
        self.path = Path(state_dir) / f"static-{sensor}.json" if state_dir is not None else None
        self.configured = dict(configured or {})
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._dirty = False
        self._saved_at = clock()
        self._save_failed = False
        self.load()

    def observe(self, component: str, utilisation: float, watts: float) -> None:
        """Record one interval's mean power at its utilisation (bad values are skipped)."""
        if not (math.isfinite(utilisation) and math.isfinite(watts)) or watts < 0:
            return
        window = self._windows.setdefault(component, _Window())
        window.add(min(1.0, max(0.0, utilisation)), watts)
        self._dirty = True
        if self._clock() - self._saved_at >= SAVE_EVERY_S:
            self.save()

    def floor(self, component: str, default_configured: float | None = None) -> Floor:
        """The static power of ``component``: configured, else learned, else 0 W."""
        watts = self.configured.get(component, default_configured)
        if watts is not None:
            return Floor(watts, "configured")
        window = self._windows.get(component)
        learned = window.estimate() if window is not None else None
        if learned is None:
            return Floor(0.0, "fallback")
        return Floor(learned, "learned")

    def static_joules(
        self, component: str, joules: float, interval_s: float, default: float | None = None
    ) -> tuple[float, str]:
        """The static part of ``joules`` over ``interval_s`` (≤ ``joules``) and its source."""
        floor = self.floor(component, default)
        return max(0.0, min(joules, floor.watts * max(0.0, interval_s))), floor.source

    # -- persistence ---------------------------------------------------------------------

    def load(self) -> None:
        """Read the saved windows, if any; a bad file is logged and ignored."""
        if self.path is None:
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("ignoring the static-power state %s: %s", self.path, exc)
            return
        if not (isinstance(data, dict) and data.get("version") == STATE_VERSION):
            log.warning("ignoring the static-power state %s: unknown version", self.path)
            return
        components = data.get("components")
        if not isinstance(components, dict):
            log.warning("ignoring the static-power state %s: no components", self.path)
            return
        for component, window in components.items():
            try:
                self._windows[str(component)] = _Window.from_json(window)
            except ValueError as exc:
                log.warning("ignoring the saved static power of %s: %s", component, exc)

    def save(self) -> None:
        """Write the windows atomically when they changed; a failure is logged once."""
        self._saved_at = self._clock()
        if self.path is None or not self._dirty:
            return
        data = {
            "version": STATE_VERSION,
            "sensor": self.sensor,
            "components": {c: w.to_json() for c, w in sorted(self._windows.items())},
        }
        try:
            _write_atomically(self.path, json.dumps(data, separators=(",", ":")))
        except OSError as exc:
            if not self._save_failed:
                log.warning("cannot save the static-power state to %s: %s", self.path, exc)
            self._save_failed = True
            return
        self._dirty = False
        self._save_failed = False


def _write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so a reader sees the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
