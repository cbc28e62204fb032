"""Sending a login code by SMS through a pluggable HTTP provider.

The generic provider is one JSON ``POST`` to ``[portal.sms] url`` with ``Authorization:
Bearer <token>``; the body is ``[portal.sms] body`` with ``{to}`` (E.164 number) and
``{text}`` (the message) replaced in its string values, which fits most SMS gateways'
REST APIs. Any 2xx answer means the provider took the message. Another provider is a
class with the same ``send`` method.
"""

from __future__ import annotations

import logging
from typing import Protocol

import aiohttp

from controller.config import SmsCodeSettings

__all__ = ["HttpSmsProvider", "SmsError", "SmsProvider", "render_body"]

logger = logging.getLogger(__name__)


class SmsError(Exception):
    """The provider refused the message or could not be reached."""


class SmsProvider(Protocol):
    """Sends one text message."""

    async def send(self, to: str, text: str) -> None:
        """Send ``text`` to the E.164 number ``to``; raise ``SmsError`` on failure."""
        ...


def render_body(template: dict[str, str], to: str, text: str) -> dict[str, str]:
    """The provider's JSON body: ``{to}`` and ``{text}`` replaced in each value.

    Plain replacement (not ``str.format``): braces in the text or the template stay.
    """
    return {k: v.replace("{to}", to).replace("{text}", text) for k, v in template.items()}


class HttpSmsProvider:
    """The generic JSON-over-HTTP provider."""

    def __init__(self, settings: SmsCodeSettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None

    async def send(self, to: str, text: str) -> None:
        """POST the message; raise ``SmsError`` unless the provider answers 2xx."""
        s = self.settings
        if s.url is None:
            raise SmsError("no SMS provider configured ([portal.sms] url)")
        headers = {"Accept": "application/json"}
        if s.token is not None:
            headers["Authorization"] = f"Bearer {s.token.get_secret_value()}"
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=s.timeout_s))
        try:
            async with self._session.post(
                s.url, json=render_body(s.body, to, text), headers=headers
            ) as response:
                if not 200 <= response.status < 300:
                    detail = (await response.text())[:200]
                    raise SmsError(f"provider answered {response.status}: {detail}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SmsError(f"{type(exc).__name__}: {str(exc)[:200]}") from exc

    async def close(self) -> None:
        """Close the HTTP connections (at the application's shutdown)."""
        if self._session is not None:
            await self._session.close()
