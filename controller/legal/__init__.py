"""The legal retention log (CPCE L34-1): keep what the law asks, prove it, forget on time.

A store of its own, separate from the state database, that nothing else in borne reads:
records built from the session events outbox (``consumer``), encrypted under per-day
keys wrapped by a master key (``keys``), chained in per-day RFC 6962 Merkle trees with
signed heads (``merkle``, ``store``), purged by destroying day keys (``retention``),
and opened only for registered, approved requisitions (``requisitions``). See
docs/LEGAL.md.
"""

from __future__ import annotations

from controller.legal.errors import ApprovalError, KeyError_, LegalError, StoreError
from controller.legal.records import LegalRecord
from controller.legal.store import LegalStore, Problem

__all__ = [
    "ApprovalError",
    "KeyError_",
    "LegalError",
    "LegalRecord",
    "LegalStore",
    "Problem",
    "StoreError",
]
