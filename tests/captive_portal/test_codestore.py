"""Pending e-mail/SMS codes in the state database (SQLite, and PostgreSQL when
tests/run.sh provides one): used once, attempts counted, nothing guessable stored, and a
code sent before a restart of the portal still works after it (real SMTP server; the
controller side of the login is the FakeBackend of test_app)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from captive_portal._codes import CodeBook
from captive_portal._codestore import DatabaseCodes, prune_pending
from controller.config import CommunePortalSettings, EmailCodeSettings
from controller.storage import Database, open_database
from controller.storage.schema import portal_pending_codes, portal_pending_extensions
from tests.captive_portal.portal_fixtures import portal_client
from tests.captive_portal.test_app import FakeBackend
from tests.captive_portal.test_codepages import (
    CAHORS,
    challenge_of,
    code_in,
    login_state,
    policy,
)
from tests.captive_portal.test_email import Inbox, smtp_server

_smtp_server = smtp_server
DEVICE = "aa:bb:cc:dd:ee:01"
T0 = 1_800_000_000.0


async def _issue(codes: DatabaseCodes | CodeBook, code: str = "123456") -> str:
    return await codes.issue(
        "email", "marie@example.org", DEVICE, code=code, now=T0, ttl_s=600, attempts=3
    )


async def _dump(db: Database) -> str:
    async with db.connect() as conn:
        rows = (await conn.execute(sa.select(portal_pending_codes))).all()
    return repr([tuple(r) for r in rows])


async def test_a_right_code_works_once_on_its_device_only(db: Database) -> None:
    """The right code on another device does not log in (and uses an attempt); on its
    device it logs in once; nothing stored gives the code, the challenge id or the MAC."""
    codes = DatabaseCodes(db, "portal-secret")
    challenge = await _issue(codes)
    dump = await _dump(db)
    for clear in ("123456", challenge, DEVICE, DEVICE.replace(":", "")):
        assert clear not in dump
    assert "marie@example.org" in dump  # until used or expired, for the identity record
    assert await codes.check(challenge, "123456", "aa:bb:cc:dd:ee:02", T0 + 1) is None
    pending = await codes.peek(challenge)
    assert pending is not None and pending.attempts_left == 2
    used = await codes.check(challenge, " 123 456 ", DEVICE, T0 + 2)
    assert used is not None
    assert (used.channel, used.identity) == ("email", "marie@example.org")
    assert await codes.check(challenge, "123456", DEVICE, T0 + 3) is None
    assert await codes.peek(challenge) is None
    assert await _dump(db) == "[]"


async def test_wrong_codes_use_the_attempts_and_expiry_ends_a_code(db: Database) -> None:
    """Three wrong codes forget the challenge (the right one no longer works); a code
    past its expiry is refused and forgotten; the sweep deletes those over."""
    codes = DatabaseCodes(db, "portal-secret")
    challenge = await _issue(codes)
    for n in range(3):
        assert await codes.check(challenge, "000000", DEVICE, T0 + n) is None
    assert await codes.peek(challenge) is None
    assert await codes.check(challenge, "123456", DEVICE, T0 + 5) is None

    late = await _issue(codes)
    assert await codes.check(late, "123456", DEVICE, T0 + 600) is None
    assert await codes.peek(late) is None

    kept, over = await _issue(codes), await _issue(codes)
    async with db.begin() as conn:
        await conn.execute(
            portal_pending_codes.update()
            .where(portal_pending_codes.c.expires_at > 0)
            .values(expires_at=T0 + 600)
        )
        await conn.execute(
            portal_pending_extensions.insert().values(
                ap_id="ap-1", mac_hash="x" * 64, args="{}", minutes=60, deadline=T0 + 10
            )
        )
    assert await codes.peek(kept) is not None and await codes.peek(over) is not None
    assert await prune_pending(db, T0 + 599) == 1  # the extension
    assert await codes.sweep(T0 + 600) == 2
    assert await prune_pending(db, T0 + 10_000) == 0


async def test_another_key_cannot_use_the_stored_codes(db: Database) -> None:
    """The stored hashes are keyed: a store under another key finds nothing."""
    challenge = await _issue(DatabaseCodes(db, "portal-secret"))
    assert await DatabaseCodes(db, "another-secret").peek(challenge) is None
    assert await DatabaseCodes(db, "portal-secret").peek(challenge) is not None


async def test_memory_codes_follow_the_same_rules() -> None:
    """The in-process store (a portal without a database) answers the same way."""
    codes = CodeBook()
    challenge = await _issue(codes)
    assert await codes.check(challenge, "123456", "aa:bb:cc:dd:ee:02", T0) is None
    assert await codes.check(challenge, "123456", DEVICE, T0) is not None
    assert await codes.check(challenge, "123456", DEVICE, T0) is None
    assert await codes.sweep(T0) == 0


async def test_a_code_sent_before_a_restart_works_once_after_it(
    aiohttp_client: Any, make_fas: Any, _smtp_server: tuple[Inbox, int], tmp_path: Path
) -> None:
    """A visitor asks for a code; the portal restarts (a new application, a new
    connection to the same database); the code from the e-mail logs in once."""
    inbox, port = _smtp_server
    mail = EmailCodeSettings(smtp_port=port, sender="wifi@lot.example")
    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"

    first_db = await open_database(url)
    client, backend = await _portal_with_store(aiohttp_client, mail, first_db)
    state, _ = await login_state(client, make_fas, "fr")
    sent = await client.post(
        "/fas/email",
        data={"state": state, "consent": "yes", "identity": "marie@example.org", "lang": "fr"},
    )
    assert sent.status == 200
    challenge = challenge_of(await sent.text())
    ((_, message),) = inbox.messages
    code = code_in(message.get_content())
    await client.close()
    await first_db.aclose()

    second_db = await open_database(url)
    try:
        client, backend = await _portal_with_store(aiohttp_client, mail, second_db)
        form = {
            "state": state,
            "challenge": challenge,
            "code": code,
            "consent": "yes",
            "channel": "email",
        }
        right = await client.post("/fas/code", data=form)
        assert right.status == 200, await right.text()
        (call,) = backend.calls
        assert (call.method, call.identity) == ("email", "marie@example.org")
        again = await client.post("/fas/code", data=form)
        assert again.status == 400 and len(backend.calls) == 1
    finally:
        await second_db.aclose()


class StoringBackend(FakeBackend):
    """The fake controller side, keeping its pending codes in a real database."""

    def __init__(self, db: Database) -> None:
        super().__init__()
        self.pending_codes = DatabaseCodes(db, "portal-secret")


async def _portal_with_store(
    aiohttp_client: Any, mail: EmailCodeSettings, db: Database
) -> tuple[Any, StoringBackend]:
    """A portal whose backend keeps its pending codes in ``db`` (as the controller's)."""
    backend = StoringBackend(db)
    backend.commune_policy = policy()
    client = await portal_client(
        aiohttp_client,
        backend,
        communes={CAHORS: CommunePortalSettings(methods=("email",))},
        email=mail,
    )
    return client, backend
