"""Judicial requisitions: register, two-person approval, search, signed export, journal.

The legal log is opened only to answer a registered requisition (CPCE L34-1 II al. 2:
internal procedures; CPP 60-1, 60-1-2, 77-1-1, 99-3). Every step is an entry of the
access journal, an append-only file where each entry carries the SHA-256 of the
previous one, so that an entry removed or changed breaks the chain. A requisition's
state is what its journal entries say: nothing else holds it.

A search or an export needs two approvals by two different people (the two-person
rule); the search reads only the records whose blind tag matches, day by day, and
never decrypts a whole day. Exports are CSV, JSON and a printable PDF, each with a
detached Ed25519 signature; the JSON carries an inclusion proof of every record. Blocking
file IO: call from a worker thread.
"""

from __future__ import annotations

import csv
import datetime as dt
import fcntl
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from controller.legal._format import public_value
from controller.legal._pdf import render
from controller.legal.errors import ApprovalError, KeyError_, LegalError
from controller.legal.records import LegalRecord
from controller.legal.store import Found, LegalStore, day_of

__all__ = [
    "Journal",
    "Query",
    "Requisition",
    "Requisitions",
    "search",
]

# A session lasts at most 7 days (sessions.session_minutes) and its records are written
# at or shortly after its events: the days to look at around a time window.
_DAYS_BEFORE = 8
_DAYS_AFTER = 2
GENESIS = "0" * 64

QueryKind = Literal["public", "private", "mac", "user"]


@dataclass(frozen=True)
class Query:
    """What a requisition asks for: one identifier and a time window (UTC seconds).

    ``public``: public IP + ``port``; ``private``: private IP + ``gateway``; ``mac``;
    ``user`` (voucher or account reference).
    """

    kind: QueryKind
    value: str
    start: float
    end: float
    port: int | None = None
    gateway: str | None = None

    def describe(self) -> dict[str, Any]:
        """The query as journaled."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


def _days(store: LegalStore, q: Query) -> list[str]:
    lo = day_of(q.start - _DAYS_BEFORE * 86400)
    hi = day_of(q.end + _DAYS_AFTER * 86400)
    return [d for d in store.days() if lo <= d <= hi]


def _matches(rec: LegalRecord, q: Query) -> bool:
    start = rec.start_ms / 1000
    stop = rec.stop_ms / 1000 if rec.stop_ms is not None else float("inf")
    if stop < q.start or start > q.end:
        return False
    if q.kind == "public":
        if rec.public_ip != q.value or q.port is None:
            return False
        lo, hi = rec.port_start, rec.port_end
        return lo is not None and hi is not None and lo <= q.port <= hi
    if q.kind == "private":
        return rec.private_ip == q.value and rec.gateway == q.gateway
    if q.kind == "mac":
        return rec.client_mac.lower() == q.value.lower()
    return rec.auth_ref == q.value


def search(store: LegalStore, q: Query) -> list[Found]:
    """The latest record of each session matching ``q`` (blocking).

    Only records whose blind tag matches are decrypted; days already shredded are
    skipped (their data no longer exists).
    """
    if q.kind == "private":
        value = f"{q.value}|{q.gateway}"
    elif q.kind == "public":
        value = public_value(q.value, q.port)
    else:
        value = q.value
    latest: dict[str, Found] = {}
    for day, seqs, keys in store.lookup_days(_days(store, q), q.kind, value):
        if not seqs or keys is None:
            continue
        try:
            found = store.read(day, seqs, keys)
        except KeyError_:
            continue
        for f in found:
            latest[f.record.session_id] = f  # days and seqs ascend: the last one wins
    # A session's last record (its stop, when there is one) decides whether it matches.
    hits = [f for f in latest.values() if _matches(f.record, q)]
    return sorted(hits, key=lambda f: (f.record.start_ms, f.record.session_id))


class Journal:
    """The hash-chained access journal (``journal.jsonl`` in the log's folder)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self) -> list[dict[str, Any]]:
        """Every entry, oldest first."""
        if not self.path.exists():
            return []
        return [json.loads(x) for x in self.path.read_text().splitlines() if x.strip()]

    @staticmethod
    def _hash(entry: dict[str, Any]) -> str:
        body = {k: v for k, v in entry.items() if k != "hash"}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    def append(
        self, actor: str, action: str, requisition: str, details: dict[str, Any], now: float
    ) -> dict[str, Any]:
        """Append one entry chained to the previous one (fsynced).

        The CLI and the dashboards' legal page may append at the same moment: the file
        is locked (``flock``) from reading the last entry to writing the new one.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            fh.seek(0)
            prev = [json.loads(x) for x in fh.read().splitlines() if x.strip()]
            entry: dict[str, Any] = {
                "n": len(prev) + 1,
                "at": dt.datetime.fromtimestamp(now, dt.UTC).isoformat(timespec="milliseconds"),
                "actor": actor,
                "action": action,
                "requisition": requisition,
                "details": details,
                "prev": prev[-1]["hash"] if prev else GENESIS,
            }
            entry["hash"] = self._hash(entry)
            fh.write(json.dumps(entry, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return entry

    def verify(self) -> list[str]:
        """Problems of the chain, each naming the entry (empty: intact)."""
        out = []
        prev = GENESIS
        for i, e in enumerate(self.entries(), start=1):
            if e.get("n") != i:
                out.append(f"entry {i}: numbered {e.get('n')} (an entry was removed or moved)")
            if e.get("prev") != prev:
                out.append(f"entry {i}: does not follow the previous entry")
            if self._hash(e) != e.get("hash"):
                out.append(f"entry {i}: changed after it was written")
            prev = str(e.get("hash"))
        return out


@dataclass
class Requisition:
    """A requisition as its journal entries describe it."""

    reference: str
    authority: str
    legal_basis: str
    scope: str
    start: float
    end: float
    received: str
    registered_by: str
    approvals: list[str] = field(default_factory=list)
    closed: bool = False


class Requisitions:
    """The register of requisitions, kept in the access journal."""

    def __init__(self, store: LegalStore) -> None:
        self.store = store
        self.journal = Journal(store.directory / "journal.jsonl")

    def all(self) -> dict[str, Requisition]:
        """Every registered requisition by reference."""
        out: dict[str, Requisition] = {}
        for e in self.journal.entries():
            ref, d = e["requisition"], e["details"]
            if e["action"] == "register":
                out[ref] = Requisition(
                    ref,
                    d["authority"],
                    d["legal_basis"],
                    d["scope"],
                    d["start"],
                    d["end"],
                    d["received"],
                    e["actor"],
                )
            elif e["action"] == "approve" and ref in out:
                out[ref].approvals.append(e["actor"])
            elif e["action"] == "close" and ref in out:
                out[ref].closed = True
        return out

    def register(
        self,
        reference: str,
        authority: str,
        legal_basis: str,
        scope: str,
        start: float,
        end: float,
        received: str,
        actor: str,
        now: float,
    ) -> None:
        """Register a requisition.

        Raises:
            LegalError: the reference exists, a field is empty or the window is reversed.
        """
        if reference in self.all():
            raise LegalError(f"la réquisition {reference} existe déjà / already registered")
        if not all(x.strip() for x in (reference, authority, legal_basis, scope, actor)):
            raise LegalError("champ vide / empty field")
        if end < start:
            raise LegalError("fin avant début / the window ends before it starts")
        self.journal.append(
            actor,
            "register",
            reference,
            {
                "authority": authority,
                "legal_basis": legal_basis,
                "scope": scope,
                "start": start,
                "end": end,
                "received": received,
            },
            now,
        )

    def approve(self, reference: str, actor: str, now: float) -> int:
        """Approve; return the number of distinct approvers.

        Raises:
            ApprovalError: unknown or closed requisition, or this person already approved.
        """
        req = self._get(reference)
        if actor in req.approvals:
            raise ApprovalError(f"{actor} a déjà approuvé / already approved {reference}")
        self.journal.append(actor, "approve", reference, {}, now)
        return len(req.approvals) + 1

    def close(self, reference: str, actor: str, now: float) -> None:
        """Close a requisition: no more searches or exports under it."""
        self._get(reference)
        self.journal.append(actor, "close", reference, {}, now)

    def _get(self, reference: str) -> Requisition:
        req = self.all().get(reference)
        if req is None:
            raise ApprovalError(f"réquisition inconnue / unknown requisition {reference}")
        if req.closed:
            raise ApprovalError(f"réquisition close / closed requisition {reference}")
        return req

    def _authorised(self, reference: str, q: Query) -> Requisition:
        req = self._get(reference)
        if len(set(req.approvals)) < 2:
            raise ApprovalError(
                f"{reference}: deux approbations distinctes sont nécessaires / two distinct "
                f"approvals are needed ({len(set(req.approvals))} so far)"
            )
        if q.start < req.start or q.end > req.end:
            raise ApprovalError(
                f"{reference}: hors de la période de la réquisition / outside its time window"
            )
        return req

    def search(self, reference: str, actor: str, q: Query, now: float) -> list[Found]:
        """Search under an approved requisition; journaled with the number of results."""
        self._authorised(reference, q)
        found = search(self.store, q)
        self.journal.append(
            actor, "search", reference, {"query": q.describe(), "results": len(found)}, now
        )
        return found

    def export(self, reference: str, actor: str, q: Query, out_dir: Path, now: float) -> list[Path]:
        """Write CSV and JSON answers with detached signatures; journaled with their hashes.

        Raises:
            ApprovalError: not approved by two people, or outside the window.
            LegalError: the store has no signing key.
        """
        req = self._authorised(reference, q)
        if self.store.signing_key is None:
            raise LegalError("no signing key: cannot sign an export")
        found = search(self.store, q)
        out_dir.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in reference)
        rows = [_row(f) for f in found]
        exported_at = dt.datetime.fromtimestamp(now, dt.UTC).isoformat()
        doc: dict[str, Any] = {
            "requisition": {
                "reference": req.reference,
                "authority": req.authority,
                "legal_basis": req.legal_basis,
                "scope": req.scope,
            },
            "query": q.describe(),
            "exported_at": exported_at,
            "records": rows,
            "proofs": [self.store.proof(f.day, f.seq) for f in found],
        }
        paths = {
            out_dir / f"{safe}.json": json.dumps(doc, indent=2, ensure_ascii=False).encode(),
            out_dir / f"{safe}.csv": _csv(rows).encode(),
            out_dir / f"{safe}.pdf": render(_printable(req, q, rows, exported_at)),
        }
        hashes = {}
        for path, data in paths.items():
            path.write_bytes(data)
            sig = self.store.signing_key.sign(data)
            path.with_name(path.name + ".sig").write_text(sig.hex() + "\n")
            hashes[path.name] = hashlib.sha256(data).hexdigest()
        self.journal.append(
            actor,
            "export",
            reference,
            {"query": q.describe(), "results": len(found), "files": hashes},
            now,
        )
        return list(paths)


def _iso_ms(ms: int | None) -> str:
    if ms is None:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")


def _row(f: Found) -> dict[str, Any]:
    r = f.record.as_dict()
    r["start_utc"] = _iso_ms(f.record.start_ms)
    r["stop_utc"] = _iso_ms(f.record.stop_ms)
    r["log_day"], r["log_record"] = f.day, f.seq
    return r


_COLUMNS = [
    "session_id",
    "auth_method",
    "auth_ref",
    "client_mac",
    "private_ip",
    "public_ip",
    "port_start",
    "port_end",
    "start_utc",
    "stop_utc",
    "gateway",
    "commune",
    "up_bytes",
    "down_bytes",
    "terminate_cause",
    "log_day",
    "log_record",
]


def _printable(req: Requisition, q: Query, rows: list[dict[str, Any]], at: str) -> list[str]:
    """The lines of the printable answer, French then English headings."""
    lines = [
        f"Réponse à réquisition / Answer to requisition {req.reference}",
        f"Autorité / Authority: {req.authority}",
        f"Base légale / Legal basis: {req.legal_basis}",
        f"Objet / Scope: {req.scope}",
        f"Recherche / Query: {json.dumps(q.describe(), ensure_ascii=False)}",
        f"Extrait le / Exported at: {at}",
        f"Sessions: {len(rows)}",
        "",
    ]
    widths = {"session_id": 10, "client_mac": 17, "private_ip": 15, "public_ip": 15}
    head = [
        "session_id",
        "client_mac",
        "private_ip",
        "public_ip",
        "ports",
        "start_utc",
        "stop_utc",
        "gateway",
        "auth_ref",
    ]
    lines.append("  ".join(h.ljust(widths.get(h, 0)) for h in head))
    for r in rows:
        ports = f"{r['port_start']}-{r['port_end']}" if r["port_start"] is not None else "-"
        cells = [
            str(r["session_id"]),
            r["client_mac"],
            r["private_ip"],
            r["public_ip"] or "-",
            ports,
            r["start_utc"],
            r["stop_utc"] or "-",
            r["gateway"] or "-",
            r["auth_ref"] or "-",
        ]
        lines.append("  ".join(c.ljust(widths.get(h, 0)) for c, h in zip(cells, head, strict=True)))
    lines += [
        "",
        "Intégrité / Integrity: voir le JSON (preuves d'inclusion RFC 6962) et les "
        "signatures Ed25519 détachées (.sig) / see the JSON proofs and the .sig files",
    ]
    return lines


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()
