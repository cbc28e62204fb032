"""Drive a headless Chromium through the Chrome DevTools Protocol (run inside the
testbed's client namespace by tests/e2e/test_browser.py).

Usage: python _cdp_client.py <json plan>; prints one JSON result per step. The plan is a
list of steps: {"go": url}, {"lang": "de"}, {"shot": path}, {"eval": js}, {"axe": path
of axe.min.js} (the WCAG 2.1 A/AA violations of the page),
{"click_submit": [checkbox_id_or_null, form_selector, {field: value}]},
{"submit_file": [path, form_selector, field]} (waits for the file, types its content),
{"block": [url_pattern, ...]} (requests that fail at once).
Standard library and aiohttp only.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

PORT = 9222
# WCAG 2.1 A and AA rules (RGAA 4 follows WCAG 2.1 AA).
AXE_RUN = (
    "axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a',"
    " 'wcag21aa']}}).then(r => r.violations.map(v => ({id: v.id, impact: v.impact,"
    " nodes: v.nodes.length, help: v.help})))"
)


async def main(plan: list[dict[str, Any]]) -> None:
    profile = tempfile.mkdtemp(prefix="borne-chromium-")
    proc = await asyncio.create_subprocess_exec(
        "/usr/bin/chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
        "--no-first-run", "--disable-extensions", "--disable-background-networking",
        f"--remote-debugging-port={PORT}", f"--user-data-dir={profile}",
        "--window-size=412,915", "about:blank",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as http:
            ws_url = None
            for _ in range(100):
                try:
                    async with http.get(f"http://127.0.0.1:{PORT}/json/list") as r:
                        pages = [p for p in await r.json() if p.get("type") == "page"]
                        if pages:
                            ws_url = pages[0]["webSocketDebuggerUrl"]
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            assert ws_url, "chromium did not start"
            async with http.ws_connect(ws_url, max_msg_size=0) as ws:
                await run(ws, plan)
    finally:
        proc.terminate()
        await proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


async def run(ws: aiohttp.ClientWebSocketResponse, plan: list[dict[str, Any]]) -> None:
    ids = iter(range(1, 1_000_000))
    events: list[dict[str, Any]] = []

    async def call(method: str, **params: Any) -> dict[str, Any]:
        n = next(ids)
        await ws.send_json({"id": n, "method": method, "params": params})
        while True:
            msg = await ws.receive_json(timeout=30)
            if msg.get("id") == n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return dict(msg.get("result", {}))
            events.append(msg)

    async def loaded() -> None:
        for _ in range(600):
            state = await call("Runtime.evaluate", expression="document.readyState")
            url = await call("Runtime.evaluate", expression="location.href")
            if (
                state["result"].get("value") == "complete"
                and url["result"]["value"] != "about:blank"
            ):
                return
            await asyncio.sleep(0.05)

    await call("Page.enable")
    await call("Network.enable")
    for step in plan:
        if "lang" in step:
            await call("Network.setExtraHTTPHeaders", headers={"Accept-Language": step["lang"]})
            out: Any = step["lang"]
        elif "go" in step:
            await call("Page.navigate", url=step["go"])
            await asyncio.sleep(0.3)
            await loaded()
            out = await page_facts(call)
        elif "shot" in step:
            shot = await call("Page.captureScreenshot", format="png")
            data = base64.b64decode(shot["data"])
            path = Path(step["shot"])
            await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
            await asyncio.to_thread(path.write_bytes, data)
            out = len(data)
        elif "axe" in step:
            source = await asyncio.to_thread(Path(step["axe"]).read_text, "utf-8")
            await call("Runtime.evaluate", expression=source)
            res = await call(
                "Runtime.evaluate",
                expression=AXE_RUN,
                awaitPromise=True,
                returnByValue=True,
            )
            out = res["result"].get("value")
        elif "eval" in step:
            res = await call("Runtime.evaluate", expression=step["eval"], returnByValue=True)
            out = res["result"].get("value")
        elif "click_submit" in step:
            box, form, fields = step["click_submit"]
            js = ""
            if box:
                js += f"document.getElementById({json.dumps(box)}).click();"
            for name, value in fields.items():
                js += (
                    f"document.querySelector({json.dumps(form)}).elements[{json.dumps(name)}]"
                    f".value = {json.dumps(value)};"
                )
            js += f"document.querySelector({json.dumps(form)}).requestSubmit();"
            await call("Runtime.evaluate", expression=js)
            await asyncio.sleep(0.5)
            await loaded()
            out = await page_facts(call)
        elif "block" in step:
            # URLs the testbed cannot reach (no Internet): fail them at once.
            await call("Network.setBlockedURLs", urls=step["block"])
            out = step["block"]
        elif "submit_file" in step:
            # A value the test learns while the browser waits (a code sent by e-mail):
            # wait for the file, type its content into the field, submit.
            path, form, name = step["submit_file"]
            for _ in range(600):
                if await asyncio.to_thread(Path(path).exists):
                    break
                await asyncio.sleep(0.05)
            value = (await asyncio.to_thread(Path(path).read_text, "utf-8")).strip()
            js = (
                f"document.querySelector({json.dumps(form)}).elements[{json.dumps(name)}]"
                f".value = {json.dumps(value)};"
                f"document.querySelector({json.dumps(form)}).requestSubmit();"
            )
            await call("Runtime.evaluate", expression=js)
            await asyncio.sleep(0.5)
            await loaded()
            out = await page_facts(call)
        else:
            raise ValueError(step)
        print(json.dumps({"step": step, "out": out}), flush=True)


async def page_facts(call: Any) -> dict[str, Any]:
    js = (
        "JSON.stringify({url: location.href, lang: document.documentElement.lang,"
        " title: document.title, text: document.body ? document.body.innerText : ''})"
    )
    res = await call("Runtime.evaluate", expression=js)
    return dict(json.loads(res["result"]["value"]))


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
