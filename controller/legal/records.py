"""What the legal log keeps about a session, and nothing more.

A :class:`LegalRecord` holds exactly the fields CPCE L34-1 / R10-13 IV and décret
2021-1362 art. 5 ask for (DESIGN.md "Legal retention"): the connection identifier, the
user or voucher identifier, the terminal (MAC), the private IP, the public IP and source
port block when NAT is used, the gateway and commune, start and stop in UTC
milliseconds and the volumes. It never holds a URL, DNS name, SNI, header or content:
there is no field for them, and a test checks the field list.

The fields are split in two parts, encrypted under two day keys, because the law gives
them two lifetimes: the *identity* part (1 year from the connection) and the *traffic*
part, volumes and location (1 year while the national-security decree is in force,
otherwise at most 3 months).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import orjson

__all__ = ["IDENTITY_FIELDS", "TRAFFIC_FIELDS", "LegalRecord", "from_session"]

IDENTITY_FIELDS = (
    "session_id",
    "event",
    "auth_method",
    "auth_ref",
    "client_mac",
    "private_ip",
    "public_ip",
    "port_start",
    "port_end",
    "start_ms",
    "stop_ms",
)
TRAFFIC_FIELDS = ("gateway", "commune", "up_bytes", "down_bytes", "terminate_cause")


@dataclass(frozen=True)
class LegalRecord:
    """One retained fact about one session (its state at a start, update or stop)."""

    session_id: str
    event: str
    auth_method: str | None
    auth_ref: str | None
    client_mac: str
    private_ip: str
    public_ip: str | None
    port_start: int | None
    port_end: int | None
    start_ms: int
    stop_ms: int | None
    gateway: str
    commune: str
    up_bytes: int
    down_bytes: int
    terminate_cause: str | None

    # Each part is a JSON array in the order of IDENTITY_FIELDS / TRAFFIC_FIELDS: the
    # field names are the schema, not data, and leaving them out halves the encoding time.

    def identity_bytes(self) -> bytes:
        """The identity part, a JSON array in ``IDENTITY_FIELDS`` order (compact UTF-8
        JSON, as ``json.dumps(separators=(",", ":"), ensure_ascii=False)`` writes it)."""
        return orjson.dumps(
            [
                self.session_id,
                self.event,
                self.auth_method,
                self.auth_ref,
                self.client_mac,
                self.private_ip,
                self.public_ip,
                self.port_start,
                self.port_end,
                self.start_ms,
                self.stop_ms,
            ]
        )

    def traffic_bytes(self) -> bytes:
        """The traffic and location part, a JSON array in ``TRAFFIC_FIELDS`` order."""
        return orjson.dumps(
            [self.gateway, self.commune, self.up_bytes, self.down_bytes, self.terminate_cause]
        )

    @classmethod
    def from_parts(cls, identity: list[Any], traffic: list[Any] | None) -> LegalRecord:
        """Rebuild a record from its decrypted parts; a shredded traffic part comes back
        empty ("", 0, None)."""
        t = traffic if traffic is not None else ["", "", 0, 0, None]
        return cls(
            **dict(zip(IDENTITY_FIELDS, identity, strict=True)),
            **dict(zip(TRAFFIC_FIELDS, t, strict=True)),
        )

    def as_dict(self) -> dict[str, Any]:
        """The record as a plain dict (exports)."""
        return asdict(self)


assert [f.name for f in fields(LegalRecord)] == [*IDENTITY_FIELDS, *TRAFFIC_FIELDS]


def _ms(t: float | None) -> int | None:
    return None if t is None else round(t * 1000)


def from_session(session: Any, event: str) -> LegalRecord:
    """Build the record of a session row of the state database (``sessions`` table).

    NAT columns (``public_ip``, ``port_start``, ``port_end``: the port block the agent
    reported, ``agents/_nat.py``) are read when the row has them; they stay empty for a
    session without NAT (a RADIUS gateway, an AP without ``nat_interface``).
    """
    mapping = getattr(session, "_mapping", {})
    start = _ms(session.started_at)
    assert start is not None
    return LegalRecord(
        session_id=str(session.id),
        event=event,
        auth_method=session.auth_method,
        auth_ref=session.auth_ref,
        client_mac=session.mac,
        private_ip=session.ip,
        public_ip=mapping.get("public_ip"),
        port_start=mapping.get("port_start"),
        port_end=mapping.get("port_end"),
        start_ms=start,
        stop_ms=_ms(session.stopped_at),
        gateway=session.ap_id,
        commune=session.insee,
        up_bytes=int(session.up_bytes),
        down_bytes=int(session.down_bytes),
        terminate_cause=session.terminate_cause,
    )
