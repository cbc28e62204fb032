"""The legal officer's requisition pages against a real legal log and a real controller.

The log is written by its own store (as the controller's legal consumer does) on a
temporary folder with real keys; the pages open it themselves, read the day being
written, and go through ``controller.legal.requisitions`` for every step. Accounts are
real (argon2id, TOTP) on a temporary SQLite database.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
import sys
import tempfile
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from multidict import MultiDict

from controller.config import Settings, load_settings
from controller.legal.consumer import open_store
from controller.legal.keys import (
    MasterKey,
    generate_signing_key,
    load_signing_key,
    public_key_bytes,
)
from controller.legal.requisitions import Journal, Requisitions
from controller.legal.store import LegalStore
from controller.registry import Registry, lot_communes
from controller.service import Controller
from controller.storage import open_database
from dashboards._auth import Role, hash_password
from dashboards._legal import FormError, parse_query, parse_time
from dashboards.accounts import AccountStore
from tests.controller.legal.conftest import record
from tests.dashboards.test_app import (
    ADMIN_SECRET,
    INSEE,
    NOW,
    PASSWORD,
    ClientFactory,
    _client,
    _csrf_of,
    _logged_in,
    controller,
)

# Re-exported fixture (defined in tests/dashboards/test_app.py).
__all__ = ["controller"]

Client = TestClient[web.Request, web.Application]

MAC = "02:aa:bb:cc:dd:01"
PUBLIC_IP, PORT_START = "192.0.2.10", 2048
PRIVATE_IP, GATEWAY = "10.46.7.23", "rocamadour-01"
VOUCHER = "V-4242"
START, STOP = NOW - 7200, NOW - 3600
REF = "PV-2026/42"


def _iso(t: float) -> str:
    """A UTC time as a ``datetime-local`` field holds it."""
    import datetime as dt

    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _write_log(tmp_path: Path) -> tuple[Settings, LegalStore]:
    """Keys, settings and the log with the searched session among others (blocking)."""
    legal_dir = tmp_path / "legal"
    legal_dir.mkdir()
    (tmp_path / "master.key").write_text(MasterKey.new_text())
    generate_signing_key(tmp_path / "signing.pem")
    settings = load_settings(
        None,
        database={"url": f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"},
        legal={
            "directory": str(legal_dir),
            "master_key_file": str(tmp_path / "master.key"),
            "signing_key_file": str(tmp_path / "signing.pem"),
        },
    )
    writer = LegalStore(
        legal_dir,
        MasterKey.from_file(tmp_path / "master.key"),
        load_signing_key(tmp_path / "signing.pem"),
        checkpoint_s=0,
    )
    ms = int(START * 1000)
    target = record(
        7,
        session_id="s-target",
        auth_method="voucher",
        auth_ref=VOUCHER,
        client_mac=MAC,
        private_ip=PRIVATE_IP,
        public_ip=PUBLIC_IP,
        port_start=PORT_START,
        port_end=PORT_START + 511,
        start_ms=ms,
        gateway=GATEWAY,
        commune=INSEE["Rocamadour"],
    )
    noise = [record(i, start_ms=ms + i, stop_ms=ms + 600_000, gateway=GATEWAY) for i in range(100)]
    writer.append([(i + 1, r) for i, r in enumerate(noise[:50])], START)
    writer.append([(51, target)], START)
    stop = record(
        7,
        **{**target.as_dict(), "event": "stop", "stop_ms": int(STOP * 1000), "up_bytes": 12345},
    )
    writer.append([(52 + i, r) for i, r in enumerate([*noise[50:], stop])], STOP)
    return settings, writer


@pytest.fixture
async def legal(tmp_path: Path) -> AsyncIterator[Controller]:
    """A controller whose legal log holds the searched session among others, written by
    another store (the consumer's) that keeps the day open; officers, admin, communes."""
    settings, writer = await asyncio.to_thread(_write_log, tmp_path)
    db = await open_database(settings.database.url.get_secret_value())
    registry = Registry(db, settings.command_master_key.get_secret_value())
    await registry.add_communes(lot_communes())
    store = AccountStore(db)
    pw = await asyncio.to_thread(hash_password, PASSWORD)
    for name, role in (
        ("legal", Role.LEGAL_OFFICER),
        ("legal2", Role.LEGAL_OFFICER),
        ("admin", Role.ADMIN),
    ):
        await store.create(name, name.title(), role, pw, totp_secret=ADMIN_SECRET, now=NOW)
    await store.create("tech", "Tech", Role.TECHNICIAN, pw, now=NOW)
    await store.create(
        "roc", "Rocamadour", Role.COMMUNE_MANAGER, pw, communes=[INSEE["Rocamadour"]], now=NOW
    )
    try:
        yield Controller(settings, db, registry)
    finally:
        writer.close()
        await db.aclose()


def _journal_of(site: Controller) -> Journal:
    return Journal(Path(site.settings.legal.directory) / "journal.jsonl")


async def _journal(site: Controller) -> list[dict[str, Any]]:
    return await asyncio.to_thread(_journal_of(site).entries)


async def _post(client: Client, path: str, data: dict[str, str], csrf: str) -> Any:
    return await client.post(path, data={**data, "csrf": csrf}, allow_redirects=False)


async def _register(client: Client, reference: str = REF, **changes: str) -> Any:
    csrf = await _csrf_of(client, "/legal")
    form = {
        "reference": reference,
        "authority": "OPJ, brigade de Gramat",
        "basis": "CPP 60-1, 60-1-2",
        "scope": f"Titulaire de l'IP {PUBLIC_IP} port {PORT_START + 7}",
        "from": _iso(NOW - 86400),
        "to": _iso(NOW),
        "tz": "UTC",
        "received": "2026-05-28",
        **changes,
    }
    return await _post(client, "/legal", form, csrf)


async def _approved(legal: Controller, aiohttp_client: ClientFactory) -> tuple[Client, str]:
    """``legal`` registers, ``legal2`` approves; ``legal``'s client and CSRF token."""
    first = await _logged_in(legal, aiohttp_client, "legal")
    assert (await _register(first)).status == 303
    second = await _logged_in(legal, aiohttp_client, "legal2")
    csrf2 = await _csrf_of(second, f"/legal/requisition?ref={REF}")
    assert (await _post(second, "/legal/approve", {"ref": REF}, csrf2)).status == 303
    return first, await _csrf_of(first, "/legal")


SEARCHES = {
    "public": {
        "kind": "public",
        "ip": PUBLIC_IP,
        "port": str(PORT_START + 7),
        "at": _iso(START + 60),
    },
    "private": {"kind": "private", "ip": PRIVATE_IP, "gateway": GATEWAY, "at": _iso(START + 60)},
    "mac": {"kind": "mac", "value": MAC.upper().replace(":", "-")},
    "user": {"kind": "user", "value": VOUCHER, "from": _iso(NOW - 80000), "to": _iso(NOW - 10)},
}


async def test_only_a_legal_officer_with_totp_reaches_the_pages(
    legal: Controller, aiohttp_client: ClientFactory
) -> None:
    """Admin, technician and commune accounts get 403 on every page and action; without a
    login the pages redirect to /login; a legal officer without TOTP to /login/totp."""
    for user in ("admin", "tech", "roc"):
        client = await _logged_in(legal, aiohttp_client, user)
        csrf = await _csrf_of(client, "/admin/accounts" if user == "admin" else "/fleet")
        assert (await client.get("/legal")).status == 403, user
        assert (await client.get(f"/legal/requisition?ref={REF}")).status == 403
        for path in ("/legal", "/legal/approve", "/legal/search", "/legal/export", "/legal/close"):
            resp = await _post(client, path, {"ref": REF, **SEARCHES["mac"]}, csrf)
            assert resp.status == 403, (user, path)
    anonymous = await _client(legal, aiohttp_client)
    resp = await anonymous.get("/legal", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/login"
    half = await _client(legal, aiohttp_client)
    await half.post("/login", data={"username": "legal", "password": PASSWORD})
    resp = await half.get("/legal", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/login/totp"
    assert (await _journal(legal)) == []
    officer = await _logged_in(legal, aiohttp_client, "legal")
    html = await (await officer.get("/")).text()
    assert 'href="/legal"' in html
    page = await officer.get("/legal")
    assert page.status == 200
    text = await page.text()
    assert "Registre des réquisitions" in text and 'id="journal-ok"' in text


async def test_two_officers_are_needed_and_the_registrant_cannot_approve(
    legal: Controller, aiohttp_client: ClientFactory
) -> None:
    """Registering is the first signature; the registrant cannot approve again, a search
    before the second approval is refused (and not journaled); a second officer's
    approval opens the searches."""
    first = await _logged_in(legal, aiohttp_client, "legal")
    resp = await _register(first)
    assert resp.status == 303
    assert resp.headers["Location"] == "/legal/requisition?ref=PV-2026/42"
    html = await (await first.get(resp.headers["Location"])).text()
    assert 'id="approve"' not in html and 'id="wait-second"' in html
    csrf = await _csrf_of(first, "/legal")
    refused = await _post(first, "/legal/approve", {"ref": REF}, csrf)
    assert refused.status == 403 and "un autre officier" in await refused.text()
    early = await _post(first, "/legal/search", {"ref": REF, **SEARCHES["mac"]}, csrf)
    assert early.status == 403 and "deux approbations" in await early.text()
    assert [e["action"] for e in (await _journal(legal))] == ["register", "approve"]
    second = await _logged_in(legal, aiohttp_client, "legal2")
    page = await (await second.get(f"/legal/requisition?ref={REF}")).text()
    assert 'id="approve"' in page
    csrf2 = await _csrf_of(second, "/legal")
    assert (await _post(second, "/legal/approve", {"ref": REF}, csrf2)).status == 303
    again = await _post(second, "/legal/approve", {"ref": REF}, csrf2)
    assert again.status == 403
    entries = await _journal(legal)
    assert [(e["action"], e["actor"]) for e in entries] == [
        ("register", "legal"),
        ("approve", "legal"),
        ("approve", "legal2"),
    ]
    ok = await _post(first, "/legal/search", {"ref": REF, **SEARCHES["mac"]}, csrf)
    assert ok.status == 200 and "s-target" in await ok.text()
    listing = await (await first.get("/legal")).text()
    assert "approuvée (2/2)" in listing and "OPJ, brigade de Gramat" in listing


@pytest.mark.parametrize("kind", list(SEARCHES))
async def test_each_search_finds_the_session_and_is_journaled(
    legal: Controller, aiohttp_client: ClientFactory, kind: str
) -> None:
    """Public IP + port + time, private IP + gateway + time, MAC (any notation) and user
    id each find the session in the day being written; the journal gets the query and
    the number of results, chained."""
    client, csrf = await _approved(legal, aiohttp_client)
    resp = await _post(client, "/legal/search", {"ref": REF, **SEARCHES[kind]}, csrf)
    assert resp.status == 200
    html = await resp.text()
    assert "Résultat : 1 session" in html
    assert "s-target" in html and MAC in html and PRIVATE_IP in html
    assert "12345" in html  # the stop record's volume: the session's latest record
    last = (await _journal(legal))[-1]
    assert last["action"] == "search" and last["actor"] == "legal"
    assert last["details"]["results"] == 1 and last["details"]["query"]["kind"] == kind
    assert await asyncio.to_thread(_journal_of(legal).verify) == []
    history = await (await client.get(f"/legal/requisition?ref={REF}")).text()
    assert "recherche" in history and "1 résultat(s)" in history


async def test_a_search_finds_nothing_outside_the_session(
    legal: Controller, aiohttp_client: ClientFactory
) -> None:
    """The right address at a time the session was not open, or another port block,
    finds nothing (and says so); both searches are journaled with 0 results."""
    client, csrf = await _approved(legal, aiohttp_client)
    for change in ({"at": _iso(START - 600)}, {"port": str(PORT_START + 600)}):
        resp = await _post(
            client, "/legal/search", {"ref": REF, **SEARCHES["public"], **change}, csrf
        )
        assert resp.status == 200 and 'id="no-result"' in await resp.text()
    assert [e["details"]["results"] for e in (await _journal(legal))[-2:]] == [0, 0]


async def test_the_requisition_window_and_closing_are_enforced(
    legal: Controller, aiohttp_client: ClientFactory
) -> None:
    """A search outside the requisition's period is refused (403, not journaled); after
    closing, searches and exports are refused."""
    client, csrf = await _approved(legal, aiohttp_client)
    n = len(await _journal(legal))
    outside = {**SEARCHES["public"], "at": _iso(NOW - 2 * 86400)}
    resp = await _post(client, "/legal/search", {"ref": REF, **outside}, csrf)
    assert resp.status == 403 and "hors de la période" in await resp.text()
    wide = {**SEARCHES["mac"], "from": _iso(NOW - 3 * 86400)}
    assert (await _post(client, "/legal/export", {"ref": REF, **wide}, csrf)).status == 403
    assert len(await _journal(legal)) == n
    unconfirmed = await _post(client, "/legal/close", {"ref": REF}, csrf)
    assert unconfirmed.status == 400 and "Cochez la confirmation" in await unconfirmed.text()
    assert (await _post(client, "/legal/close", {"ref": REF, "confirm": "1"}, csrf)).status == 303
    for path in ("/legal/search", "/legal/export"):
        resp = await _post(client, path, {"ref": REF, **SEARCHES["mac"]}, csrf)
        assert resp.status == 403 and "close" in await resp.text()
    assert [e["action"] for e in (await _journal(legal))[n:]] == ["close"]
    unknown = await _post(client, "/legal/search", {"ref": "PV-0", **SEARCHES["mac"]}, csrf)
    assert unknown.status == 404


async def test_export_is_a_zip_of_signed_files_journaled_with_their_hashes(
    legal: Controller, aiohttp_client: ClientFactory, tmp_path: Path, monkeypatch: Any
) -> None:
    """The ZIP holds CSV, JSON (with inclusion proofs) and PDF, each with an Ed25519
    signature that verifies with the log's public key; the journal's export entry has
    their SHA-256; nothing of the answer stays on the controller."""
    workdir = tmp_path / "tmp"
    await asyncio.to_thread(workdir.mkdir)
    monkeypatch.setattr(tempfile, "tempdir", str(workdir))
    client, csrf = await _approved(legal, aiohttp_client)
    resp = await _post(client, "/legal/export", {"ref": REF, **SEARCHES["public"]}, csrf)
    assert resp.status == 200 and resp.content_type == "application/zip"
    assert re.match(
        r'attachment; filename="reponse-PV-2026_42-\d{8}T\d{6}Z\.zip"',
        resp.headers["Content-Disposition"],
    )
    files = zipfile.ZipFile(io.BytesIO(await resp.read()))
    names = set(files.namelist())
    assert names == {
        "PV-2026_42.csv",
        "PV-2026_42.csv.sig",
        "PV-2026_42.json",
        "PV-2026_42.json.sig",
        "PV-2026_42.pdf",
        "PV-2026_42.pdf.sig",
        "LISEZMOI.txt",
    }
    store = await asyncio.to_thread(open_store, legal.settings.legal)
    assert store.signing_key is not None
    public: Ed25519PublicKey = store.signing_key.public_key()
    entry = (await _journal(legal))[-1]
    assert entry["action"] == "export" and entry["actor"] == "legal"
    for name in ("PV-2026_42.csv", "PV-2026_42.json", "PV-2026_42.pdf"):
        data = files.read(name)
        public.verify(bytes.fromhex(files.read(name + ".sig").decode().strip()), data)
        assert entry["details"]["files"][name] == hashlib.sha256(data).hexdigest()
    doc = json.loads(files.read("PV-2026_42.json"))
    assert [r["session_id"] for r in doc["records"]] == ["s-target"]
    assert doc["proofs"][0]["day"] == doc["records"][0]["log_day"]
    assert "s-target" in files.read("PV-2026_42.csv").decode()
    assert files.read("PV-2026_42.pdf").startswith(b"%PDF-")
    # The note's command, run as written, checks the PDF's signature.
    note = files.read("LISEZMOI.txt").decode()
    command = note[note.index("  python3 -c") : note.index(".pdf\n") + 4]
    command = command.replace("CLE", public_key_bytes(public).hex())
    out = tmp_path / "out"
    await asyncio.to_thread(files.extractall, out)
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        command.replace("python3", sys.executable, 1),
        cwd=out,
        stdout=asyncio.subprocess.PIPE,
    )
    assert (await proc.communicate())[0] == b"signature valide\n"
    assert proc.returncode == 0
    assert await asyncio.to_thread(lambda: list(workdir.iterdir())) == []


async def test_posts_need_the_csrf_token_and_our_origin(
    legal: Controller, aiohttp_client: ClientFactory
) -> None:
    """Without the session's CSRF token, or from another origin, nothing is registered,
    approved, searched or exported."""
    client, csrf = await _approved(legal, aiohttp_client)
    n = len(await _journal(legal))
    for path in ("/legal", "/legal/approve", "/legal/search", "/legal/export"):
        data = {"ref": REF, **SEARCHES["mac"]}
        assert (await client.post(path, data=data)).status == 403
        assert (await client.post(path, data={**data, "csrf": "0" * 64})).status == 403
        foreign = await client.post(
            path, data={**data, "csrf": csrf}, headers={"Origin": "https://evil.example"}
        )
        assert foreign.status == 403
    assert len(await _journal(legal)) == n


async def test_bad_input_is_a_clear_400_and_writes_nothing(
    legal: Controller, aiohttp_client: ClientFactory
) -> None:
    """Malformed fields are refused with a message naming the field; nothing is journaled;
    the form keeps what was typed."""
    client, csrf = await _approved(legal, aiohttp_client)
    n = len(await _journal(legal))
    bad = [
        ({**SEARCHES["public"], "ip": "192.0.2"}, "adresse IP invalide"),
        ({**SEARCHES["public"], "port": "70000"}, "entre 1 et 65535"),
        ({**SEARCHES["public"], "port": "x"}, "nombre attendu"),
        ({**SEARCHES["public"], "at": "hier"}, "date et heure attendues"),
        ({**SEARCHES["private"], "gateway": ""}, "Borne : champ obligatoire"),
        ({**SEARCHES["mac"], "value": "02:aa:bb"}, "Adresse MAC invalide"),
        ({**SEARCHES["user"], "to": _iso(NOW - 90000)}, "fin avant début"),
        ({**SEARCHES["mac"], "tz": "Mars/Olympus"}, "fuseau horaire inconnu"),
        ({"kind": "dns"}, "type de recherche inconnu"),
    ]
    for data, message in bad:
        resp = await _post(client, "/legal/search", {"ref": REF, **data}, csrf)
        assert resp.status == 400, data
        assert message in await resp.text(), data
    resp = await _register(client, "PV-2", to=_iso(NOW - 2 * 86400))
    assert resp.status == 400 and "fin avant début" in await resp.text()
    resp = await _register(client, REF)
    assert resp.status == 400 and "existe déjà" in await resp.text()
    resp = await _register(client, "PV-3", authority=" ")
    html = await resp.text()
    assert resp.status == 400 and "Autorité requérante : champ obligatoire" in html
    assert 'value="PV-3"' in html
    assert len(await _journal(legal)) == n


async def test_times_may_be_given_in_paris_time(
    legal: Controller, aiohttp_client: ClientFactory
) -> None:
    """A requisition's period typed in Paris time is kept in UTC (2 hours earlier in May)."""
    client = await _logged_in(legal, aiohttp_client, "legal")
    resp = await _register(client, "PV-PARIS", tz="Europe/Paris", **{"from": "2026-05-28T10:00:00"})
    assert resp.status == 303
    store = await asyncio.to_thread(open_store, legal.settings.legal)
    req = (await asyncio.to_thread(Requisitions(store).all))["PV-PARIS"]
    assert req.start == parse_time("2026-05-28T08:00:00", "UTC")


async def test_no_one_reaches_the_pages_before_the_first_account(
    controller: Controller, aiohttp_client: ClientFactory
) -> None:
    """The open bootstrap mode (loopback, no account yet) shows the fleet but never the
    legal pages."""
    client = await _client(controller, aiohttp_client)
    assert (await client.get("/")).status == 200
    assert (await client.get("/legal")).status == 403
    assert (await client.get(f"/legal/requisition?ref={REF}")).status == 403


async def test_a_controller_without_legal_keys_says_so(
    legal: Controller, aiohttp_client: ClientFactory
) -> None:
    """Without `borne legal init` the page explains it instead of failing."""
    await asyncio.to_thread(Path(legal.settings.legal.signing_key_file).unlink)
    client = await _logged_in(legal, aiohttp_client, "legal")
    resp = await client.get("/legal")
    assert resp.status == 200
    html = await resp.text()
    assert 'id="unavailable"' in html and "borne legal init" in html
    assert (await _register(client)).status == 400


def test_parse_query_normalises_and_defaults_to_the_window() -> None:
    """Pure checks of the form parser: MAC notations, the requisition's window by default."""
    from controller.legal.requisitions import Requisition

    req = Requisition(REF, "OPJ", "CPP 60-1", "x", 100.0, 200.0, "2026-05-28", "legal")
    q = parse_query(MultiDict({"kind": "mac", "value": "02AABBCCDD01"}), req)  # type: ignore[arg-type]
    assert (q.value, q.start, q.end) == (MAC, 100.0, 200.0)
    with pytest.raises(FormError):
        parse_query(MultiDict({"kind": "public", "ip": PUBLIC_IP, "at": "x"}), req)  # type: ignore[arg-type]


async def test_a_damaged_journal_is_reported_not_a_crash(
    legal: Controller, aiohttp_client: ClientFactory
) -> None:
    """A journal line that is no longer JSON: the register says the journal cannot be
    read (and to run ``borne legal verify``) instead of failing."""
    client = await _logged_in(legal, aiohttp_client, "legal")
    assert (await _register(client)).status == 303
    path = _journal_of(legal).path

    def damage() -> None:
        with path.open("a") as fh:
            fh.write("{not json\n")

    await asyncio.to_thread(damage)
    resp = await client.get("/legal")
    assert resp.status == 200
    assert "le journal des accès est illisible" in await resp.text()
