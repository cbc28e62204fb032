"""Anonymised mobility statistics: pseudonymise at ingestion, aggregate per day, publish
only protected aggregates (docs/STATISTICS.md).

What must not happen here: a MAC address or a pseudonym leaving memory, a daily key
written anywhere or kept past its day, a cell below the threshold published.
"""

from controller.stats._core import DayAggregator, Limits, Visit, day_bounds, local_day
from controller.stats._disclosure import Protected, protect
from controller.stats._pipeline import DayReport, Pipeline
from controller.stats._pseudo import DailyKeys, OptOut, is_randomised, normalise_mac
from controller.stats._service import StatsService, make_pipeline, make_store
from controller.stats._stores import (
    BatchWriter,
    Influx1Store,
    Influx2Store,
    SqlStatsStore,
    StatsStore,
    StoreError,
    line_protocol,
)
from controller.stats.models import Cell

__all__ = [
    "BatchWriter",
    "Cell",
    "DailyKeys",
    "DayAggregator",
    "DayReport",
    "Influx1Store",
    "Influx2Store",
    "Limits",
    "OptOut",
    "Pipeline",
    "Protected",
    "SqlStatsStore",
    "StatsService",
    "StatsStore",
    "StoreError",
    "Visit",
    "day_bounds",
    "is_randomised",
    "line_protocol",
    "local_day",
    "make_pipeline",
    "make_store",
    "normalise_mac",
    "protect",
]
