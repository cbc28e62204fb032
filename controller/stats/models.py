"""What leaves the statistics pipeline: aggregate cells, never a device.

A :class:`Cell` is one published statistic of one place and one period: a commune, a
hotspot or the whole territory per hour or per day (``presence``), or the devices that
went from one commune to another during a day (``flow``). Its values are counts and
sums only. This module must not hold or accept a MAC address or a pseudonym.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

__all__ = [
    "DWELL_BUCKETS",
    "FLOW_FIELDS",
    "PRESENCE_FIELDS",
    "Cell",
    "CellKey",
    "Kind",
    "Period",
    "Scope",
]

Kind = Literal["presence", "flow"]
Scope = Literal["territory", "commune", "hotspot", "flow"]
Period = Literal["hour", "day"]

# Session dwell-time buckets: (field name, upper bound in seconds, exclusive).
DWELL_BUCKETS: Final = (
    ("dwell_lt_5m", 300.0),
    ("dwell_5_15m", 900.0),
    ("dwell_15_30m", 1800.0),
    ("dwell_30_60m", 3600.0),
    ("dwell_1_2h", 7200.0),
    ("dwell_ge_2h", float("inf")),
)

PRESENCE_FIELDS: Final = (
    "visitors",
    "randomised_visitors",
    "sessions",
    "repeat_visitors",
    *(name for name, _ in DWELL_BUCKETS),
    "bytes_up",
    "bytes_down",
)
FLOW_FIELDS: Final = ("visitors",)

# (kind, scope, period, start, insee, ap_id, destination)
CellKey = tuple[str, str, str, int, str, str, str]


@dataclass(frozen=True, slots=True)
class Cell:
    """One aggregate statistic of one place and one period.

    Attributes:
        kind: ``presence`` (people at a place) or ``flow`` (origin → destination).
        scope: ``territory``, ``commune``, ``hotspot`` or ``flow``.
        period: ``hour`` or ``day``.
        start: the period's start, UTC seconds since the epoch (local hours and days).
        day: the local date the period belongs to, ``YYYY-MM-DD``.
        insee: the commune (the origin of a flow); empty for the territory.
        ap_id: the hotspot, for ``hotspot`` cells only.
        destination: the destination commune of a flow.
        values: field name → integer value.
        noised: Laplace noise was added to the values.
    """

    kind: str
    scope: str
    period: str
    start: int
    day: str
    insee: str = ""
    ap_id: str = ""
    destination: str = ""
    values: dict[str, int] = field(default_factory=dict, compare=True, hash=False)
    noised: bool = False

    @property
    def key(self) -> CellKey:
        """The cell's identity (without its values)."""
        return (
            self.kind,
            self.scope,
            self.period,
            self.start,
            self.insee,
            self.ap_id,
            self.destination,
        )

    @property
    def visitors(self) -> int:
        """Distinct devices counted in the cell (the count thresholds apply to)."""
        return self.values.get("visitors", 0)
