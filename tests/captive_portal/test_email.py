"""Tests of captive_portal._email against a real SMTP server (aiosmtpd, on loopback)."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import AsyncIterator
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

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
