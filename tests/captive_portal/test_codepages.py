"""The e-mail and SMS code login through the portal's HTTP server.

E-mails go to a real SMTP server (aiosmtpd on loopback, ``tests/captive_portal/test_email``);
SMS go to a local fake provider on loopback (no real SMS gateway can run here). The
controller side is the FakeBackend of test_app (the identity store is tested against a
real database in test_identities and tests/controller/test_portal_backend.py).
"""

from __future__ import annotations

import html
import re
from typing import Any

from pydantic import SecretStr

from captive_portal.app import COUNTERS
from captive_portal.models import CommunePolicy
from controller.config import CommunePortalSettings, EmailCodeSettings, SmsCodeSettings
from tests.captive_portal.portal_fixtures import portal_client
from tests.captive_portal.test_app import (
    MAC,
    TERMS_VERSION,
    FakeBackend,
    FakeClock,
    state_of,
    text_of,
)
from tests.captive_portal.test_email import Inbox, smtp_server
from tests.captive_portal.test_sms import start_provider

_smtp_server = smtp_server
CAHORS = "46042"
FAS_PATH = "/fas/"


def policy() -> CommunePolicy:
    return CommunePolicy(insee=CAHORS, commune="Cahors", terms_version=TERMS_VERSION)


def challenge_of(body: str) -> str:
    match = re.search(r'name="challenge" value="([^"]*)"', body)
    assert match is not None, "no challenge in the page"
    return html.unescape(match.group(1))


def code_in(text: str) -> str:
    match = re.search(r"\b(\d{6})\b", text)
    assert match is not None, text
    return match.group(1)


async def make_portal(
    aiohttp_client: Any,
    *,
    methods: tuple[str, ...],
    clock: FakeClock | None = None,
    **portal: Any,
) -> tuple[Any, FakeBackend]:
    backend = FakeBackend()
    backend.commune_policy = policy()
    if "sms" in methods:
        # A provider must be named when SMS is on (a closed port: nothing is sent here).
        portal.setdefault("sms", SmsCodeSettings(url="http://127.0.0.1:9/unused"))
    client = await portal_client(
        aiohttp_client,
        backend,
        clock,
        communes={CAHORS: CommunePortalSettings(methods=methods)},
        **portal,
    )
    return client, backend


async def submit_code(client: Any, state: str, challenge: str, code: str, **fields: str) -> Any:
    """Post the code form, terms accepted (``fields``: channel, lang...)."""
    data = {"state": state, "challenge": challenge, "code": code, "consent": "yes", **fields}
    return await client.post("/fas/code", data=data)


async def login_state(client: Any, make_fas: Any, lang: str = "en") -> tuple[str, str]:
    page = await client.get(FAS_PATH, params={"fas": make_fas(), "lang": lang})
    body = await page.text()
    return state_of(body), body


async def test_methods_are_shown_only_where_the_commune_turned_them_on(
    aiohttp_client: Any, make_fas: Any
) -> None:
    """The default commune shows click-through and vouchers only, and refuses a forged
    e-mail form; a commune with e-mail and SMS shows those forms and the 5-year notice."""
    client, backend = await make_portal(aiohttp_client, methods=("email", "sms"))
    state, body = await login_state(client, make_fas)
    text = text_of(body)
    assert "Receive a code by e-mail" in text and "Receive a code by SMS" in text
    assert "French law requires us to keep it for 5 years" in text
    assert 'action="/fas/accept"' not in body and 'action="/fas/voucher"' not in body
    refused = await client.post(
        "/fas/accept", data={"state": state, "consent": "yes", "lang": "en"}
    )
    assert refused.status == 404 and backend.calls == []
    privacy = text_of(
        await (await client.get("/privacy", params={"state": state, "lang": "en"})).text()
    )
    assert "keep your e-mail address or phone number for 5 years" in privacy

    plain = FakeBackend()
    plain.commune_policy = CommunePolicy(
        insee="46102", commune="Figeac", terms_version=TERMS_VERSION
    )
    other = await portal_client(aiohttp_client, plain)
    state, body = await login_state(other, make_fas)
    assert "Receive a code" not in text_of(body) and 'action="/fas/accept"' in body
    forged = await other.post(
        "/fas/email",
        data={"state": state, "consent": "yes", "identity": "m@example.org", "lang": "en"},
    )
    assert forged.status == 404
    assert other.server.app[COUNTERS].method_off == 1
    privacy = text_of(
        await (await other.get("/privacy", params={"state": state, "lang": "en"})).text()
    )
    assert "Identity data" not in privacy


async def test_email_code_login_end_to_end_with_a_real_smtp_server(
    aiohttp_client: Any, make_fas: Any, _smtp_server: tuple[Inbox, int]
) -> None:
    """The code arrives by SMTP in the visitor's language; a wrong code gets the generic
    answer; the right one logs in with the address as identity; it cannot be reused."""
    inbox, port = _smtp_server
    mail = EmailCodeSettings(smtp_port=port, sender="wifi@lot.example")
    client, backend = await make_portal(aiohttp_client, methods=("email",), email=mail)
    state, _ = await login_state(client, make_fas, "fr")
    no_consent = await client.post(
        "/fas/email", data={"state": state, "identity": "marie@example.org", "lang": "fr"}
    )
    assert no_consent.status == 400 and inbox.messages == []
    bad = await client.post(
        "/fas/email",
        data={"state": state, "consent": "yes", "identity": "marie@", "lang": "fr"},
    )
    assert bad.status == 400
    assert "Veuillez saisir une adresse e-mail valide." in text_of(await bad.text())
    sent = await client.post(
        "/fas/email",
        data={"state": state, "consent": "yes", "identity": " Marie@Example.org", "lang": "fr"},
    )
    body = await sent.text()
    assert sent.status == 200, text_of(body)
    assert "M•••@example.org" in text_of(body)
    assert len(body.encode()) < 30_000 and "<script" not in body
    ((rcpt, message),) = inbox.messages
    assert rcpt == ["Marie@example.org"]
    content = message.get_content()
    assert "Votre code pour vous connecter" in content
    code = code_in(content)
    assert code in message["Subject"]
    challenge = challenge_of(body)
    wrong_code = "000000" if code != "000000" else "111111"
    wrong = await submit_code(client, state, challenge, wrong_code, channel="email")
    assert wrong.status == 400
    assert "Ce code n'est pas valide" in text_of(await wrong.text())
    right = await submit_code(client, state, challenge, code, channel="email")
    assert right.status == 200, text_of(await right.text())
    (call,) = backend.calls
    assert (call.method, call.identity, call.client_mac) == ("email", "Marie@example.org", MAC)
    again = await submit_code(client, state, challenge, code, channel="email")
    assert again.status == 400 and len(backend.calls) == 1
    counters = client.server.app[COUNTERS]
    assert (counters.codes_sent, counters.bad_code, counters.bad_address) == (1, 2, 1)


async def test_email_cooldown_daily_cap_and_relay_failure_are_answered_and_counted(
    aiohttp_client: Any, make_fas: Any, _smtp_server: tuple[Inbox, int]
) -> None:
    inbox, port = _smtp_server
    clock = FakeClock()
    mail = EmailCodeSettings(smtp_port=port, cooldown_s=60, per_address_per_day=2)
    client, _ = await make_portal(aiohttp_client, methods=("email",), clock=clock, email=mail)
    state, _ = await login_state(client, make_fas)
    form = {"state": state, "consent": "yes", "identity": "m@example.org", "lang": "en"}
    assert (await client.post("/fas/email", data=form)).status == 200
    soon = await client.post("/fas/email", data=form)
    assert soon.status == 400 and "Please wait a minute" in text_of(await soon.text())
    clock.now += 61
    assert (await client.post("/fas/email", data=form)).status == 200
    clock.now += 61
    capped = await client.post("/fas/email", data=form)
    assert "Too many codes were asked today" in text_of(await capped.text())
    assert len(inbox.messages) == 2
    inbox.refuse = True
    other = dict(form, identity="n@example.org")
    failed = await client.post("/fas/email", data=other)
    assert "The code could not be sent" in text_of(await failed.text())
    counters = client.server.app[COUNTERS]
    assert (counters.code_send_cooldown, counters.code_send_capped) == (1, 1)
    assert (counters.code_send_failed, counters.codes_sent) == (1, 2)


async def test_sms_code_login_with_prefix_and_per_source_limits(
    aiohttp_client: Any, aiohttp_server: Any, make_fas: Any
) -> None:
    """SMS through the local fake provider: a number outside the allowed countries is
    refused before anything is sent; the per-source daily cap stops a flood of numbers."""
    provider, url = await start_provider(aiohttp_server)
    clock = FakeClock()
    sms = SmsCodeSettings(url=url, token=SecretStr("t"), per_ip_per_day=2, cooldown_s=0)
    client, backend = await make_portal(aiohttp_client, methods=("sms",), clock=clock, sms=sms)
    state, _ = await login_state(client, make_fas)
    form = {"state": state, "consent": "yes", "lang": "en"}
    us = await client.post("/fas/sms", data=dict(form, identity="+1 202 555 0100"))
    assert "Codes cannot be sent by SMS to this country." in text_of(await us.text())
    junk = await client.post("/fas/sms", data=dict(form, identity="call me"))
    assert "Please enter a valid mobile number" in text_of(await junk.text())
    sent = await client.post("/fas/sms", data=dict(form, identity="06 12 34 56 78"))
    body = await sent.text()
    assert sent.status == 200 and "+33 ••••••78" in text_of(body)
    ((auth, payload),) = provider.received
    assert auth == "Bearer t" and payload["to"] == "+33612345678"
    right = await submit_code(client, state, challenge_of(body), code_in(payload["text"]))
    assert right.status == 200
    assert [(c.method, c.identity) for c in backend.calls] == [("sms", "+33612345678")]
    assert (await client.post("/fas/sms", data=dict(form, identity="0700000001"))).status == 200
    flood = await client.post("/fas/sms", data=dict(form, identity="0700000002"))
    assert "Too many codes were asked today" in text_of(await flood.text())
    assert len(provider.received) == 2
    counters = client.server.app[COUNTERS]
    assert (counters.prefix_refused, counters.bad_address, counters.code_send_capped) == (1, 1, 1)


async def test_code_guessing_is_stopped_by_attempts_and_the_wrong_code_pause(
    aiohttp_client: Any, aiohttp_server: Any, make_fas: Any
) -> None:
    """Three wrong codes forget the challenge; across challenges, five wrong codes in ten
    minutes pause any code from this device, even a right one."""
    provider, url = await start_provider(aiohttp_server)
    sms = SmsCodeSettings(url=url, cooldown_s=0)
    client, backend = await make_portal(aiohttp_client, methods=("sms",), sms=sms)
    state, _ = await login_state(client, make_fas)
    form = {"state": state, "consent": "yes", "lang": "en", "identity": "0612345678"}
    first = challenge_of(await (await client.post("/fas/sms", data=form)).text())
    right_first = code_in(provider.received[-1][1]["text"])
    wrong = "000000" if right_first != "000000" else "111111"
    for _ in range(3):
        page = await submit_code(client, state, first, wrong, channel="sms", lang="en")
        assert page.status == 400
    gone = await submit_code(client, state, first, right_first, channel="sms", lang="en")
    assert gone.status == 400 and backend.calls == []
    second = challenge_of(await (await client.post("/fas/sms", data=form)).text())
    right = code_in(provider.received[-1][1]["text"])
    wrong = "000000" if right != "000000" else "111111"
    await submit_code(client, state, second, wrong, channel="sms", lang="en")
    paused = await submit_code(client, state, second, right, channel="sms", lang="en")
    assert "Too many wrong codes" in text_of(await paused.text())
    assert backend.calls == []


async def test_terms_published_while_the_email_form_was_open_are_asked_again_once(
    aiohttp_client: Any, make_fas: Any, _smtp_server: tuple[Inbox, int]
) -> None:
    """New texts published while the e-mail form was open: the form comes back under a
    new state naming them, and the next submission sends the code (it is not refused
    again and again with the old state)."""
    inbox, port = _smtp_server
    mail = EmailCodeSettings(smtp_port=port, sender="wifi@lot.example")
    client, backend = await make_portal(aiohttp_client, methods=("email",), email=mail)
    state, _ = await login_state(client, make_fas)
    backend.commune_policy = CommunePolicy(
        insee=CAHORS, commune="Cahors", terms_version=TERMS_VERSION + "-new"
    )
    data = {"consent": "yes", "identity": "marie@example.org", "lang": "en"}
    changed = await client.post("/fas/email", data={"state": state, **data})
    assert changed.status == 400 and inbox.messages == []
    page = await changed.text()
    assert "The terms of use have changed." in text_of(page)
    assert state_of(page) != state
    sent = await client.post("/fas/email", data={"state": state_of(page), **data})
    assert sent.status == 200, text_of(await sent.text())
    assert len(inbox.messages) == 1
    assert client.server.app[COUNTERS].terms_changed == 1
