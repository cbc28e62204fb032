"""Monthly reports by e-mail: commune accounts subscribe through the real ``/reports``
page, the scheduler makes a month and the mails reach a real SMTP server (aiosmtpd on
loopback), once per subscriber, never again after a second check, a restart or a
report made again; nothing for an unsubscribed account or with e-mail off."""

from __future__ import annotations

import asyncio
import logging
from email.message import EmailMessage
from typing import Any

import pytest
import sqlalchemy as sa

from controller.service import Controller
from controller.storage import Database
from controller.storage.schema import dashboard_report_mails
from dashboards._auth import Role, hash_password
from dashboards._report_mail import masked_address
from dashboards.accounts import AccountStore
from dashboards.app import REPORTS, create_app
from dashboards.reports import ReportStore, Subscriber
from tests.captive_portal.test_email import Inbox, smtp_server
from tests.dashboards.test_app import (
    INSEE,
    NOW,
    PASSWORD,
    ClientFactory,
    _csrf_of,
    _logged_in,
    accounts,
    controller,
    populated,
)

__all__ = ["accounts", "controller", "populated", "smtp_server"]

# NOW is in May 2026: the month just ended is April.
MONTH = "2026-04"
ROC, CAH, PAD = INSEE["Rocamadour"], INSEE["Cahors"], INSEE["Padirac"]
ROC_MAIL, CAH_MAIL, EPCI_MAIL = "roc@mairie.example", "cah@mairie.example", "epci@causses.example"


def with_mail(controller: Controller, port: int, *, on: bool = True) -> Controller:
    """The same controller with ``[portal.email]`` on the test relay and report e-mails
    on or off."""
    s = controller.settings
    email = s.portal.email.model_copy(
        update={"smtp_host": "127.0.0.1", "smtp_port": port, "sender": "wifi@lot.example"}
    )
    settings = s.model_copy(
        update={
            "portal": s.portal.model_copy(update={"email": email}),
            "dashboard": s.dashboard.model_copy(update={"report_email": on}),
        }
    )
    return Controller(settings, controller.db, controller.registry)


async def subscribe(client: Any, email: str, communes: list[str]) -> Any:
    """Post the ``/reports`` page's e-mail form, as the browser does."""
    csrf = await _csrf_of(client, "/reports")
    return await client.post(
        "/reports/subscriptions", data={"csrf": csrf, "email": email, "communes": communes}
    )


def our_logs(caplog: pytest.LogCaptureFixture) -> str:
    """What borne logged (the test relay's own log, ``mail.log``, is not ours)."""
    return "\n".join(r.getMessage() for r in caplog.records if r.name != "mail.log")


def received(inbox: Inbox) -> list[tuple[str, str, str]]:
    """(recipient, subject, HTML part) of each message the relay took."""
    out = []
    for rcpt, message in inbox.messages:
        html = message.get_body(("html",))
        text = message.get_body(("plain",))
        assert isinstance(html, EmailMessage) and isinstance(text, EmailMessage)
        assert "Rapports mensuels" in text.get_content()
        out.append((rcpt[0], str(message["Subject"]), str(html.get_content())))
    return sorted(out)


@pytest.fixture
async def cahors_viewer(accounts: Controller) -> Controller:
    """A Cahors viewer too (next to the Rocamadour viewer and the Rocamadour + Cahors
    manager of ``accounts``)."""
    pw = await asyncio.to_thread(hash_password, PASSWORD)
    await AccountStore(accounts.db).create(
        "cah", "Mairie de Cahors", Role.COMMUNE_VIEWER, pw, communes=[CAH], now=NOW
    )
    return accounts


async def test_each_subscriber_gets_its_communes_report_once(
    cahors_viewer: Controller,
    aiohttp_client: ClientFactory,
    smtp_server: tuple[Inbox, int],
) -> None:
    """Two viewers subscribe on the page; the manager subscribes then unsubscribes. One
    check sends exactly Rocamadour's report to its viewer and Cahors's to its viewer;
    a second check, a restart and a report made again send nothing more."""
    inbox, port = smtp_server
    mailing = with_mail(cahors_viewer, port)
    roc = await _logged_in(mailing, aiohttp_client, "roc")
    page = await (await roc.get("/reports")).text()
    assert 'id="report-mail"' in page and 'id="mail-off"' not in page
    resp = await subscribe(roc, ROC_MAIL, [ROC])
    assert resp.status == 200
    page = await resp.text()
    assert f"Abonnement enregistré : rapports de Rocamadour, à {ROC_MAIL}" in page
    assert f'value="{ROC}" checked' in page and f'value="{ROC_MAIL}"' in page
    cah = await _logged_in(mailing, aiohttp_client, "cah")
    assert (await subscribe(cah, CAH_MAIL, [CAH])).status == 200
    epci = await _logged_in(mailing, aiohttp_client, "epci")
    assert (await subscribe(epci, EPCI_MAIL, [ROC, CAH])).status == 200
    resp = await subscribe(epci, "", [])
    assert "ne recevrez plus" in await resp.text()
    assert await ReportStore(mailing.db).subscriptions("epci") == {}

    scheduler = create_app(mailing, clock=lambda: NOW)[REPORTS]
    assert sorted(await scheduler.run_once()) == sorted([ROC, CAH, PAD])
    got = received(inbox)
    assert [(to, subject.split(" — ")[1]) for to, subject, _ in got] == [
        (CAH_MAIL, "Cahors"),
        (ROC_MAIL, "Rocamadour"),
    ]
    for _, subject, html in got:
        assert "04/2026" in subject
        assert f"Rapport mensuel du Wi-Fi public — {subject.split(' — ')[1]}" in html
    assert "Rocamadour" not in got[0][2].split("<h1")[1].split("</h1>")[0]
    assert scheduler.mailer is not None and scheduler.mailer.sent == 2

    # Again: the next check, a restarted controller, a report made again.
    assert await scheduler.run_once() == []
    restarted = create_app(mailing, clock=lambda: NOW + 3600)[REPORTS]
    assert await restarted.make(MONTH, [ROC, CAH], force=True) == [ROC, CAH]
    assert await restarted.run_once() == []
    assert len(inbox.messages) == 2
    async with mailing.db.connect() as conn:
        rows = (await conn.execute(sa.select(dashboard_report_mails))).all()
    assert sorted((r.username, r.insee, r.month) for r in rows) == [
        ("cah", CAH, MONTH),
        ("roc", ROC, MONTH),
    ]
    assert all(r.sent_at >= NOW for r in rows)


async def test_a_refused_mail_is_retried_at_the_next_check_and_logs_no_address(
    accounts: Controller,
    aiohttp_client: ClientFactory,
    smtp_server: tuple[Inbox, int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The relay refuses the message: counted, logged by account (not by address), not
    recorded; the next check sends it, once."""
    inbox, port = smtp_server
    mailing = with_mail(accounts, port)
    roc = await _logged_in(mailing, aiohttp_client, "roc")
    assert (await subscribe(roc, ROC_MAIL, [ROC])).status == 200
    scheduler = create_app(mailing, clock=lambda: NOW)[REPORTS]
    mailer = scheduler.mailer
    assert mailer is not None
    inbox.refuse = True
    with caplog.at_level(logging.INFO):
        await scheduler.run_once()
    assert mailer.failures == 1 and mailer.sent == 0 and inbox.messages == []
    assert "not e-mailed to account roc" in our_logs(caplog)
    assert ROC_MAIL not in our_logs(caplog)
    inbox.refuse = False
    with caplog.at_level(logging.INFO):
        await scheduler.run_once()
        await scheduler.run_once()
    assert [rcpt for rcpt, _ in inbox.messages] == [[ROC_MAIL]]
    assert mailer.sent == 1 and "e-mailed to account roc" in our_logs(caplog)
    assert ROC_MAIL not in our_logs(caplog)


async def test_with_email_off_subscriptions_are_kept_and_nothing_is_sent(
    accounts: Controller,
    aiohttp_client: ClientFactory,
    smtp_server: tuple[Inbox, int],
) -> None:
    """``report_email`` off: the page says so, the subscription is saved, no mail."""
    inbox, port = smtp_server
    quiet = with_mail(accounts, port, on=False)
    roc = await _logged_in(quiet, aiohttp_client, "roc")
    resp = await subscribe(roc, ROC_MAIL, [ROC])
    assert resp.status == 200 and 'id="mail-off"' in await resp.text()
    assert await ReportStore(quiet.db).subscriptions("roc") == {ROC: ROC_MAIL}
    assert await create_app(quiet, clock=lambda: NOW)[REPORTS].run_once()
    assert inbox.messages == []


async def test_only_commune_accounts_subscribe_and_only_to_their_communes(
    accounts: Controller, aiohttp_client: ClientFactory, smtp_server: tuple[Inbox, int]
) -> None:
    """Another commune or a bad address is refused; the technician has no form and its
    post is 403; a disabled account gets no mail."""
    inbox, port = smtp_server
    mailing = with_mail(accounts, port)
    roc = await _logged_in(mailing, aiohttp_client, "roc")
    assert (await subscribe(roc, ROC_MAIL, [CAH])).status == 403
    resp = await subscribe(roc, "pas-une-adresse", [ROC])
    assert resp.status == 400 and "adresse électronique invalide" in await resp.text()
    assert await ReportStore(mailing.db).subscriptions("roc") == {}
    tech = await _logged_in(mailing, aiohttp_client, "tech")
    assert 'id="report-mail"' not in await (await tech.get("/reports")).text()
    assert (await subscribe(tech, "tech@example.org", [ROC])).status == 403
    epci = await _logged_in(mailing, aiohttp_client, "epci")
    assert (await subscribe(epci, EPCI_MAIL, [ROC])).status == 200
    await AccountStore(mailing.db).set_active("epci", False)
    await create_app(mailing, clock=lambda: NOW)[REPORTS].run_once()
    assert inbox.messages == []


async def test_subscriptions_and_claims_in_the_store(db: Database) -> None:
    """On SQLite and PostgreSQL: a subscriber is pending only for a stored report of a
    commune it still sees; a mail is claimed once; a released claim is pending again."""
    pw = "$argon2id$not-checked-here"
    await AccountStore(db).create("roc", "", Role.COMMUNE_VIEWER, pw, communes=[ROC], now=NOW)
    store = ReportStore(db)
    await store.subscribe("roc", ROC_MAIL, [ROC, CAH], NOW)
    assert await store.subscriptions("roc") == {ROC: ROC_MAIL, CAH: ROC_MAIL}
    assert await store.pending_mails(MONTH) == []
    await store.save(ROC, MONTH, "<p>avril</p>", NOW)
    await store.save(CAH, MONTH, "<p>avril</p>", NOW)
    sub = Subscriber("roc", ROC, ROC_MAIL)
    assert await store.pending_mails(MONTH) == [sub]  # Cahors: not one of its communes
    assert await store.claim_mail(sub, MONTH, NOW)
    assert not await store.claim_mail(sub, MONTH, NOW)
    assert await store.pending_mails(MONTH) == []
    await store.release_mail(sub, MONTH)
    assert await store.pending_mails(MONTH) == [sub]
    await store.subscribe("roc", "", [], NOW)
    assert await store.pending_mails(MONTH) == []
    assert masked_address(ROC_MAIL) == "r…@mairie.example"
