"""Tests of captive_portal._sms against a local fake SMS provider.

No real SMS gateway can run here: the provider is a small aiohttp server on loopback
that records the JSON it receives (a fake, as said), reached over real HTTP.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr

from captive_portal._sms import HttpSmsProvider, SmsError, render_body
from controller.config import SmsCodeSettings


class FakeProvider:
    """Records each POST; answers ``status``."""

    def __init__(self) -> None:
        self.received: list[tuple[str | None, Any]] = []
        self.status = 201

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((request.headers.get("Authorization"), await request.json()))
        return web.json_response({"id": "m-1"}, status=self.status)


async def start_provider(aiohttp_server: Any) -> tuple[FakeProvider, str]:
    """The fake provider served on loopback; returns it and its URL."""
    provider = FakeProvider()
    app = web.Application()
    app.router.add_post("/v1/sms", provider.handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    return provider, str(server.make_url("/v1/sms"))


def test_body_template_replaces_placeholders_only() -> None:
    body = render_body({"to": "{to}", "message": "{text}", "from": "Lot {x}"}, "+33611", "a {to}")
    assert body == {"to": "+33611", "message": "a {to}", "from": "Lot {x}"}


async def test_the_provider_gets_the_number_the_text_and_the_token(aiohttp_server: Any) -> None:
    provider, url = await start_provider(aiohttp_server)
    settings = SmsCodeSettings(
        url=url, token=SecretStr("t0k"), body={"recipient": "{to}", "content": "{text}"}
    )
    sms = HttpSmsProvider(settings)
    try:
        await sms.send("+33612345678", "Wi-Fi : 123456")
    finally:
        await sms.close()
    assert provider.received == [
        ("Bearer t0k", {"recipient": "+33612345678", "content": "Wi-Fi : 123456"})
    ]


async def test_a_refusal_or_no_provider_raises_sms_error(aiohttp_server: Any) -> None:
    provider, url = await start_provider(aiohttp_server)
    provider.status = 402
    sms = HttpSmsProvider(SmsCodeSettings(url=url))
    try:
        with pytest.raises(SmsError, match="402"):
            await sms.send("+33612345678", "x")
    finally:
        await sms.close()
    with pytest.raises(SmsError, match="no SMS provider"):
        await HttpSmsProvider(SmsCodeSettings()).send("+33612345678", "x")
