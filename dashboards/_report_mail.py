"""Monthly reports by e-mail: each stored report of a month, once, to the subscribers of
its commune (see ``dashboards.reports`` for the subscriptions and the claims that make a
mail go once), through ``[portal.email]``'s relay. Logs name the account, never the
address."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from email.message import EmailMessage
from typing import Final

import aiosmtplib

from captive_portal._email import EmailError, EmailSender, build_message
from controller.config import EmailCodeSettings
from dashboards.reports import ReportStore, Subscriber

__all__ = ["ReportMailer", "masked_address", "report_message"]

logger = logging.getLogger(__name__)

# The relay answered about this message only (a refused address, a refused message): the
# next subscriber is still tried. Anything else (relay unreachable, login refused, time
# out) ends the round: the others wait for the next check.
_MESSAGE_ONLY: Final = (
    aiosmtplib.SMTPRecipientRefused,
    aiosmtplib.SMTPRecipientsRefused,
    aiosmtplib.SMTPDataError,
)


def masked_address(address: str) -> str:
    """An address as logs may show it: its first character and its domain."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}…@{domain}"


def report_message(
    settings: EmailCodeSettings,
    sub: Subscriber,
    commune: str,
    month: str,
    html: str,
    network: str,
    now: float,
) -> EmailMessage:
    """A report's e-mail: a plain-text part (French, then English) and the report's
    self-contained HTML as the HTML part."""
    shown = f"{month[5:]}/{month[:4]}"
    subject = f"Rapport mensuel du Wi-Fi — {commune} — {shown} / Monthly Wi-Fi report"
    body = (
        f"Rapport mensuel du réseau {network} pour {commune}, {shown}.\n\n"
        "Le rapport (statistiques anonymisées) est la partie HTML de ce message ; il se\n"
        "consulte et s'imprime aussi sur les tableaux de bord, page « Rapports mensuels ».\n"
        f"Vous le recevez parce que le compte « {sub.username} » s'y est abonné. Pour ne\n"
        "plus le recevoir : page « Rapports mensuels », décochez la commune.\n\n"
        f"Monthly report of the {network} network for {commune}, {shown}.\n\n"
        "The report (anonymised statistics) is this message's HTML part; it can also be\n"
        'read and printed on the dashboards, "Rapports mensuels" page.\n'
        f'You receive it because the account "{sub.username}" subscribed to it. To stop\n'
        'it: "Rapports mensuels" page, untick the commune.\n'
    )
    message = build_message(settings, sub.email, subject, body, now)
    message.add_alternative(html, subtype="html")
    return message


class ReportMailer:
    """Sends each stored report of a month, once, to the subscribers of its commune.

    Args:
        store: the reports, subscriptions and mails sent.
        settings: the SMTP relay and sender (``[portal.email]``); None: e-mail is off,
            subscriptions are kept and nothing is sent.
        name_of: a commune's name from its INSEE code.
        network: the network's name, in the message.
        clock: Unix time.
    """

    def __init__(
        self,
        store: ReportStore,
        settings: EmailCodeSettings | None,
        name_of: Callable[[str], str],
        network: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings
        # Built here, not in the loop (a CA file is read for TLS).
        self.sender = EmailSender(settings) if settings is not None else None
        self.name_of = name_of
        self.network = network
        self.clock = clock
        self.sent = 0
        self.failures = 0

    @property
    def enabled(self) -> bool:
        """Whether reports are e-mailed at all."""
        return self.sender is not None

    async def deliver(self, month: str) -> int:
        """Send the stored reports of ``month`` not sent yet; the number sent."""
        if self.settings is None or self.sender is None:
            return 0
        pages: dict[str, str | None] = {}
        sent = 0
        for sub in await self.store.pending_mails(month):
            if sub.insee not in pages:
                pages[sub.insee] = await self.store.get(sub.insee, month)
            html = pages[sub.insee]
            if html is None or not await self.store.claim_mail(sub, month, self.clock()):
                continue
            message = report_message(
                self.settings, sub, self.name_of(sub.insee), month, html, self.network, self.clock()
            )
            try:
                await self.sender.send(message)
            except EmailError as exc:
                await self.store.release_mail(sub, month)
                self.failures += 1
                reason = str(exc).replace(sub.email, masked_address(sub.email))
                logger.warning(
                    "monthly report %s %s not e-mailed to account %s, tried again at the "
                    "next check: %s",
                    sub.insee,
                    month,
                    sub.username,
                    reason,
                )
                if isinstance(exc.__cause__, _MESSAGE_ONLY):
                    continue
                break
            await self.store.mail_sent(sub, month, self.clock())
            sent += 1
            self.sent += 1
            logger.info(
                "monthly report %s %s e-mailed to account %s", sub.insee, month, sub.username
            )
        return sent
