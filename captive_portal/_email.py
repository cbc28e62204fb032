"""Sending a login code by e-mail, over SMTP with aiosmtplib (never blocks the loop).

``[portal.email]`` names the relay (host, port, ``none``/``starttls``/``tls``, optional
login) and the sender. The message is plain text in the visitor's language; it holds the
code and nothing that identifies the device.
"""

from __future__ import annotations

import logging
import ssl
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import aiosmtplib

from controller.config import EmailCodeSettings

__all__ = ["EmailError", "EmailSender", "build_message"]

logger = logging.getLogger(__name__)


class EmailError(Exception):
    """The relay refused the message or could not be reached."""


def build_message(
    settings: EmailCodeSettings, to: str, subject: str, body: str, now: float
) -> EmailMessage:
    """The code's e-mail: plain text, UTF-8."""
    message = EmailMessage()
    message["From"] = settings.sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.fromtimestamp(now, UTC))
    domain = settings.sender.rsplit("@", 1)[-1] or None
    message["Message-ID"] = make_msgid(domain=domain)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(body)
    return message


class EmailSender:
    """Sends messages through the configured SMTP relay."""

    def __init__(self, settings: EmailCodeSettings) -> None:
        self.settings = settings
        # Built once here (reading CA files blocks): the portal builds it at start-up.
        self.tls_context: ssl.SSLContext | None = None
        if settings.smtp_security != "none":
            cafile = str(settings.smtp_ca_file) if settings.smtp_ca_file else None
            self.tls_context = ssl.create_default_context(cafile=cafile)

    async def send(self, message: EmailMessage) -> None:
        """Hand ``message`` to the relay; raise ``EmailError`` if it is not accepted."""
        s = self.settings
        password = s.smtp_password.get_secret_value() if s.smtp_password else None
        try:
            await aiosmtplib.send(
                message,
                hostname=s.smtp_host,
                port=s.smtp_port,
                username=s.smtp_username,
                password=password,
                use_tls=s.smtp_security == "tls",
                start_tls=s.smtp_security == "starttls",
                tls_context=self.tls_context,
                timeout=s.timeout_s,
            )
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            raise EmailError(f"{type(exc).__name__}: {str(exc)[:200]}") from exc
