"""The legal log's exception tree."""

from __future__ import annotations

__all__ = ["ApprovalError", "KeyError_", "LegalError", "StoreError"]


class LegalError(Exception):
    """Something in the legal log cannot be done."""


class KeyError_(LegalError):
    """A key is missing, malformed or cannot be unwrapped."""


class StoreError(LegalError):
    """The log's files cannot be written or read."""


class ApprovalError(LegalError):
    """A requisition lacks what an action needs (approvals, scope, registration)."""
