"""Tests of captive_portal._email against a real SMTP server (aiosmtpd, on loopback)."""

from __future__ import annotations

import asyncio
import datetime
import email
import email.policy
import ipaddress
import ssl
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from captive_portal._email import EmailError, EmailSender, build_message
from controller.config import EmailCodeSettings
from tests.conftest import free_port


class Inbox:
    """An aiosmtpd handler that keeps what it receives; ``refuse`` answers 550."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []
        self.refuse = False
        self.arrived = asyncio.Event()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.refuse:
            return "550 mailbox unavailable"
        raw = envelope.content if isinstance(envelope.content, bytes) else b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append((list(envelope.rcpt_tos), message))
        self.arrived.set()
        return "250 OK"


@pytest.fixture
async def smtp_server() -> AsyncIterator[tuple[Inbox, int]]:
    """A real SMTP server (aiosmtpd) in the test's event loop; yields its inbox and port."""
    inbox = Inbox()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(inbox, hostname="portal-test.local"), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    yield inbox, port
    server.close()
    await server.wait_closed()


def mail_settings(port: int, **overrides: Any) -> EmailCodeSettings:
    values: dict[str, Any] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "sender": "wifi@lot.example",
        **overrides,
    }
    return EmailCodeSettings(**values)


async def test_a_message_reaches_the_smtp_server_intact(smtp_server: tuple[Inbox, int]) -> None:
    inbox, port = smtp_server
    settings = mail_settings(port)
    message = build_message(
        settings, "marie@example.org", "Votre code : 123456", "Code 123456 ✓", 0
    )
    await EmailSender(settings).send(message)
    ((rcpt, got),) = inbox.messages
    assert rcpt == ["marie@example.org"]
    assert got["Subject"] == "Votre code : 123456"
    assert got["From"] == "wifi@lot.example"
    assert got["Auto-Submitted"] == "auto-generated"
    assert got.get_content().strip() == "Code 123456 ✓"


async def test_a_refusing_or_absent_relay_raises_email_error(
    smtp_server: tuple[Inbox, int],
) -> None:
    inbox, port = smtp_server
    inbox.refuse = True
    settings = mail_settings(port)
    message = build_message(settings, "marie@example.org", "s", "b", 0)
    with pytest.raises(EmailError, match="550"):
        await EmailSender(settings).send(message)
    closed = mail_settings(free_port(), timeout_s=2.0)
    with pytest.raises(EmailError):
        await EmailSender(closed).send(message)


@pytest.fixture
def relay_certificate(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1 and the server context that uses it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "relay.pem", tmp_path / "relay.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_path, key_path)
    return cert_path, server


async def test_starttls_to_a_relay_that_requires_it(
    relay_certificate: tuple[Path, ssl.SSLContext],
) -> None:
    """A relay that refuses plain text: the code goes over STARTTLS, the relay's
    certificate checked against ``smtp_ca_file``; a client that skips TLS is refused."""
    ca_file, server_tls = relay_certificate
    inbox = Inbox()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(inbox, hostname="relay.test", tls_context=server_tls, require_starttls=True),
        "127.0.0.1",
        0,
    )
    try:
        port = server.sockets[0].getsockname()[1]
        settings = mail_settings(port, smtp_security="starttls", smtp_ca_file=ca_file)
        sender = await asyncio.to_thread(EmailSender, settings)
        message = build_message(settings, "marie@example.org", "Code", "123456", 0)
        await sender.send(message)
        ((rcpt, got),) = inbox.messages
        assert rcpt == ["marie@example.org"] and got.get_content().strip() == "123456"
        with pytest.raises(EmailError):
            await EmailSender(mail_settings(port)).send(message)
        assert len(inbox.messages) == 1
    finally:
        server.close()
        await server.wait_closed()
