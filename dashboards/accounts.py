"""Dashboard accounts and login sessions in the state database (SQLite or PostgreSQL);
the communes' contact details their managers keep (``dashboard_commune_contacts``).

Stores argon2id hashes (made by ``dashboards._auth``), never a password; login sessions
by the SHA-256 of their token, never the token. It decides nothing about rights: that is
``dashboards._auth.Account``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from controller.storage import Database
from controller.storage.schema import (
    dashboard_account_communes,
    dashboard_accounts,
    dashboard_commune_contacts,
    dashboard_logins,
)
from dashboards._auth import SECOND_FACTOR_ROLES, Account, Role

__all__ = [
    "AccountError",
    "AccountStore",
    "CommuneContact",
    "Credentials",
    "Login",
    "check_contact",
    "check_email",
]

# Lower-case letters, digits, dots, dashes and underscores: safe in URLs, logs and forms.
_USERNAME: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
_INSEE: Final = re.compile(r"^[0-9][0-9AB][0-9]{3}$")
_SCOPED: Final = frozenset({Role.COMMUNE_VIEWER, Role.COMMUNE_MANAGER})
# A French or international phone number as people write it.
_PHONE: Final = re.compile(r"^\+?[0-9][0-9 .-]{5,30}$")
_EMAIL: Final = re.compile(r"^[^@\s<>\"]{1,64}@[A-Za-z0-9.-]{1,190}\.[A-Za-z]{2,24}$")
_CONTACT_LIMITS: Final = {"label": 200, "phone": 32, "email": 200, "address": 500, "hours": 500}


class AccountError(Exception):
    """An account cannot be created or changed as asked (message in French / English)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Credentials:
    """What a login checks: the account, its password hash, its TOTP secret if any."""

    account: Account
    password_hash: str
    totp_secret: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class Login:
    """A live login session.

    Attributes:
        account: whose session it is.
        second_factor_ok: the TOTP code was given (or the role needs none).
        totp_secret: the account's TOTP secret (to check the code), if it has one.
        expires_at: when it ends (Unix time).
    """

    account: Account
    second_factor_ok: bool
    totp_secret: str | None
    expires_at: float


@dataclasses.dataclass(frozen=True, slots=True)
class CommuneContact:
    """How visitors reach the town hall about the Wi-Fi (shown on the portal and pages).

    Attributes:
        insee: the commune.
        label: who answers (``Mairie de Rocamadour``).
        phone: a phone number.
        email: an e-mail address.
        address: a postal address.
        hours: opening hours, as free text.
        updated_at: when it was last changed (Unix time).
        updated_by: by which account.
    """

    insee: str
    label: str = ""
    phone: str = ""
    email: str = ""
    address: str = ""
    hours: str = ""
    updated_at: float = 0.0
    updated_by: str = ""

    @property
    def empty(self) -> bool:
        """Nothing to show."""
        return not any((self.label, self.phone, self.email, self.address, self.hours))


def check_contact(fields: dict[str, str]) -> dict[str, str]:
    """Trimmed, checked contact fields (label, phone, email, address, hours).

    Raises:
        AccountError: a field too long, a malformed phone number or e-mail address.
    """
    out = {k: " ".join(str(fields.get(k, "")).split()) for k in _CONTACT_LIMITS}
    for key, limit in _CONTACT_LIMITS.items():
        if len(out[key]) > limit:
            raise AccountError(f"{key} : {limit} caractères au plus / at most {limit} characters")
    if out["phone"] and not _PHONE.match(out["phone"]):
        raise AccountError("numéro de téléphone invalide / bad phone number")
    if out["email"]:
        check_email(out["email"])
    return out


def check_email(address: str) -> str:
    """A trimmed e-mail address (200 characters at most).

    Raises:
        AccountError: not an e-mail address.
    """
    address = address.strip()
    if len(address) > _CONTACT_LIMITS["email"] or not _EMAIL.match(address):
        raise AccountError("adresse électronique invalide / bad e-mail address")
    return address


def check_new_account(username: str, role: Role, communes: Iterable[str]) -> frozenset[str]:
    """Validate a new account's name, role and communes; return the communes.

    Raises:
        AccountError: bad name, a commune role without commune, or communes given to a
            role that sees the whole territory or none.
    """
    if not _USERNAME.match(username):
        raise AccountError(
            "identifiant : 2 à 64 caractères a-z, 0-9, . _ - / "
            f"username: 2 to 64 of a-z, 0-9, . _ - ({username!r})"
        )
    codes = frozenset(c.strip().upper() for c in communes if c.strip())
    bad = sorted(c for c in codes if not _INSEE.match(c))
    if bad:
        raise AccountError(f"code INSEE invalide / bad INSEE code: {', '.join(bad)}")
    if role in _SCOPED and not codes:
        raise AccountError(
            "un compte de commune doit nommer au moins une commune / "
            "a commune account needs at least one commune"
        )
    if role not in _SCOPED and codes:
        raise AccountError(
            "seuls les comptes de commune sont limités à des communes / "
            "only commune accounts are limited to communes"
        )
    return codes


class AccountStore:
    """Accounts, their communes and their login sessions."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def has_accounts(self) -> bool:
        """Whether at least one account exists (active or not)."""
        async with self.db.connect() as conn:
            row = await conn.execute(sa.select(dashboard_accounts.c.username).limit(1))
            return row.first() is not None

    async def create(
        self,
        username: str,
        display_name: str,
        role: Role,
        password_hash: str,
        *,
        communes: Iterable[str] = (),
        totp_secret: str | None = None,
        now: float,
    ) -> Account:
        """Create an account.

        Raises:
            AccountError: invalid name or communes, missing TOTP secret for a role that
                needs one, or the name is taken.
        """
        codes = check_new_account(username, role, communes)
        if role in SECOND_FACTOR_ROLES and not totp_secret:
            raise AccountError("ce rôle demande un secret TOTP / this role needs a TOTP secret")
        try:
            async with self.db.begin() as conn:
                await conn.execute(
                    dashboard_accounts.insert().values(
                        username=username,
                        display_name=display_name or username,
                        role=role.value,
                        password_hash=password_hash,
                        totp_secret=totp_secret,
                        active=True,
                        created_at=now,
                    )
                )
                if codes:
                    await conn.execute(
                        dashboard_account_communes.insert(),
                        [{"username": username, "insee": c} for c in sorted(codes)],
                    )
        except sa.exc.IntegrityError as exc:
            raise AccountError(
                f"l'identifiant {username!r} existe déjà / username already taken"
            ) from exc
        return Account(username, display_name or username, role, codes)

    async def _communes(self, conn: AsyncConnection, username: str) -> frozenset[str]:
        rows = await conn.execute(
            sa.select(dashboard_account_communes.c.insee).where(
                dashboard_account_communes.c.username == username
            )
        )
        return frozenset(r.insee for r in rows)

    async def credentials(self, username: str) -> Credentials | None:
        """The credentials of an active account, or None."""
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(dashboard_accounts).where(
                        dashboard_accounts.c.username == username,
                        dashboard_accounts.c.active.is_(True),
                    )
                )
            ).first()
            if row is None:
                return None
            communes = await self._communes(conn, username)
        account = Account(row.username, row.display_name, Role(row.role), communes)
        return Credentials(account, row.password_hash, row.totp_secret)

    async def accounts(self) -> list[tuple[Account, bool]]:
        """Every account with its active flag, by user name."""
        async with self.db.connect() as conn:
            rows = (await conn.execute(sa.select(dashboard_accounts).order_by("username"))).all()
            links = (await conn.execute(sa.select(dashboard_account_communes))).all()
        by_user: dict[str, set[str]] = {}
        for link in links:
            by_user.setdefault(link.username, set()).add(link.insee)
        return [
            (
                Account(
                    r.username,
                    r.display_name,
                    Role(r.role),
                    frozenset(by_user.get(r.username, ())),
                ),
                bool(r.active),
            )
            for r in rows
        ]

    async def set_password(self, username: str, password_hash: str) -> None:
        """Replace an account's password hash and end its login sessions.

        Raises:
            AccountError: no such account.
        """
        async with self.db.begin() as conn:
            result = await conn.execute(
                dashboard_accounts.update()
                .where(dashboard_accounts.c.username == username)
                .values(password_hash=password_hash)
            )
            if result.rowcount != 1:
                raise AccountError(f"compte inconnu / unknown account: {username!r}")
            await conn.execute(
                dashboard_logins.delete().where(dashboard_logins.c.username == username)
            )

    async def set_active(self, username: str, active: bool) -> None:
        """Enable or disable an account; disabling ends its login sessions.

        Raises:
            AccountError: no such account.
        """
        async with self.db.begin() as conn:
            result = await conn.execute(
                dashboard_accounts.update()
                .where(dashboard_accounts.c.username == username)
                .values(active=active)
            )
            if result.rowcount != 1:
                raise AccountError(f"compte inconnu / unknown account: {username!r}")
            if not active:
                await conn.execute(
                    dashboard_logins.delete().where(dashboard_logins.c.username == username)
                )

    # -- login sessions -------------------------------------------------------------------

    async def start_login(
        self, token_hash: str, username: str, second_factor_ok: bool, now: float, ttl_s: float
    ) -> None:
        """Record a new login session (and drop the expired ones)."""
        async with self.db.begin() as conn:
            expired = dashboard_logins.c.expires_at <= now
            await conn.execute(dashboard_logins.delete().where(expired))
            await conn.execute(
                dashboard_logins.insert().values(
                    token_hash=token_hash,
                    username=username,
                    second_factor_ok=second_factor_ok,
                    created_at=now,
                    expires_at=now + ttl_s,
                )
            )

    async def login(self, token_hash: str, now: float) -> Login | None:
        """The live login session of a token hash, or None (unknown, expired, disabled)."""
        j = dashboard_logins.join(
            dashboard_accounts, dashboard_logins.c.username == dashboard_accounts.c.username
        )
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(
                        dashboard_accounts,
                        dashboard_logins.c.second_factor_ok,
                        dashboard_logins.c.expires_at,
                    )
                    .select_from(j)
                    .where(
                        dashboard_logins.c.token_hash == token_hash,
                        dashboard_logins.c.expires_at > now,
                        dashboard_accounts.c.active.is_(True),
                    )
                )
            ).first()
            if row is None:
                return None
            communes = await self._communes(conn, row.username)
        account = Account(row.username, row.display_name, Role(row.role), communes)
        return Login(account, bool(row.second_factor_ok), row.totp_secret, float(row.expires_at))

    async def confirm_second_factor(self, token_hash: str) -> None:
        """Mark a login session's TOTP code as given."""
        async with self.db.begin() as conn:
            await conn.execute(
                dashboard_logins.update()
                .where(dashboard_logins.c.token_hash == token_hash)
                .values(second_factor_ok=True)
            )

    async def end_login(self, token_hash: str) -> None:
        """End a login session (logout)."""
        async with self.db.begin() as conn:
            await conn.execute(
                dashboard_logins.delete().where(dashboard_logins.c.token_hash == token_hash)
            )

    # -- communes' contact details ---------------------------------------------------------

    async def contacts(self, insees: Iterable[str]) -> dict[str, CommuneContact]:
        """The stored contact details of those communes (absent: none stored)."""
        t = dashboard_commune_contacts
        async with self.db.connect() as conn:
            rows = (await conn.execute(sa.select(t).where(t.c.insee.in_(sorted(insees))))).all()
        return {
            r.insee: CommuneContact(
                r.insee,
                r.label,
                r.phone,
                r.email,
                r.address,
                r.hours,
                float(r.updated_at),
                r.updated_by,
            )
            for r in rows
        }

    async def set_contact(
        self, insee: str, fields: dict[str, str], by: str, now: float
    ) -> CommuneContact:
        """Replace a commune's contact details (checked by :func:`check_contact`).

        Raises:
            AccountError: a bad field.
        """
        values = check_contact(fields)
        t = dashboard_commune_contacts
        async with self.db.begin() as conn:
            await conn.execute(t.delete().where(t.c.insee == insee))
            await conn.execute(
                t.insert().values(insee=insee, updated_at=now, updated_by=by, **values)
            )
        return CommuneContact(insee, updated_at=now, updated_by=by, **values)
