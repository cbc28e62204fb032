"""RFC 3161 time-stamps of the daily heads: proof that a day's log existed at a date.

For each sealed day, the SHA-256 of its final signed head (the JSON line as written) is
sent to a Time-Stamp Authority in a ``TimeStampReq`` (RFC 3161 §2.4.1, DER built here:
the structure is four fields) over HTTP (RFC 3161 §3.4, ``application/timestamp-query``).
The TSA's whole ``TimeStampResp`` is kept as ``<day>/head.tsr``. Checking a token is
left to ``openssl ts -verify`` (the reference implementation, present on any Debian),
called by :func:`verify_token`. Blocking IO: call from a worker thread.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import urllib.request
from pathlib import Path

from controller.legal.errors import LegalError
from controller.legal.store import LegalStore, complete_lines

__all__ = [
    "build_request",
    "head_digest",
    "parse_status",
    "request_timestamp",
    "timestamp_days",
    "verify_token",
]

# id-sha256, 2.16.840.1.101.3.4.2.1 (RFC 5754 §2.2), DER-encoded.
_SHA256_OID = bytes.fromhex("0609608648016503040201")
# A TSA answer is a few kilobytes (a CMS signature and its certificates).
_MAX_RESPONSE = 256 * 1024


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(content)) + content


def _der_int(n: int) -> bytes:
    raw = n.to_bytes(max(1, (n.bit_length() + 8) // 8), "big")  # room for a sign bit
    return _tlv(0x02, raw)


def build_request(digest: bytes, nonce: int) -> bytes:
    """A DER ``TimeStampReq`` (version 1, SHA-256 imprint, nonce, certReq TRUE)."""
    alg = _tlv(0x30, _SHA256_OID + b"\x05\x00")
    imprint = _tlv(0x30, alg + _tlv(0x04, digest))
    return _tlv(0x30, _der_int(1) + imprint + _der_int(nonce) + b"\x01\x01\xff")


def _read_tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the TLV at ``pos``."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first & 0x80:
        k = first & 0x7F
        if k == 0 or k > 4 or pos + k > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos : pos + k], "big")
        pos += k
    else:
        length = first
    if pos + length > len(data):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def parse_status(response: bytes) -> int:
    """The PKIStatus of a ``TimeStampResp`` (0 granted, 1 granted with mods, else refused).

    Raises:
        ValueError: not a TimeStampResp.
    """
    tag, start, _ = _read_tlv(response, 0)
    if tag != 0x30:
        raise ValueError("not a SEQUENCE")
    tag, s_start, _ = _read_tlv(response, start)
    if tag != 0x30:
        raise ValueError("no PKIStatusInfo")
    tag, i_start, i_end = _read_tlv(response, s_start)
    if tag != 0x02:
        raise ValueError("no status")
    return int.from_bytes(response[i_start:i_end], "big", signed=True)


def head_digest(store: LegalStore, day: str) -> bytes | None:
    """SHA-256 of the day's final head line as stored (None if the day is not sealed)."""
    path = store.directory / day / "heads.jsonl"
    if not path.exists():
        return None
    finals = [ln for ln in complete_lines(path.read_bytes()) if b'"final":true' in ln]
    return hashlib.sha256(finals[-1]).digest() if finals else None


def request_timestamp(url: str, digest: bytes, timeout: float = 30.0) -> bytes:
    """Ask the TSA at ``url`` to time-stamp ``digest``; return its ``TimeStampResp``.

    Raises:
        LegalError: unreachable TSA, refusal or a malformed answer.
    """
    req = urllib.request.Request(
        url,
        data=build_request(digest, secrets.randbits(63)),
        headers={"Content-Type": "application/timestamp-query"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = bytes(resp.read(_MAX_RESPONSE + 1))
    except OSError as exc:
        raise LegalError(f"TSA {url} unreachable: {exc}") from exc
    if len(body) > _MAX_RESPONSE:
        raise LegalError("TSA answer too large")
    try:
        status = parse_status(body)
    except ValueError as exc:
        raise LegalError(f"TSA answer is not a TimeStampResp: {exc}") from exc
    if status not in (0, 1):
        raise LegalError(f"TSA refused the request (PKIStatus {status})")
    return body


def timestamp_days(store: LegalStore, url: str) -> list[str]:
    """Time-stamp every sealed day without a token; return the days stamped."""
    done = []
    for day in store.days():
        target = store.directory / day / "head.tsr"
        digest = head_digest(store, day)
        if digest is None or target.exists():
            continue
        body = request_timestamp(url, digest)
        tmp = target.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.rename(target)
        done.append(day)
    return done


def verify_token(store: LegalStore, day: str, ca_file: Path) -> str | None:
    """Check a day's token with ``openssl ts -verify``; None if valid, else why not."""
    digest = head_digest(store, day)
    token = store.directory / day / "head.tsr"
    if digest is None or not token.exists():
        return "no time-stamp"
    out = subprocess.run(
        [
            "openssl",
            "ts",
            "-verify",
            "-digest",
            digest.hex(),
            "-sha256",
            "-in",
            str(token),
            "-CAfile",
            str(ca_file),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if out.returncode == 0 and "Verification: OK" in out.stdout:
        return None
    return "time-stamp does not match the head: " + (out.stdout + out.stderr).strip()[-200:]
