"""The legal officer's pages: the requisition register, two-person approval, searches and
signed exports of the legal retention log.

Only a legal officer who gave their TOTP code reaches ``/legal``; every other role, the
syndicate admin included, gets 403 (the dashboards' admins cannot read the log in
clear). Every step goes through ``controller.legal.requisitions`` exactly as ``borne
legal requisition`` does: the register lives in the hash-chained access journal, a
search or an export needs two approvals by two different people and stays within the
requisition's time window, and each search and export is a journal entry. The acting
person is the dashboard login name (officers should use the same name as their Unix
login, so that the two-person rule holds across the page and the CLI).

The page adds one rule of its own: registering a requisition on the page is its
registrant's approval, so that a second officer's approval completes it and the
registrant can never be both signatures.

Exports are made in a private temporary folder, sent as one ZIP (CSV, JSON, PDF, their
detached Ed25519 signatures, a note on how to check them) and deleted: no answer to a
requisition stays in clear on the controller. Store and journal work is blocking file IO
and crypto: it runs in worker threads, one journal write at a time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import ipaddress
import logging
import re
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web
from multidict import MultiDictProxy

from controller.config import LegalSettings
from controller.legal.errors import ApprovalError, LegalError
from controller.legal.keys import public_key_bytes
from controller.legal.requisitions import Query, Requisition, Requisitions
from controller.legal.store import Found, LegalStore
from dashboards._auth import Account, Role

__all__ = ["LegalPages", "parse_query", "parse_time"]

logger = logging.getLogger(__name__)


def _zones() -> dict[str, tuple[str, dt.tzinfo]]:
    """The zones offered, read once at import (a form never touches the tz database)."""
    out: dict[str, tuple[str, dt.tzinfo]] = {"UTC": ("UTC (temps universel)", dt.UTC)}
    try:
        out["Europe/Paris"] = ("heure de Paris", ZoneInfo("Europe/Paris"))
    except ZoneInfoNotFoundError:
        logger.warning("no tz database here: requisition times are read in UTC only")
    return out


# Time zones a requisition's times may be given in: UTC, or the territory's legal time.
_TZ: Final = _zones()
ZONES: Final = {name: label for name, (label, _) in _TZ.items()}
_PARIS: Final = _TZ.get("Europe/Paris", ("", dt.UTC))[1]
_MAC = re.compile(r"^[0-9a-f]{2}([:-]?[0-9a-f]{2}){5}$")
MAX_FIELD: Final = 500


class Render(Protocol):
    """The dashboards' page renderer (``_Dashboard._render``)."""

    def __call__(
        self, name: str, request: web.Request, status: int = 200, **values: Any
    ) -> web.Response: ...


class FormError(ValueError):
    """A form field is missing or malformed (the message is shown, French then English)."""


def parse_time(text: str, zone: str) -> float:
    """A date and time typed in a form (``YYYY-MM-DDTHH:MM[:SS]``) in ``zone``, as Unix time.

    Raises:
        FormError: not a date and time, or an unknown zone.
    """
    if zone not in ZONES:
        raise FormError("fuseau horaire inconnu / unknown time zone")
    try:
        t = dt.datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise FormError(f"date et heure attendues / date and time expected: {text!r}") from exc
    if t.tzinfo is None:
        t = t.replace(tzinfo=_TZ[zone][1])
    return t.timestamp()


def _field(form: MultiDictProxy[Any], name: str, label: str) -> str:
    value = str(form.get(name, "")).strip()
    if not value:
        raise FormError(f"{label} : champ obligatoire / required")
    if len(value) > MAX_FIELD:
        raise FormError(f"{label} : trop long / too long")
    return value


def _ip(text: str, label: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError as exc:
        raise FormError(f"{label} : adresse IP invalide / bad IP address") from exc


def parse_query(form: MultiDictProxy[Any], req: Requisition) -> Query:
    """The search a form asks for, checked (the scope is checked by ``Requisitions``).

    ``kind`` is ``public`` (``ip``, ``port``, ``at``), ``private`` (``ip``, ``gateway``,
    ``at``), ``mac`` or ``user`` (``value``, ``from``, ``to``, empty: the requisition's
    window). Times are read in the form's ``tz``.

    Raises:
        FormError: a field is missing or malformed.
    """
    kind = str(form.get("kind", ""))
    zone = str(form.get("tz", "UTC"))
    if zone not in ZONES:
        raise FormError("fuseau horaire inconnu / unknown time zone")
    if kind in ("public", "private"):
        at = parse_time(_field(form, "at", "Moment"), zone)
        ip = _ip(_field(form, "ip", "Adresse IP"), "Adresse IP")
        if kind == "public":
            try:
                port = int(_field(form, "port", "Port"))
            except ValueError as exc:
                raise FormError("Port : nombre attendu / number expected") from exc
            if not 1 <= port <= 65535:
                raise FormError("Port : entre 1 et 65535 / between 1 and 65535")
            return Query("public", ip, at, at, port=port)
        return Query("private", ip, at, at, gateway=_field(form, "gateway", "Borne"))
    if kind not in ("mac", "user"):
        raise FormError("type de recherche inconnu / unknown kind of search")
    start = parse_time(str(form["from"]), zone) if form.get("from") else req.start
    end = parse_time(str(form["to"]), zone) if form.get("to") else req.end
    if end < start:
        raise FormError("fin avant début / the period ends before it starts")
    if kind == "mac":
        mac = _field(form, "value", "Adresse MAC").lower()
        if not _MAC.match(mac):
            raise FormError("Adresse MAC invalide / bad MAC address (aa:bb:cc:dd:ee:ff)")
        raw = mac.replace(":", "").replace("-", "")
        return Query("mac", ":".join(raw[i : i + 2] for i in range(0, 12, 2)), start, end)
    return Query("user", _field(form, "value", "Identifiant"), start, end)


def utc_text(t: float | None) -> str:
    """A Unix time as UTC with milliseconds (how the law asks times to be kept)."""
    if t is None:
        return ""
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def paris_text(t: float | None) -> str:
    """A Unix time as a clock time in Paris."""
    if t is None:
        return ""
    return dt.datetime.fromtimestamp(t, _PARIS).strftime("%d/%m/%Y %H:%M:%S")


@dataclass(frozen=True)
class Row:
    """One found session as the page shows it."""

    found: Found
    start_utc: str
    stop_utc: str
    start_paris: str


_NOTE = """Réponse à réquisition {ref} — borne

Fichiers : {ref}.csv, {ref}.json (avec les preuves d'inclusion RFC 6962 de chaque
enregistrement), {ref}.pdf (version imprimable). Chaque fichier a une signature Ed25519
détachée (.sig, en hexadécimal, sur les octets du fichier). Le journal des accès du
contrôleur garde l'empreinte SHA-256 de chaque fichier.

Vérifier une signature avec la clé publique de signature du journal légal, celle que
l'officier des réquisitions conserve hors du contrôleur (la copie ci-dessous n'en est
qu'un rappel : comparez-la) :

  python3 -c "import sys; from cryptography.hazmat.primitives.asymmetric.ed25519 import \\
Ed25519PublicKey as K; K.from_public_bytes(bytes.fromhex(sys.argv[1])).verify(\\
bytes.fromhex(open(sys.argv[2] + '.sig').read()), open(sys.argv[2], 'rb').read()); \\
print('signature valide')" CLE {ref}.pdf

Clé publique de signature (rappel) / signing public key: {public_key}

Answer to requisition {ref}: CSV, JSON with inclusion proofs, printable PDF, each with a
detached Ed25519 signature (.sig, hex, over the file's bytes).
"""


class LegalPages:
    """Handlers of ``/legal``; share the dashboards' renderer and login.

    Args:
        settings: where the legal log and its keys are.
        render: the dashboards' page renderer.
        account_of: the logged-in account of a request (None in the open bootstrap mode).
        clock: the current Unix time.
        open_store: opens the store (``controller.legal.consumer.open_store``).
    """

    def __init__(
        self,
        settings: LegalSettings,
        render: Render,
        account_of: Callable[[web.Request], Account | None],
        clock: Callable[[], float],
        open_store: Callable[[LegalSettings], LegalStore] | None = None,
    ) -> None:
        self.settings = settings
        self.render = render
        self.account_of = account_of
        self.clock = clock
        if open_store is None:
            from controller.legal.consumer import open_store as _open

            open_store = _open
        self._open_store = open_store
        self._store: LegalStore | None = None
        # One journal write at a time from this process (each entry chains to the last).
        self.lock = asyncio.Lock()

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Register the pages."""
        router.add_get("/legal", self.register_page, name="legal")
        router.add_post("/legal", self.register_submit)
        router.add_get("/legal/requisition", self.requisition_page, name="legal-requisition")
        router.add_post("/legal/approve", self.approve)
        router.add_post("/legal/close", self.close)
        router.add_post("/legal/search", self.search)
        router.add_post("/legal/export", self.export)

    # -- access and store ---------------------------------------------------------------

    def _officer(self, request: web.Request) -> Account:
        account = self.account_of(request)
        if account is None or account.role is not Role.LEGAL_OFFICER:
            who = account.username if account is not None else "-"
            logger.warning("legal page refused", extra={"user": who, "path": request.path})
            raise web.HTTPForbidden(
                text="réservé aux officiers des réquisitions / legal officers only"
            )
        return account

    async def _requisitions(self) -> Requisitions:
        """The register; the store is opened at first use (its keys are read then).

        Raises:
            LegalError: the log has no keys here (``borne legal init`` not run).
        """
        if self._store is None:
            try:
                self._store = await asyncio.to_thread(self._open_store, self.settings)
            except (OSError, ValueError, LegalError) as exc:
                raise LegalError(
                    "le journal légal n'est pas initialisé sur ce contrôleur (borne legal "
                    f"init) / the legal log has no keys here: {exc}"
                ) from exc
        return Requisitions(self._store)

    async def _page(
        self,
        request: web.Request,
        *,
        status: int = 200,
        error: str | None = None,
        form: dict[str, str] | None = None,
    ) -> web.Response:
        account = self._officer(request)
        reqs, problems, unavailable = None, [], None
        try:
            r = await self._requisitions()
            reqs = await asyncio.to_thread(r.all)
            problems = await asyncio.to_thread(r.journal.verify)
        except LegalError as exc:
            unavailable = str(exc)
        except (ValueError, KeyError) as exc:
            # A journal line that is no longer JSON, or an entry missing a field.
            logger.error("the legal access journal cannot be read: %r", exc)
            unavailable = (
                "le journal des accès est illisible : faites vérifier le journal légal "
                "(borne legal verify) / the access journal cannot be read"
            )
        return self.render(
            "legal.html",
            request,
            status=status,
            officer=account,
            requisitions=sorted(
                (reqs or {}).values(), key=lambda q: (q.closed, -q.start, q.reference)
            ),
            journal_problems=problems,
            unavailable=unavailable,
            error=error,
            form=form or {},
            zones=ZONES,
            utc_text=utc_text,
        )

    async def register_page(self, request: web.Request) -> web.Response:
        """``GET /legal``: the register, the journal's state and the form to add one."""
        return await self._page(request)

    async def register_submit(self, request: web.Request) -> web.StreamResponse:
        """``POST /legal``: register a requisition; the registrant approves it at once."""
        officer = self._officer(request)
        form = await request.post()
        values = {k: str(form.get(k, ""))[:MAX_FIELD] for k in _REGISTER_FIELDS}
        try:
            zone = values["tz"] or "UTC"
            reference = _field(form, "reference", "Référence")
            authority = _field(form, "authority", "Autorité requérante")
            basis = _field(form, "basis", "Base légale")
            scope = _field(form, "scope", "Objet")
            start = parse_time(_field(form, "from", "Début"), zone)
            end = parse_time(_field(form, "to", "Fin"), zone)
            received = dt.date.fromisoformat(_field(form, "received", "Reçue le")).isoformat()
        except (FormError, ValueError) as exc:
            return await self._page(request, status=400, error=str(exc), form=values)
        now = self.clock()
        try:
            reqs = await self._requisitions()
            async with self.lock:
                await asyncio.to_thread(
                    reqs.register,
                    reference,
                    authority,
                    basis,
                    scope,
                    start,
                    end,
                    received,
                    officer.username,
                    now,
                )
                await asyncio.to_thread(reqs.approve, reference, officer.username, now)
        except LegalError as exc:
            return await self._page(request, status=400, error=str(exc), form=values)
        logger.info("requisition registered", extra={"user": officer.username, "ref": reference})
        return _see_other(request, reference)

    async def _detail(
        self,
        request: web.Request,
        reference: str,
        *,
        status: int = 200,
        error: str | None = None,
        results: list[Row] | None = None,
        query: dict[str, str] | None = None,
    ) -> web.Response:
        officer = self._officer(request)
        try:
            reqs = await self._requisitions()
        except LegalError as exc:
            return await self._page(request, status=503, error=str(exc))
        req = (await asyncio.to_thread(reqs.all)).get(reference)
        if req is None:
            raise web.HTTPNotFound(text="réquisition inconnue / unknown requisition")
        entries = [
            e
            for e in await asyncio.to_thread(reqs.journal.entries)
            if e["requisition"] == reference
        ]
        approvers = sorted(set(req.approvals))
        return self.render(
            "legal_requisition.html",
            request,
            status=status,
            officer=officer,
            req=req,
            approvers=approvers,
            approved=len(approvers) >= 2,
            may_approve=not req.closed
            and officer.username not in approvers
            and officer.username != req.registered_by,
            entries=entries,
            error=error,
            results=results,
            query=query or {},
            zones=ZONES,
            utc_text=utc_text,
            paris_text=paris_text,
        )

    async def requisition_page(self, request: web.Request) -> web.Response:
        """``GET /legal/requisition?ref=``: one requisition, its approvals, searches, history."""
        self._officer(request)
        return await self._detail(request, request.query.get("ref", ""))

    async def approve(self, request: web.Request) -> web.StreamResponse:
        """``POST /legal/approve``: approve as a second officer (never twice, nor one's own)."""
        officer = self._officer(request)
        reference = str((await request.post()).get("ref", ""))
        try:
            reqs = await self._requisitions()
            async with self.lock:
                req = (await asyncio.to_thread(reqs.all)).get(reference)
                if req is not None and req.registered_by == officer.username:
                    raise ApprovalError(
                        "vous avez enregistré cette réquisition : un autre officier doit "
                        "l'approuver / you registered it: another officer must approve it"
                    )
                await asyncio.to_thread(reqs.approve, reference, officer.username, self.clock())
        except ApprovalError as exc:
            return await self._detail(request, reference, status=403, error=str(exc))
        logger.info("requisition approved", extra={"user": officer.username, "ref": reference})
        return _see_other(request, reference)

    async def close(self, request: web.Request) -> web.StreamResponse:
        """``POST /legal/close``: close a requisition (no more searches or exports), once
        the officer ticked the confirmation (it cannot be undone)."""
        officer = self._officer(request)
        form = await request.post()
        reference = str(form.get("ref", ""))
        if form.get("confirm") != "1":
            return await self._detail(
                request,
                reference,
                status=400,
                error="Cochez la confirmation pour clore. / Tick the box to close.",
            )
        try:
            reqs = await self._requisitions()
            async with self.lock:
                await asyncio.to_thread(reqs.close, reference, officer.username, self.clock())
        except ApprovalError as exc:
            return await self._detail(request, reference, status=403, error=str(exc))
        return _see_other(request, reference)

    async def _query(
        self, request: web.Request
    ) -> tuple[Account, str, Requisitions, Query | None, dict[str, str], str | None]:
        officer = self._officer(request)
        form = await request.post()
        reference = str(form.get("ref", ""))
        values = {k: str(form.get(k, ""))[:MAX_FIELD] for k in _QUERY_FIELDS}
        reqs = await self._requisitions()
        req = (await asyncio.to_thread(reqs.all)).get(reference)
        if req is None:
            raise web.HTTPNotFound(text="réquisition inconnue / unknown requisition")
        try:
            return officer, reference, reqs, parse_query(form, req), values, None
        except FormError as exc:
            return officer, reference, reqs, None, values, str(exc)

    async def search(self, request: web.Request) -> web.Response:
        """``POST /legal/search``: search under an approved requisition (journaled)."""
        officer, reference, reqs, q, values, problem = await self._query(request)
        if q is None:
            return await self._detail(request, reference, status=400, error=problem, query=values)
        try:
            async with self.lock:
                found = await asyncio.to_thread(
                    reqs.search, reference, officer.username, q, self.clock()
                )
        except ApprovalError as exc:
            return await self._detail(request, reference, status=403, error=str(exc), query=values)
        except LegalError as exc:
            return await self._detail(request, reference, status=409, error=str(exc), query=values)
        logger.info(
            "requisition search",
            extra={"user": officer.username, "ref": reference, "results": len(found)},
        )
        rows = [
            Row(
                f,
                utc_text(f.record.start_ms / 1000),
                utc_text(f.record.stop_ms / 1000) if f.record.stop_ms is not None else "",
                paris_text(f.record.start_ms / 1000),
            )
            for f in found
        ]
        return await self._detail(request, reference, results=rows, query=values)

    async def export(self, request: web.Request) -> web.Response:
        """``POST /legal/export``: the signed CSV, JSON and PDF as one ZIP (journaled)."""
        officer, reference, reqs, q, values, problem = await self._query(request)
        if q is None:
            return await self._detail(request, reference, status=400, error=problem, query=values)
        now = self.clock()
        try:
            async with self.lock:
                data = await asyncio.to_thread(_export_zip, reqs, reference, officer, q, now)
        except ApprovalError as exc:
            return await self._detail(request, reference, status=403, error=str(exc), query=values)
        except LegalError as exc:
            return await self._detail(request, reference, status=409, error=str(exc), query=values)
        logger.info("requisition export", extra={"user": officer.username, "ref": reference})
        stamp = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        name = f"reponse-{_safe(reference)}-{stamp}.zip"
        return web.Response(
            body=data,
            content_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )


_REGISTER_FIELDS: Final = (
    "reference",
    "authority",
    "basis",
    "scope",
    "from",
    "to",
    "received",
    "tz",
)
_QUERY_FIELDS: Final = ("kind", "ip", "port", "gateway", "at", "value", "from", "to", "tz")


def _safe(reference: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in reference)


def _export_zip(
    reqs: Requisitions, reference: str, officer: Account, q: Query, now: float
) -> bytes:
    """Export into a private temporary folder, zip it, delete it (blocking)."""
    key = reqs.store.signing_key
    public = public_key_bytes(key.public_key()).hex() if key is not None else "?"
    with tempfile.TemporaryDirectory(prefix="borne-export-") as tmp:
        paths = reqs.export(reference, officer.username, q, Path(tmp), now)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in paths:
                zf.write(path, path.name)
                sig = path.with_name(path.name + ".sig")
                zf.write(sig, sig.name)
            zf.writestr("LISEZMOI.txt", _NOTE.format(ref=_safe(reference), public_key=public))
    return buf.getvalue()


def _see_other(request: web.Request, reference: str) -> web.Response:
    url = request.app.router["legal-requisition"].url_for().with_query({"ref": reference})
    return web.Response(status=303, headers={"Location": str(url)})
