"""The account store on real databases: SQLite always, PostgreSQL when marked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from controller.storage import Database, open_database
from dashboards._auth import Role, token_hash
from dashboards.accounts import AccountError, AccountStore

NOW = 1_780_000_000.0
HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    database = await open_database(url)
    async with database.begin() as conn:
        for table in (
            "dashboard_logins",
            "dashboard_account_communes",
            "dashboard_accounts",
            "dashboard_commune_contacts",
        ):
            await conn.execute(sa.text(f"DELETE FROM {table}"))
    try:
        yield database
    finally:
        await database.aclose()


async def test_accounts_round_trip_with_communes(db: Database) -> None:
    """An account comes back with its role and communes; the store says accounts exist."""
    store = AccountStore(db)
    assert not await store.has_accounts()
    await store.create(
        "mairie.roc", "Mairie", Role.COMMUNE_VIEWER, HASH, communes=["46240"], now=NOW
    )
    await store.create("admin", "Admin", Role.ADMIN, HASH, totp_secret="S" * 32, now=NOW)
    assert await store.has_accounts()
    creds = await store.credentials("mairie.roc")
    assert creds is not None
    assert creds.account.role is Role.COMMUNE_VIEWER
    assert creds.account.communes == {"46240"}
    assert creds.password_hash == HASH and creds.totp_secret is None
    listed = await store.accounts()
    assert [(a.username, active) for a, active in listed] == [("admin", True), ("mairie.roc", True)]


@pytest.mark.parametrize(
    ("username", "role", "communes", "secret"),
    [
        ("Bad Name", Role.TECHNICIAN, [], None),
        ("mairie", Role.COMMUNE_VIEWER, [], None),  # a commune account needs a commune
        ("tech", Role.TECHNICIAN, ["46240"], None),  # only commune accounts are scoped
        ("mairie", Role.COMMUNE_MANAGER, ["4624"], None),  # not an INSEE code
        ("admin", Role.ADMIN, [], None),  # admin without TOTP secret
        ("legal", Role.LEGAL_OFFICER, [], None),
    ],
)
async def test_invalid_accounts_are_refused(
    db: Database, username: str, role: Role, communes: list[str], secret: str | None
) -> None:
    """Bad names, unscoped commune accounts, scoped territory accounts, admins without TOTP."""
    store = AccountStore(db)
    with pytest.raises(AccountError):
        await store.create(username, "", role, HASH, communes=communes, totp_secret=secret, now=NOW)
    assert not await store.has_accounts()


async def test_duplicate_username_is_refused(db: Database) -> None:
    """A taken user name gives AccountError, not a database error."""
    store = AccountStore(db)
    await store.create("tech", "", Role.TECHNICIAN, HASH, now=NOW)
    with pytest.raises(AccountError, match="existe déjà"):
        await store.create("tech", "", Role.TECHNICIAN, HASH, now=NOW)


async def test_login_sessions_expire_and_end_with_disable_or_password_change(db: Database) -> None:
    """A login lives until its expiry, logout, disabling or a new password; TOTP step kept."""
    store = AccountStore(db)
    await store.create("admin", "", Role.ADMIN, HASH, totp_secret="S" * 32, now=NOW)
    await store.start_login(token_hash("t1"), "admin", False, NOW, 3600)
    login = await store.login(token_hash("t1"), NOW + 10)
    assert login is not None and not login.second_factor_ok and login.totp_secret == "S" * 32
    await store.confirm_second_factor(token_hash("t1"))
    login = await store.login(token_hash("t1"), NOW + 10)
    assert login is not None and login.second_factor_ok
    assert await store.login(token_hash("t1"), NOW + 3600) is None
    assert await store.login(token_hash("other"), NOW) is None

    await store.start_login(token_hash("t2"), "admin", True, NOW, 3600)
    await store.set_password("admin", HASH)
    assert await store.login(token_hash("t2"), NOW) is None

    await store.start_login(token_hash("t3"), "admin", True, NOW, 3600)
    await store.set_active("admin", False)
    assert await store.login(token_hash("t3"), NOW) is None
    assert await store.credentials("admin") is None
    await store.set_active("admin", True)
    assert await store.credentials("admin") is not None

    await store.start_login(token_hash("t4"), "admin", True, NOW, 3600)
    await store.end_login(token_hash("t4"))
    assert await store.login(token_hash("t4"), NOW) is None
    with pytest.raises(AccountError):
        await store.set_active("nobody", False)


async def test_the_database_holds_no_token(db: Database) -> None:
    """The login table keeps a SHA-256 of the token, not the token itself."""
    store = AccountStore(db)
    await store.create("tech", "", Role.TECHNICIAN, HASH, now=NOW)
    token = "a-very-secret-login-token"
    await store.start_login(token_hash(token), "tech", True, NOW, 60)
    async with db.connect() as conn:
        rows = (await conn.execute(sa.text("SELECT * FROM dashboard_logins"))).all()
    assert rows and all(token not in str(tuple(r)) for r in rows)


async def test_commune_contacts_round_trip_and_are_checked(db: Database) -> None:
    """Contact details are stored per commune, replaced whole, trimmed; bad ones refused."""
    store = AccountStore(db)
    assert await store.contacts(["46240"]) == {}
    fields = {
        "label": "  Mairie de   Rocamadour ",
        "phone": "05 65 33 62 59",
        "email": "mairie@rocamadour.example",
        "address": "Le Bourg, 46500 Rocamadour",
        "hours": "lundi–vendredi 9 h–12 h",
    }
    saved = await store.set_contact("46240", fields, "epci", 1000.0)
    assert saved.label == "Mairie de Rocamadour" and not saved.empty
    got = await store.contacts(["46240", "46042"])
    assert list(got) == ["46240"] and got["46240"] == saved
    await store.set_contact("46240", {"phone": "+33 5 65 33 62 59"}, "epci", 2000.0)
    again = (await store.contacts(["46240"]))["46240"]
    assert again.phone == "+33 5 65 33 62 59" and again.label == "" and again.updated_at == 2000.0
    for bad in ({"phone": "appelez-nous"}, {"email": "pas une adresse"}, {"hours": "x" * 501}):
        with pytest.raises(AccountError):
            await store.set_contact("46240", bad, "epci", 3000.0)
    assert (await store.contacts(["46240"]))["46240"].updated_at == 2000.0
