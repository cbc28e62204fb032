"""UAM gateways (CoovaChilli-style): the encoding against known vectors, then the whole
flow — a real controller (mosquitto, SQLite), the portal's HTTP app, borne's RADIUS
server, and radclient (freeradius-utils) sending the Access-Request the gateway would
send: accepted once, rejected the second time.

No CoovaChilli runs here (it is not packaged in Debian 12): radclient plays the gateway's
RADIUS side, and the test decodes the /logon password as CoovaChilli does.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from captive_portal._uam import (
    UamError,
    checksum_ok,
    decode_password,
    encode_password,
    parse_uam,
    uam_key,
)
from captive_portal._vouchers import VoucherPolicy
from captive_portal.app import COUNTERS, create_app
from controller.config import Settings, load_settings
from controller.main import open_controller
from controller.portal_backend import ControllerPortalBackend
from controller.registry import Commune
from controller.service import Controller
from radius import NasRegistry, RadiusServer, build_server
from tests.controller.test_bridge import MASTER
from tests.radius.conftest import radclient

CHALLENGE = "0123456789abcdef0123456789abcdef"
NAS = "nas-46201-07"
RADIUS_SECRET = "uam-radius-secret-0123456789"
UAM_SECRET = "uam-secret-of-the-gateway"
MAC = "02-00-00-00-00-0A"
PUBLIC = "http://127.0.0.1:8080/fas/"


# -- the encoding, against vectors computed with Perl's Digest::MD5 following -----------
# -- CoovaChilli's doc/hotspotlogin.cgi ($userpassword=1 branch) --------------------------


@pytest.mark.parametrize(
    ("password", "secret", "expected"),
    [
        ("s3cr3t-password!", "uamsecret", "e3e21088b4a2369f1dd84ea4476e4dda"),
        (
            "a-longer-password-of-40-characters-xyz12",
            "uamsecret",
            "f1fc1f95e9b17e9d51db5ca05b6b4689f4fc1c9caae22bc21fc35ca1497f5d9ee2a25e82feac2add",
        ),
        ("nosecret", None, "6f4c3602ead9a89b"),
    ],
    ids=["one-block", "key-repeated", "no-uamsecret"],
)
def test_pap_password_encoding_known_vectors(
    password: str, secret: str | None, expected: str
) -> None:
    """password XOR MD5(challenge + uamsecret), the key repeated, in hex; the bare
    challenge without a uamsecret; the gateway's decoding gives the password back."""
    assert encode_password(password, CHALLENGE, secret) == expected
    assert decode_password(expected, CHALLENGE, secret) == password.encode()


def test_key_and_bounds() -> None:
    """The key is 16 octets; empty and over-long (RADIUS: 128 octets) passwords refused."""
    assert uam_key(CHALLENGE, "x") != uam_key(CHALLENGE, "y")
    assert uam_key(CHALLENGE, None) == bytes.fromhex(CHALLENGE)
    for bad in ("", "x" * 129):
        with pytest.raises(ValueError, match="128"):
            encode_password(bad, CHALLENGE, "s")


# md computed with coreutils: printf '%s' '<url><uamsecret>' | md5sum
_URL_QUERY = (
    "res=notyet&uamip=10.1.0.1&uamport=3990&challenge=0123456789abcdef0123456789abcdef"
    "&mac=02-00-00-00-00-0A&ip=10.1.0.23&called=00-11-22-33-44-55&nasid=nas-46201-01"
    "&userurl=http%3A%2F%2Fexample.org%2F"
)


def test_checksum_known_vector() -> None:
    """md = upper-case MD5(uamserver + "?" + query before &md= + uamsecret)."""
    raw = _URL_QUERY + "&md=8CA7C8AD6E2DE3643E5079ABDAD59BF2"
    base = "http://portal.example.org/uam"
    assert checksum_ok(raw, [base], "uamsecret")
    assert checksum_ok(raw.replace("&md=8CA7", "&md=8ca7"), [base], "uamsecret")
    assert not checksum_ok(raw, [base], "another")
    assert not checksum_ok(raw.replace("10.1.0.23", "10.1.0.24"), [base], "uamsecret")
    assert not checksum_ok(_URL_QUERY, [base], "uamsecret")
    assert checksum_ok(raw, ["http://elsewhere/uam", base], "uamsecret")


def _query(**over: str) -> dict[str, str]:
    q = {k: v[0] for k, v in parse_qs(_URL_QUERY).items()}
    q.update(over)
    return {k: v for k, v in q.items() if v != "-"}


def test_parse_uam() -> None:
    """Fields validated and normalised; result pages need no challenge."""
    q = parse_uam(_query(challenge=CHALLENGE.upper()))
    assert (q.res, q.uamip, q.uamport, q.mac, q.ip, q.nasid) == (
        "notyet",
        "10.1.0.1",
        3990,
        "02:00:00:00:00:0a",
        "10.1.0.23",
        "nas-46201-01",
    )
    assert q.challenge == CHALLENGE and q.userurl == "http://example.org/"
    assert q.login_request().uam_challenge == CHALLENGE
    ok = parse_uam(_query(res="success", challenge="-", ip="-", timeleft="3600"))
    assert ok.challenge is None and ok.timeleft == 3600
    assert parse_uam(_query(userurl="javascript:alert(1)")).userurl is None


@pytest.mark.parametrize(
    "over",
    [
        {"res": "pwned"},
        {"uamip": "portal"},
        {"uamport": "99999"},
        {"challenge": "abc"},
        {"mac": "not-a-mac"},
        {"ip": "-"},
        {"nasid": "-"},
        {"nasid": "../etc"},
        {"md": "zz"},
    ],
    ids=lambda o: next(iter(o)),
)
def test_parse_uam_refuses(over: dict[str, str]) -> None:
    """Every malformed field is refused with a message that quotes no personal data."""
    with pytest.raises(UamError) as caught:
        parse_uam(_query(**over))
    assert "02-00" not in str(caught.value) and "10.1.0.23" not in str(caught.value)


_FIELDS = st.sampled_from(
    ["res", "uamip", "uamport", "challenge", "mac", "ip", "nasid", "userurl", "md", "timeleft"]
)


@given(st.dictionaries(_FIELDS, st.text(max_size=80)), st.text(max_size=300))
def test_bad_input_only_ever_raises_uam_error(query: dict[str, str], raw: str) -> None:
    """Any query: a validated redirect or UamError, nothing else; the checksum check never
    raises."""
    try:
        parsed = parse_uam(query)
    except UamError:
        pass
    else:
        assert parsed.res == query["res"].lower()
    assert checksum_ok(raw, ["http://p/uam"], "s") in (True, False)


@given(
    st.text(min_size=1, max_size=32).filter(lambda p: len(p.encode()) <= 128),
    st.binary(min_size=16, max_size=16),
    st.one_of(st.none(), st.text(min_size=1, max_size=40)),
)
def test_encoding_round_trip(password: str, challenge: bytes, secret: str | None) -> None:
    """What the gateway decodes is the password, for any password, challenge, secret."""
    encoded = encode_password(password, challenge.hex(), secret)
    assert len(encoded) == 2 * len(password.encode())
    assert decode_password(encoded, challenge.hex(), secret) == password.encode()


# -- the whole flow ----------------------------------------------------------------------


def _settings(mosquitto: Any, tmp_path: Path, **portal: Any) -> Settings:
    return load_settings(
        None,
        command_master_key=MASTER,
        database={"url": f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"},
        mqtt={
            "host": mosquitto.host,
            "port": mosquitto.port,
            "client_id": f"ctl-uam-{secrets.token_hex(4)}",
        },
        sessions={"session_minutes": 90, "up_kbps": 1000, "down_kbps": 8000},
        radius={"idle_timeout_s": 300, "max_total_mb": 2000},
        portal={
            "public_url": PUBLIC,
            "continuity_hours": 24,
            # Rocamadour's own session length and upload rate (the rest from [sessions]).
            "communes": {"46201": {"session_minutes": 75, "up_kbps": 1500}},
            **portal,
        },
    )


class Stack:
    """A controller, its portal app (test client) and its RADIUS server."""

    def __init__(self, ctl: Controller, client: Any, radius: RadiusServer) -> None:
        self.ctl, self.client, self.radius = ctl, client, radius
        self.auth_port = radius.addresses["auth"][1]


@pytest.fixture
async def stack(mosquitto: Any, tmp_path: Path, aiohttp_client: Any) -> AsyncIterator[Stack]:
    settings = _settings(mosquitto, tmp_path)
    async with open_controller(settings, backoff_cap_s=1.0) as (ctl, _tg):
        await ctl.registry.add_communes([Commune("46201", "Rocamadour", 1.6, 44.8)])
        await ctl.registry.add_access_point(NAS, "46201", "Rocamadour — CoovaChilli")
        await NasRegistry(ctl.db).add(NAS, "127.0.0.1", RADIUS_SECRET, uam_secret=UAM_SECRET)
        server = await build_server(settings, ctl.db)
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(server.run("127.0.0.1", 0, 0), name="radius-under-test")
            await asyncio.wait_for(server.ready.wait(), 10)
            client = await aiohttp_client(create_app(settings, ControllerPortalBackend(ctl)))
            yield Stack(ctl, client, server)
            task.cancel()


def redirect_url(challenge: str, *, mac: str = MAC, secret: str = UAM_SECRET) -> URL:
    """The path and query CoovaChilli's redir_buildurl() would send (md included)."""
    query = (
        f"res=notyet&uamip=10.1.0.1&uamport=3990&challenge={challenge}"
        f"&mac={quote(mac)}&ip=10.1.0.23&called=00-11-22-33-44-55&nasid={NAS}"
        f"&userurl={quote('http://example.org/visit?day=1', safe='')}"
    )
    md = hashlib.md5(f"http://127.0.0.1:8080/uam?{query}{secret}".encode()).hexdigest()
    # Sent as built (encoded=True): the checksum covers the exact percent-encoding.
    return URL(f"/uam?{query}&md={md.upper()}", encoded=True)


def state_of(body: str) -> str:
    match = re.search(r'name="state" value="([^"]+)"', body)
    assert match is not None, body[:500]
    return html.unescape(match.group(1))


def access_request(user: str, password: str, mac: str = MAC) -> str:
    """What CoovaChilli sends for a UAM PAP login (doc/attributes)."""
    return (
        f'User-Name = "{user}"\nUser-Password = "{password}"\n'
        f'Calling-Station-Id = "{mac}"\nCalled-Station-Id = "00-11-22-33-44-55"\n'
        f'NAS-Identifier = "{NAS}"\nNAS-IP-Address = 10.1.0.1\nService-Type = Login-User\n'
        "Framed-IP-Address = 10.1.0.23\nNAS-Port-Type = Wireless-802.11\n"
        'Acct-Session-Id = "5676d58a00000030"\nMessage-Authenticator = 0x00\n'
    )


def logon_credentials(location: str, challenge: str) -> tuple[str, str]:
    """The gateway's side of /logon: user name and the decoded password."""
    parts = urlsplit(location)
    assert (parts.scheme, parts.netloc, parts.path) == ("http", "10.1.0.1:3990", "/logon")
    q = parse_qs(parts.query)
    assert q["userurl"] == ["http://example.org/visit?day=1"]
    clear = decode_password(q["password"][0], challenge, UAM_SECRET).decode()
    return q["username"][0], clear


pytestmark = [pytest.mark.broker]


async def test_uam_click_through_credential_accepted_exactly_once(stack: Stack) -> None:
    """Redirect → login page → consent → 302 to the gateway's /logon with the encoded
    one-time password; radclient's Access-Request gets Access-Accept with the commune's
    limits once, then Access-Reject."""
    page = await stack.client.get(redirect_url(CHALLENGE))
    body = await page.text()
    assert page.status == 200, body
    assert 'action="/fas/accept"' in body
    post = await stack.client.post(
        "/fas/accept",
        data={"state": state_of(body), "lang": "fr", "consent": "yes"},
        allow_redirects=False,
    )
    assert post.status == 302, await post.text()
    user, password = logon_credentials(post.headers["Location"], CHALLENGE)
    assert user.startswith("uam-") and len(password) >= 16
    first = await radclient(
        stack.auth_port, "auth", access_request(user, password), secret=RADIUS_SECRET
    )
    assert "Received Access-Accept" in first.out, first.out
    for expected in (
        "Session-Timeout = 4500",
        "Idle-Timeout = 300",
        "Acct-Interim-Interval = 60",
        "WISPr-Bandwidth-Max-Up = 1500000",
        "WISPr-Bandwidth-Max-Down = 8000000",
        "ChilliSpot-Max-Total-Octets = 2000000000",
    ):
        assert expected in first.out, first.out
    second = await radclient(
        stack.auth_port, "auth", access_request(user, password), secret=RADIUS_SECRET
    )
    assert "Received Access-Reject" in second.out, second.out
    assert stack.radius.outcomes["access_used_credentials"] == 1
    # The same credential from another device never works either.
    other = await radclient(
        stack.auth_port,
        "auth",
        access_request(user, password, "02-00-00-00-00-0F"),
        secret=RADIUS_SECRET,
    )
    assert "Received Access-Reject" in other.out, other.out
    counters = stack.client.app[COUNTERS]
    assert counters.uam_logins == 1 and counters.logins == 1


async def test_uam_voucher_limits_and_returning_device(stack: Stack) -> None:
    """A voucher's limits reach the Access-Accept; the device, now remembered, gets no
    page at the next redirect (straight to /logon) and passes MAC authentication."""
    store = ControllerPortalBackend(stack.ctl).store
    now = stack.ctl.clock()
    _, codes = await store.issue_batch(
        VoucherPolicy(
            minutes=45,
            quota_mb=300,
            up_kbps=256,
            down_kbps=2048,
            expires_at=now + 86400,
            max_devices=1,
            insee="46201",
        ),
        1,
        now=now,
    )
    page = await stack.client.get(redirect_url(CHALLENGE))
    post = await stack.client.post(
        "/fas/voucher",
        data={
            "state": state_of(await page.text()),
            "lang": "en",
            "consent": "yes",
            "code": codes[0],
        },
        allow_redirects=False,
    )
    assert post.status == 302, await post.text()
    user, password = logon_credentials(post.headers["Location"], CHALLENGE)
    accept = await radclient(
        stack.auth_port, "auth", access_request(user, password), secret=RADIUS_SECRET
    )
    for expected in (
        "Session-Timeout = 2700",
        "WISPr-Bandwidth-Max-Up = 256000",
        "WISPr-Bandwidth-Max-Down = 2048000",
        "ChilliSpot-Max-Total-Octets = 300000000",
    ):
        assert expected in accept.out, accept.out
    # Back later (a new challenge): no page, straight to the gateway with a new credential.
    challenge = secrets.token_hex(16)
    again = await stack.client.get(redirect_url(challenge), allow_redirects=False)
    assert again.status == 302, await again.text()
    user2, password2 = logon_credentials(again.headers["Location"], challenge)
    assert user2 != user
    ok = await radclient(
        stack.auth_port, "auth", access_request(user2, password2), secret=RADIUS_SECRET
    )
    assert "Received Access-Accept" in ok.out, ok.out
    mac_auth = await radclient(
        stack.auth_port, "auth", access_request(MAC, MAC), secret=RADIUS_SECRET
    )
    assert "Received Access-Accept" in mac_auth.out, mac_auth.out
    for expected in ("Session-Timeout = 4500", "Idle-Timeout = 300", "Max-Up = 1500000"):
        assert expected in mac_auth.out, mac_auth.out
    assert stack.client.app[COUNTERS].returning == 1


async def test_uam_redirects_refused(stack: Stack) -> None:
    """A wrong checksum, an unknown NAS or a malformed query gets the 400 page and is
    counted; no credential is issued."""
    forged = redirect_url(CHALLENGE, secret="not-the-uamsecret")
    unknown = URL(
        str(redirect_url(CHALLENGE)).replace(f"nasid={NAS}", "nasid=nas-46201-99"), encoded=True
    )
    for path in (forged, unknown, URL("/uam?res=notyet&uamip=x")):
        res = await stack.client.get(path)
        assert res.status == 400, path
    assert stack.client.app[COUNTERS].bad_uam == 3
    assert stack.client.app[COUNTERS].uam_logins == 0


async def test_uam_result_pages(stack: Stack) -> None:
    """success (with the time left), already and logoff come back as pages (they only
    inform: no checksum needed, so the language switch works on them)."""
    base = f"/uam?uamip=10.1.0.1&uamport=3990&mac={MAC}&nasid={NAS}"

    def signed(query: str) -> URL:
        md = hashlib.md5(f"http://127.0.0.1:8080/uam?{query}{UAM_SECRET}".encode())
        return URL(f"/uam?{query}&md={md.hexdigest().upper()}", encoded=True)

    for res, text in (
        ("success&timeleft=5400", "1 hour 30 minutes"),
        ("already", "already connected"),
        ("logoff", "logged out"),
    ):
        query = f"res={res}&" + base.partition("?")[2]
        page = await stack.client.get(signed(query), headers={"Accept-Language": "en"})
        body = await page.text()
        assert page.status == 200 and text in body, body[:800]
        switched = await stack.client.get(URL(f"{signed(query)}&lang=de", encoded=True))
        assert switched.status == 200 and '<html lang="de">' in await switched.text()
    assert stack.client.app[COUNTERS].bad_uam == 0
