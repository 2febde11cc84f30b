"""Per-process rows, bounded over time: the same rows for the store and for InfluxDB.

A process row is a group of processes sharing (app, process name) in one interval,
with the pid of its biggest process. Any local user chooses process names, so naming
a row after each one would let a user who cycles random names create series without
bound (each name a new InfluxDB series). Three rules bound them:

- **A stable top N per app.** Each app keeps up to ``top_n`` names, ranked by a
  moving average of their joules (over about ``WINDOW`` intervals). A newcomer takes
  a free place at once; a full top changes only when a newcomer's average beats the
  weakest name kept by ``MARGIN`` (×1.5), or by ×1.1 for ``PERSIST`` intervals in a
  row (a window), so names near the cut-off do not flap in and out. A name that
  leaves the top keeps its average as a newcomer.
- **A cap per host per UTC day** (``max_names``, the ``max_process_names_per_day``
  config key): at most that many distinct (app, process) series in a day, the
  ``_other`` rows included. Once it is reached, a new name goes to its app's
  ``_other`` row (or to the host's ``(_other, _other)`` row, which always has a place).
- **The rest** (names outside the top, idle names not kept, names over the cap) is
  summed into one ``(app, _other)`` row per app.

Rows still sum to the processes' joules and CPU time: every process is in exactly
one row. The state is per host and small (the kept names, the names of the day, the
newcomers of the last interval); it starts afresh with the agent, so a restart allows
one more day's worth of names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from agent.records import ProcessEnergy

OTHER = "_other"
DEFAULT_TOP_N = 20
DEFAULT_MAX_NAMES_PER_DAY = 200
WINDOW = 12  # intervals: the moving average's span (α = 2 / (WINDOW + 1))
MARGIN = 1.5  # a newcomer displaces the weakest kept name at once above this ratio
PERSIST = WINDOW  # ... or after this many intervals in a row above PERSIST_MARGIN × it
PERSIST_MARGIN = 1.1
FORGET_J = 1e-6  # a kept name whose average fell below this leaves the top

Key = tuple[str, str]  # (app, process)


@dataclass(frozen=True, slots=True)
class ProcessRow:
    """One row: the processes of ``app`` named ``process`` (or ``_other``) in one interval."""

    app: str
    process: str
    pid: int  # the pid of its biggest process
    joules: float
    cpu_s: float
    count: int


Group = list[float]  # [joules, cpu_s, count, pid of the biggest, its joules]: a hot loop


def _add(groups: dict[Key, Group], key: Key, g: Group) -> None:
    acc = groups.get(key)
    if acc is None:
        groups[key] = list(g)
        return
    acc[0] += g[0]
    acc[1] += g[1]
    acc[2] += g[2]
    if g[4] > acc[4]:
        acc[3], acc[4] = g[3], g[4]


@dataclass
class _HostState:
    day: int | None = None  # days since the epoch, UTC
    named: set[Key] = field(default_factory=set)  # series of the day, against the cap
    kept: dict[str, dict[str, float]] = field(default_factory=dict)  # app → name → average
    newcomers: dict[Key, tuple[float, int]] = field(default_factory=dict)  # (average, streak)


class ProcessRows:
    """Turns each interval's processes into bounded rows; one instance per sink."""

    def __init__(
        self, top_n: int = DEFAULT_TOP_N, max_names: int = DEFAULT_MAX_NAMES_PER_DAY
    ) -> None:
        if top_n < 0:
            raise ValueError(f"top_processes: must be 0 or more, got {top_n}")
        if max_names < 1:
            raise ValueError(f"max_process_names_per_day: must be 1 or more, got {max_names}")
        self.top_n = top_n
        self.max_names = max_names
        self._alpha = 2.0 / (WINDOW + 1)
        self._hosts: dict[str, _HostState] = {}

    def rows(
        self, host: str, end: datetime, processes: Iterable[ProcessEnergy]
    ) -> list[ProcessRow]:
        """The rows of one interval of ``host`` ending at ``end`` (intervals in time order)."""
        state = self._hosts.setdefault(host, _HostState())
        day = int(end.timestamp() // 86400)
        if state.day != day:
            state.day, state.named = day, set()
        by_app: dict[str, dict[str, Group]] = {}
        for (app, name), g in _group(processes).items():
            by_app.setdefault(app, {})[name] = g
        newcomers: dict[Key, tuple[float, int]] = {}
        for app in sorted(set(by_app) | set(state.kept)):
            self._update_top(state, app, by_app.get(app, {}), newcomers)
        state.newcomers = newcomers
        return self._emit(state, by_app)

    def _update_top(
        self,
        state: _HostState,
        app: str,
        present: dict[str, Group],
        newcomers: dict[Key, tuple[float, int]],
    ) -> None:
        """Age the app's kept names by this interval and let newcomers in by the rules."""
        a = self._alpha
        kept = state.kept.setdefault(app, {})
        for name in list(kept):
            joules = present[name][0] if name in present else 0.0
            kept[name] = (1 - a) * kept[name] + a * joules
            if kept[name] < FORGET_J and name not in present:
                del kept[name]
        ranked = sorted(
            ((n, g[0]) for n, g in present.items() if n not in kept and g[0] > 0),
            key=lambda nj: (-nj[1], nj[0]),
        )
        weakest: str | None = None  # found again only after the top changed
        for name, joules in ranked:
            key = (app, name)
            average, streak = state.newcomers.get(key, (joules, 0))
            if key in state.newcomers:
                average = (1 - a) * average + a * joules
            if len(kept) < self.top_n:
                if self._admit(state, key):
                    kept[name] = average
                    weakest = None
                continue
            if not kept:
                continue
            if weakest is None:
                weakest = min(kept, key=lambda n: (kept[n], n))
            streak = streak + 1 if average > PERSIST_MARGIN * kept[weakest] else 0
            wins = average > MARGIN * kept[weakest] or streak >= PERSIST
            if wins and self._admit(state, key):
                if weakest in present:  # it competes again from its average
                    newcomers[(app, weakest)] = (kept[weakest], 0)
                del kept[weakest]
                kept[name] = average
                weakest = None
            else:
                newcomers[key] = (average, streak)
        if not kept:
            del state.kept[app]

    def _admit(self, state: _HostState, key: Key) -> bool:
        """Whether ``key`` may be a series today (one place stays for ``(_other, _other)``)."""
        if key in state.named:
            return True
        if len(state.named) >= self.max_names - 1:
            return False
        state.named.add(key)
        return True

    def _emit(self, state: _HostState, by_app: dict[str, dict[str, Group]]) -> list[ProcessRow]:
        """Kept names their own rows (biggest first, for the cap); the rest each app's other."""
        out: dict[Key, Group] = {}
        for app in sorted(by_app):
            present = by_app[app]
            kept = state.kept.get(app, {})
            for name in sorted((n for n in present if n in kept), key=lambda n: -present[n][0]):
                if self._admit(state, (app, name)):
                    _add(out, (app, name), present[name])
                else:
                    del kept[name]  # kept yesterday, no place today
            rest = [g for n, g in present.items() if n not in kept]
            if rest:
                other = (app, OTHER) if self._admit(state, (app, OTHER)) else (OTHER, OTHER)
                top = max(rest, key=lambda g: g[4])
                sums = [sum(g[i] for g in rest) for i in range(3)]
                _add(out, other, [*sums, top[3], top[4]])
        return [
            ProcessRow(app, name, int(g[3]), g[0], g[1], int(g[2]))
            for (app, name), g in out.items()
        ]


def _group(processes: Iterable[ProcessEnergy]) -> dict[Key, Group]:
    """Processes summed by (app, name), each group with the pid of its biggest."""
    groups: dict[Key, Group] = {}
    for p in processes:
        joules = p.cpu_joules + p.dram_joules + p.gpu_joules
        acc = groups.get((p.app, p.name))
        if acc is None:
            groups[(p.app, p.name)] = [joules, p.cpu_s, 1, p.pid, joules]
            continue
        acc[0] += joules
        acc[1] += p.cpu_s
        acc[2] += 1
        if joules > acc[4]:
            acc[3], acc[4] = p.pid, joules
    return groups
