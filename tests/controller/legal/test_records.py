"""The legal record holds what the law asks and nothing about what a visitor did online."""

from __future__ import annotations

import json
import re
from dataclasses import fields

from controller.legal.records import IDENTITY_FIELDS, TRAFFIC_FIELDS, LegalRecord
from tests.controller.legal.conftest import record

# Content of communications is forbidden by CPCE L34-1: no field may even be able to
# hold a URL, a DNS name, a TLS SNI, an HTTP header, a user agent or a payload.
FORBIDDEN = re.compile(
    r"url|uri|dns|domain|host|sni|server_name|header|agent|content|payload|body|query"
    r"|referer|cookie|path|title|subject|email|phone|name",
    re.IGNORECASE,
)


def test_schema_holds_exactly_the_retained_fields() -> None:
    """The record's fields are exactly the legal list (CPCE R10-13 IV, décret 2021-1362)."""
    assert [f.name for f in fields(LegalRecord)] == [
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
        "gateway",
        "commune",
        "up_bytes",
        "down_bytes",
        "terminate_cause",
    ]


def test_no_field_can_hold_a_url_dns_name_sni_header_or_content() -> None:
    """No field name is about URLs, DNS, SNI, headers, content or identity data."""
    bad = [f.name for f in fields(LegalRecord) if FORBIDDEN.search(f.name)]
    assert bad == []
    for f in fields(LegalRecord):
        assert f.type in ("str", "str | None", "int", "int | None"), f


def test_each_part_serialises_only_its_fields() -> None:
    """The identity and traffic parts split the fields between the two retention periods."""
    rec = record(3)
    identity, traffic = json.loads(rec.identity_bytes()), json.loads(rec.traffic_bytes())
    assert len(identity) == len(IDENTITY_FIELDS) and len(traffic) == len(TRAFFIC_FIELDS)
    assert set(IDENTITY_FIELDS).isdisjoint(TRAFFIC_FIELDS)
    assert dict(zip(IDENTITY_FIELDS, identity, strict=True))["client_mac"] == rec.client_mac
    assert dict(zip(TRAFFIC_FIELDS, traffic, strict=True))["gateway"] == rec.gateway
    assert LegalRecord.from_parts(identity, traffic) == rec
