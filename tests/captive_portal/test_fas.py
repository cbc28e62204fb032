"""Sans-IO tests of captive_portal._fas: FAS decoding, openNDS token, signed login state."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import string
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from captive_portal._fas import (
    _STATE_KEY_LABEL,
    MAX_FAS_BYTES,
    MAX_FAS_CHARS,
    STATE_TTL_S,
    FasRequest,
    _subkey,
    auth_token,
    decode_fas,
    gateway_auth_url,
    mac_tag,
    sign_state,
    verify_state,
)
from captive_portal.errors import FasError, StateError, StateExpired, StateInvalid

KEY = "test-fas-key"
NOW = 1_800_000_000.0
HID = "4f3c" + "0123456789abcdef" * 3 + "a1b2c3d4e5f6"

B64 = Callable[..., str]


def b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


# -- decoding: valid inputs ---------------------------------------------------------------


def test_decodes_the_fields_openNDS_sends(make_fas: B64) -> None:
    """A typical openNDS 10 level-1 query decodes to every documented field."""
    fas = decode_fas(make_fas())
    assert fas == FasRequest(
        hid=HID,
        client_ip="10.46.1.23",
        client_mac="aa:bb:cc:dd:ee:01",
        gateway_name="lot-cahors-01",
        gateway_address="10.46.1.1:2050",
        origin_url="http://example.org/visit?day=1",
        gateway_mac="00:11:22:33:44:55",
        gateway_url="http://status.client",
        client_type="cpd_can",
        client_if="br-lan",
        version="10.2.0",
        auth_dir="opennds_auth",
    )


VALID_CASES: list[tuple[str, dict[str, str | None], dict[str, Any]]] = [
    ("mac upper-cased", {"clientmac": "AA:BB:CC:DD:EE:0F"}, {"client_mac": "aa:bb:cc:dd:ee:0f"}),
    ("ipv6 client", {"clientip": "2001:DB8:0:0::17"}, {"client_ip": "2001:db8::17"}),
    ("gateway without port", {"gatewayaddress": "10.46.1.1"}, {"gateway_address": "10.46.1.1"}),
    ("gateway ipv6", {"gatewayaddress": "[fd00::1]:2050"}, {"gateway_address": "[fd00::1]:2050"}),
    ("gateway by name", {"gatewayaddress": "status.client:2050"}, {}),
    ("url-encoded name", {"gatewayname": "lot%2dfigeac%2d02"}, {"gateway_name": "lot-figeac-02"}),
    ("origin optional", {"originurl": None}, {"origin_url": None}),
    ("origin not http", {"originurl": "javascript%3aalert(1)"}, {"origin_url": None}),
    ("origin with space", {"originurl": "http%3a%2f%2fa.b%2f%20x"}, {"origin_url": None}),
    ("origin too long", {"originurl": "http%3a%2f%2fa.b%2f" + "x" * 2040}, {"origin_url": None}),
    ("origin bad port", {"originurl": "http%3a%2f%2fa.b%3a99999%2f"}, {"origin_url": None}),
    ("origin no host", {"originurl": "http%3a%2f%2f%2fpath"}, {"origin_url": None}),
    ("informational optional", {"client_type": None, "clientif": None}, {"client_if": None}),
    ("empty clientif", {"clientif": ""}, {"client_if": None}),
    ("gatewaymac optional", {"gatewaymac": None}, {"gateway_mac": None}),
    ("gatewaymac bare hex", {"gatewaymac": "3E4047C999F7"}, {"gateway_mac": "3e:40:47:c9:99:f7"}),
    ("gatewaymac malformed", {"gatewaymac": "3e-40-47"}, {"gateway_mac": None}),
    ("custom params ignored", {"custom1": "x=y", "zone": "Cahors"}, {}),
    ("authdir honoured", {"authdir": "nds_auth"}, {"auth_dir": "nds_auth"}),
    ("bad authdir ignored", {"authdir": "../x"}, {"auth_dir": "opennds_auth"}),
]


@pytest.mark.parametrize(
    ("overrides", "expected"), [c[1:] for c in VALID_CASES], ids=[c[0] for c in VALID_CASES]
)
def test_valid_queries_decode(
    make_fas: B64, overrides: dict[str, str | None], expected: dict[str, Any]
) -> None:
    """Valid variants decode, with MAC, IP and URL-encoded fields normalised."""
    fas = decode_fas(make_fas(**overrides))
    for name, value in expected.items():
        assert getattr(fas, name) == value


def test_plus_turned_into_space_is_restored(make_fas_text: Callable[..., str]) -> None:
    """A '+' of the base64 value that a form decoder turned into a space still decodes."""
    for n in range(200):
        value = b64(make_fas_text(originurl=f"http%3a%2f%2fexample.org%2f{'~' * n}"))
        if "+" in value:
            break
    else:  # pragma: no cover - the loop always finds one
        pytest.fail("no base64 value with '+' found")
    assert decode_fas(value.replace("+", " ")) == decode_fas(value)


def test_urlsafe_alphabet_without_padding_decodes(make_fas_text: Callable[..., str]) -> None:
    """The URL-safe base64 alphabet, without padding, decodes to the same request."""
    raw = make_fas_text(originurl="http%3a%2f%2fexample.org%2f%3f%3f%3e%3e").encode()
    plain = base64.b64encode(raw).decode()
    urlsafe = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert decode_fas(urlsafe) == decode_fas(plain)


def test_opennds_9_null_custom_parameters_are_skipped(
    make_fas_text: Callable[..., str],
) -> None:
    """openNDS 9.10's "(null)(null)(null)(null)" tail (unset custom lists) is ignored."""
    text = make_fas_text() + "(null)(null)(null)(null)"
    assert decode_fas(b64(text)) == decode_fas(b64(make_fas_text()))
    custom = make_fas_text() + "(null)zone=causses, (null)(null)"
    assert decode_fas(b64(custom)).gateway_name == "lot-cahors-01"


def test_list_without_trailing_separator_decodes(make_fas_text: Callable[..., str]) -> None:
    """The trailing ', ' openNDS writes is optional."""
    text = make_fas_text().removesuffix(", ")
    assert decode_fas(b64(text)).client_mac == "aa:bb:cc:dd:ee:01"


# -- decoding: invalid inputs ---------------------------------------------------------------

INVALID_FIELD_CASES: list[tuple[str, dict[str, str | None]]] = [
    ("missing hid", {"hid": None}),
    ("missing clientip", {"clientip": None}),
    ("missing clientmac", {"clientmac": None}),
    ("missing gatewayname", {"gatewayname": None}),
    ("missing gatewayaddress", {"gatewayaddress": None}),
    ("empty clientmac", {"clientmac": ""}),
    ("mac with dashes", {"clientmac": "aa-bb-cc-dd-ee-01"}),
    ("mac too short", {"clientmac": "aa:bb:cc:dd:ee"}),
    ("mac not hex", {"clientmac": "aa:bb:cc:dd:ee:zz"}),
    ("mac percent-encoded", {"clientmac": "aa%3abb%3acc%3add%3aee%3a01"}),
    ("ip not an ip", {"clientip": "10.46.1.300"}),
    ("ip is a name", {"clientip": "phone.lan"}),
    ("hid too short", {"hid": "abc123"}),
    ("hid upper-case", {"hid": HID.upper()}),
    ("gatewayname upper-case", {"gatewayname": "Lot-Cahors"}),
    ("gatewayname with space", {"gatewayname": "openNDS%20Node"}),
    ("gatewayname too long", {"gatewayname": "a" * 64}),
    ("gatewayname leading dash", {"gatewayname": "-lot"}),
    ("gatewayname bad escape", {"gatewayname": "lot%ff"}),
    ("gateway port too big", {"gatewayaddress": "10.46.1.1:70000"}),
    ("gateway bad ipv4", {"gatewayaddress": "10.46.1.256:2050"}),
    ("gateway bad ipv6", {"gatewayaddress": "[fd00::zz]:2050"}),
    ("gateway with path", {"gatewayaddress": "10.46.1.1:2050/x"}),
]


@pytest.mark.parametrize(
    "overrides", [c[1] for c in INVALID_FIELD_CASES], ids=[c[0] for c in INVALID_FIELD_CASES]
)
def test_invalid_fields_are_refused(make_fas: B64, overrides: dict[str, str | None]) -> None:
    """A missing required field or a malformed value raises FasError."""
    with pytest.raises(FasError):
        decode_fas(make_fas(**overrides))


INVALID_RAW_CASES: list[tuple[str, str]] = [
    ("empty", ""),
    ("blank", "   "),
    ("not base64", "!!!not-base64!!!"),
    ("padding inside", "YW=Jj"),
    ("one char too many", "YWJjZ"),
    ("not utf-8", b64(b"hid=\xff\xfe, clientip=1.2.3.4")),
    ("control characters", b64("hid=a\x00b, clientip=1.2.3.4")),
    ("item without =", b64(f"hid={HID}, clientip")),
    ("bad key", b64(f"hid={HID}, client ip=1.2.3.4")),
    ("duplicate key", b64(f"hid={HID}, hid={HID}")),
    ("too many fields", b64("".join(f"k{i}=v, " for i in range(65)))),
    ("oversized encoding", "A" * (MAX_FAS_CHARS + 4)),
    ("oversized decoded", b64(b"k=" + b"v" * (MAX_FAS_BYTES - 1))),
    ("non-ascii", "aGlk\u00e9"),
]


@pytest.mark.parametrize(
    "value", [c[1] for c in INVALID_RAW_CASES], ids=[c[0] for c in INVALID_RAW_CASES]
)
def test_invalid_encodings_are_refused(value: str) -> None:
    """Empty, oversized, non-base64, non-UTF-8 or non key=value input raises FasError."""
    with pytest.raises(FasError):
        decode_fas(value)


def test_error_messages_never_quote_a_mac(make_fas: B64) -> None:
    """A refused MAC is not echoed in the error message (messages are logged)."""
    with pytest.raises(FasError) as info:
        decode_fas(make_fas(clientmac="AA-BB-CC-DD-EE-01"))
    assert "AA-BB" not in str(info.value)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.text(max_size=8000))
def test_decoder_raises_only_fas_error_on_any_text(value: str) -> None:
    """Whatever text arrives as ``fas``, the decoder returns or raises FasError."""
    with contextlib.suppress(FasError):
        decode_fas(value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=5000))
def test_decoder_raises_only_fas_error_on_any_bytes(raw: bytes) -> None:
    """Whatever bytes are base64-encoded into ``fas``, the decoder returns or raises FasError."""
    with contextlib.suppress(FasError):
        decode_fas(b64(raw))


_KEYS = st.sampled_from(
    ["hid", "clientip", "clientmac", "gatewayname", "gatewayaddress", "originurl", "gatewaymac"]
)
_VALUES = st.one_of(
    st.just(HID),
    st.just("aa:bb:cc:dd:ee:01"),
    st.just("10.46.1.1:2050"),
    st.text(alphabet=string.printable, max_size=40),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_KEYS, _VALUES), max_size=10))
def test_decoder_raises_only_fas_error_on_near_valid_lists(items: list[tuple[str, str]]) -> None:
    """Lists of plausible keys with arbitrary values decode or raise FasError, nothing else."""
    try:
        fas = decode_fas(b64(", ".join(f"{k}={v}" for k, v in items)))
    except FasError:
        return
    assert fas.client_mac == fas.client_mac.lower()


# -- openNDS token and auth URL --------------------------------------------------------------


def test_auth_token_is_sha256_of_hid_and_key() -> None:
    """The token is hex sha256(hid + faskey), as openNDS's fas-hid example computes it."""
    # sha256(b"abckey"), computed independently.
    assert auth_token("abc", "key") == (
        "afcb12512ff218c850c8672f2f984f34d86f7739c5f4bee205442eb5a6ad6fff"
    )
    assert auth_token(HID, KEY) != auth_token(HID, "other-key")


def test_gateway_auth_url_points_at_opennds_auth(make_fas: B64) -> None:
    """The auth URL targets the gateway's opennds_auth with the token and a quoted redir."""
    fas = decode_fas(make_fas())
    url = gateway_auth_url(fas, KEY)
    tok = hashlib.sha256((HID + KEY).encode()).hexdigest()
    assert url == (
        f"http://10.46.1.1:2050/opennds_auth/?tok={tok}"
        "&redir=http%3A%2F%2Fexample.org%2Fvisit%3Fday%3D1"
    )
    assert gateway_auth_url(fas, KEY, redir="").endswith(f"?tok={tok}")


# -- signed login state ------------------------------------------------------------------------


@pytest.fixture
def fas(make_fas: B64) -> FasRequest:
    return decode_fas(make_fas())


def test_state_round_trips(fas: FasRequest) -> None:
    """A state verifies under the same key before expiry and carries the login fields."""
    token = sign_state(fas, KEY, now=NOW, terms_version="2026-11-01")
    login = verify_state(token, KEY, now=NOW + STATE_TTL_S)
    assert login.terms_version == "2026-11-01"
    assert login.expires_at == int(NOW) + STATE_TTL_S
    assert login.fas == FasRequest(
        hid=fas.hid,
        client_ip=fas.client_ip,
        client_mac=fas.client_mac,
        gateway_name=fas.gateway_name,
        gateway_address=fas.gateway_address,
        origin_url=fas.origin_url,
    )


def test_state_expires(fas: FasRequest) -> None:
    """A state older than its validity raises StateExpired."""
    token = sign_state(fas, KEY, now=NOW, terms_version="v", ttl_s=60)
    with pytest.raises(StateExpired):
        verify_state(token, KEY, now=NOW + 61)


def _flip(text: str, index: int) -> str:
    char = "A" if text[index] != "A" else "B"
    return text[:index] + char + text[index + 1 :]


def _reforged(token: str, change: Callable[[dict[str, Any]], None]) -> str:
    """Edit the payload of a token but keep its (now wrong) signature."""
    version, body, mac = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    change(payload)
    raw = json.dumps(payload).encode()
    return f"{version}.{base64.urlsafe_b64encode(raw).decode().rstrip('=')}.{mac}"


TAMPER_CASES: list[tuple[str, Callable[[str], str]]] = [
    ("payload byte", lambda t: _flip(t, 10)),
    ("signature byte", lambda t: _flip(t, len(t) - 3)),
    ("version", lambda t: "v2" + t[2:]),
    ("truncated", lambda t: t[:-1]),
    ("signature dropped", lambda t: t.rsplit(".", 1)[0]),
    ("extra part", lambda t: t + ".x"),
    ("other mac", lambda t: _reforged(t, lambda p: p["f"].update(client_mac="aa:bb:cc:dd:ee:99"))),
    ("other ap", lambda t: _reforged(t, lambda p: p["f"].update(gateway_name="lot-figeac-01"))),
    ("longer life", lambda t: _reforged(t, lambda p: p.update(e=p["e"] + 86400))),
    ("empty", lambda t: ""),
    ("oversized", lambda t: t + "A" * 20000),
]


@pytest.mark.parametrize("tamper", [c[1] for c in TAMPER_CASES], ids=[c[0] for c in TAMPER_CASES])
def test_tampered_state_is_refused(fas: FasRequest, tamper: Callable[[str], str]) -> None:
    """Any change to a signed state raises StateInvalid."""
    token = sign_state(fas, KEY, now=NOW, terms_version="v")
    with pytest.raises(StateInvalid):
        verify_state(tamper(token), KEY, now=NOW)


def test_state_signed_with_another_key_is_refused(fas: FasRequest) -> None:
    """A state signed under another FAS key raises StateInvalid."""
    token = sign_state(fas, "another-key", now=NOW, terms_version="v")
    with pytest.raises(StateInvalid):
        verify_state(token, KEY, now=NOW)


def test_expired_and_tampered_state_counts_as_tampered(fas: FasRequest) -> None:
    """The signature is checked before the expiry: a forged old state is not 'expired'."""
    token = _flip(sign_state(fas, KEY, now=NOW, terms_version="v"), 10)
    with pytest.raises(StateInvalid):
        verify_state(token, KEY, now=NOW + 10 * STATE_TTL_S)


def test_authentic_state_with_invalid_fields_is_refused() -> None:
    """A correctly signed state whose fields do not validate raises StateInvalid."""
    payload = {"f": {"hid": HID, "client_mac": "nope"}, "t": "v", "e": int(NOW) + 60}
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    mac = hmac.new(_subkey(KEY, _STATE_KEY_LABEL), f"v1.{body}".encode(), hashlib.sha256)
    token = f"v1.{body}.{base64.urlsafe_b64encode(mac.digest()).decode().rstrip('=')}"
    with pytest.raises(StateInvalid):
        verify_state(token, KEY, now=NOW)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=3000))
def test_state_verifier_raises_only_state_error(token: str) -> None:
    """Whatever comes back as the state, verification returns or raises StateError."""
    with contextlib.suppress(StateError):
        verify_state(token, KEY, now=NOW)


@settings(max_examples=100, deadline=None)
@given(
    mac=st.from_regex(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", fullmatch=True),
    ip=st.ip_addresses().map(str),
    ap=st.from_regex(r"[a-z0-9][a-z0-9_-]{0,62}", fullmatch=True),
    terms=st.text(max_size=40),
)
def test_any_valid_request_round_trips(mac: str, ip: str, ap: str, terms: str) -> None:
    """Every valid client, gateway and terms version survives signing and verification."""
    fas = FasRequest(
        hid=HID, client_ip=ip, client_mac=mac, gateway_name=ap, gateway_address="10.0.0.1:2050"
    )
    login = verify_state(sign_state(fas, KEY, now=NOW, terms_version=terms), KEY, now=NOW)
    assert login.fas == fas
    assert login.terms_version == terms


# -- log tags ----------------------------------------------------------------------------------


def test_mac_tag_is_short_keyed_and_stable() -> None:
    """The log tag is 10 hex digits, stable per key and MAC, and differs across keys."""
    tag = mac_tag("aa:bb:cc:dd:ee:01", KEY)
    assert len(tag) == 10
    assert set(tag) <= set("0123456789abcdef")
    assert tag == mac_tag("AA:BB:CC:DD:EE:01", KEY)
    assert tag != mac_tag("aa:bb:cc:dd:ee:01", "other-key")
    assert tag != mac_tag("aa:bb:cc:dd:ee:02", KEY)
