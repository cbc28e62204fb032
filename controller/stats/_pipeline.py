"""From sessions to published cells, one local day at a time (pure: no IO, no clock).

:class:`Pipeline` takes session facts with the device's MAC, drops opted-out devices
before any hashing, replaces the MAC by its pseudonym under the day's random key, keeps
the day's sessions in memory, and, when asked to finalise a day, aggregates it, applies
disclosure control, destroys the day's key and forgets its sessions. Only the protected
cells come out.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from controller.stats._core import DayAggregator, Limits, Visit, local_day
from controller.stats._disclosure import Protected, protect
from controller.stats._pseudo import DailyKeys, OptOut, is_randomised, normalise_mac

__all__ = ["DayReport", "Pipeline", "PipelineCounters"]


@dataclass
class PipelineCounters:
    """What the pipeline saw (for logs and the day's report)."""

    sessions: int = 0
    opted_out: int = 0
    randomised: int = 0
    late: int = 0
    bad_mac: int = 0


@dataclass(frozen=True)
class DayReport:
    """One finalised day."""

    day: str
    sessions: int
    devices: int
    cells: int
    protected: Protected
    opted_out: int


@dataclass
class _Day:
    aggregator: DayAggregator
    sessions: dict[int, Visit] = field(default_factory=dict)
    first_event: int | None = None
    opted_out: int = 0
    # Pseudonyms of devices that opted out after some of their sessions of the day were
    # taken: those sessions are left out when the day is aggregated.
    erased: set[bytes] = field(default_factory=set)


class Pipeline:
    """Pseudonymise, keep one day in memory, aggregate and protect it.

    Args:
        tz: the territory's time zone (days and hours are local).
        limits: per-device contribution bounds.
        k: publication threshold.
        optout: the opted-out devices.
        epsilon: Laplace noise budget, or None.
        rng: the noise's random source (``random.SystemRandom`` when None).
    """

    def __init__(
        self,
        tz: ZoneInfo,
        limits: Limits,
        k: int,
        optout: OptOut,
        epsilon: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.tz = tz
        self.limits = limits
        self.k = k
        self.optout = optout
        self.epsilon = epsilon
        self.rng = rng or random.SystemRandom()
        self.keys = DailyKeys()
        self.counters = PipelineCounters()
        self.finalised: set[str] = set()
        self._days: dict[str, _Day] = {}

    def open_days(self) -> list[str]:
        """Days with sessions in memory."""
        return sorted(self._days)

    def first_event(self, day: str) -> int | None:
        """The first outbox event id seen for ``day`` (None for direct feeds)."""
        d = self._days.get(day)
        return d.first_event if d else None

    def observe(
        self,
        *,
        ap_id: str,
        insee: str,
        mac: str,
        start: float,
        stop: float,
        up: int,
        down: int,
        session_id: int | None = None,
        event_id: int | None = None,
    ) -> bool:
        """Take one session as it is now; False if it is not counted.

        A session seen again (same ``session_id``) replaces its earlier state, so start,
        update and stop events of one session count it once. Sessions belong to the day
        they start in.
        """
        day = local_day(start, self.tz)
        if day in self.finalised:
            self.counters.late += 1
            return False
        try:
            mac = normalise_mac(mac)
        except ValueError:
            self.counters.bad_mac += 1
            return False
        state = self._days.get(day)
        if state is None:
            state = self._days[day] = _Day(DayAggregator(day, self.tz, self.limits))
        if state.first_event is None and event_id is not None:
            state.first_event = event_id
        # The opt-out is honoured before any daily hashing.
        if mac in self.optout:
            state.opted_out += 1
            self.counters.opted_out += 1
            if state.sessions and self.keys.has(day):
                # Opted out during the day (portal checkbox): the sessions already taken
                # under the day's key are dropped at the end of the day, with this one.
                state.erased.add(self.keys.pseudonym(day, mac))
            return False
        randomised = is_randomised(mac)
        visit = Visit(
            self.keys.pseudonym(day, mac), randomised, insee, ap_id, start, stop, up, down
        )
        if session_id is None:
            state.aggregator.add(visit)
        else:
            state.sessions[session_id] = visit
        self.counters.sessions += 1
        self.counters.randomised += randomised
        return True

    def finalise(self, day: str) -> DayReport:
        """Aggregate and protect ``day``; its key and sessions are destroyed."""
        state = self._days.pop(day, None) or _Day(DayAggregator(day, self.tz, self.limits))
        agg = state.aggregator
        if state.erased:
            agg.add_all(v for v in state.sessions.values() if v.pseudonym not in state.erased)
            state.erased.clear()
        else:
            agg.add_all(state.sessions.values())
        state.sessions.clear()
        self.keys.destroy(day)
        cells = agg.cells()
        protected = protect(cells, self.k, self.epsilon, self.limits, self.rng)
        self.finalised.add(day)
        return DayReport(day, agg.sessions_in, len(agg), len(cells), protected, state.opted_out)
