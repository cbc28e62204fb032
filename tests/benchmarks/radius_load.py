"""RADIUS accounting load generator (run as a process of its own by the benchmark).

    python -m tests.benchmarks.radius_load HOST PORT SECRET SESSIONS WINDOW NAS_ID

Sends, for each of SESSIONS sessions, a Start, an Interim-Update (with gigawords) and a
Stop, keeping WINDOW requests outstanding; a request without an answer after 2 s is
retransmitted unchanged (same Identifier and authenticator: the server may recognise
the duplicate), up to 3 times, then counted lost. Prints one JSON line: requests,
answered, lost, retransmissions, elapsed seconds, requests per second, p50/p99 latency
(first send to answer, in milliseconds). Packets are built before the clock starts.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
import time

from radius._codec import Attr, Code, accounting_authenticator, encode_int, sign_request

TIMEOUT_S = 2.0
RETRIES = 3


def build(secret: bytes, sessions: int, nas_id: str) -> list[bytes]:
    """Start, Interim, Stop of each session, Identifier patched in at send time."""
    now = int(time.time())
    out: list[bytes] = []
    for s in range(sessions):
        mac = f"02-{s >> 16 & 255:02X}-{s >> 8 & 255:02X}-{s & 255:02X}-00-01"
        base = [
            (Attr.ACCT_SESSION_ID, f"bench{s:08x}".encode()),
            (Attr.USER_NAME, b"visiteur"),
            (Attr.NAS_IDENTIFIER, nas_id.encode()),
            (Attr.NAS_IP_ADDRESS, bytes([127, 0, 0, 1])),
            (Attr.CALLING_STATION_ID, mac.encode()),
            (Attr.FRAMED_IP_ADDRESS, bytes([10, 1, s >> 8 & 255, s & 255])),
        ]
        for status, extra in (
            (1, []),
            (3, [(Attr.ACCT_INPUT_OCTETS, 1000), (Attr.ACCT_INPUT_GIGAWORDS, 1)]),
            (
                2,
                [
                    (Attr.ACCT_INPUT_OCTETS, 5000),
                    (Attr.ACCT_INPUT_GIGAWORDS, 1),
                    (Attr.ACCT_TERMINATE_CAUSE, 1),
                ],
            ),
        ):
            attrs = [(int(Attr.ACCT_STATUS_TYPE), encode_int(status)), *base]
            attrs += [(int(t), encode_int(v)) for t, v in extra]
            attrs.append((int(Attr.EVENT_TIMESTAMP), encode_int(now)))
            out.append(
                sign_request(
                    Code.ACCOUNTING_REQUEST, 0, attrs, secret, with_message_authenticator=False
                )
            )
    return out


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, waiting: dict[int, asyncio.Future[float]]) -> None:
        self.waiting = waiting

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        fut = self.waiting.pop(data[1], None) if len(data) >= 20 else None
        if fut is not None and not fut.done():
            fut.set_result(time.perf_counter())


async def run(
    host: str, port: int, secret: bytes, sessions: int, window: int, nas_id: str
) -> dict[str, float]:
    templates = build(secret, sessions, nas_id)
    loop = asyncio.get_running_loop()
    # One socket per 200 outstanding requests: Identifiers are unique per socket.
    n_sockets = max(1, -(-window // 200))
    waiting: list[dict[int, asyncio.Future[float]]] = [{} for _ in range(n_sockets)]
    transports = []
    for i in range(n_sockets):
        t, _ = await loop.create_datagram_endpoint(
            functools.partial(_Proto, waiting[i]), remote_addr=(host, port)
        )
        transports.append(t)
    latencies: list[float] = []
    stats = {"lost": 0, "retransmissions": 0}
    free: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
    for s in range(n_sockets):
        for ident in range(256):
            free.put_nowait((s, ident))
    sem = asyncio.Semaphore(window)

    async def one(template: bytes) -> None:
        async with sem:
            sock, ident = await free.get()
            # The authenticator covers the Identifier: re-sign with this one.
            raw = bytearray(template)
            raw[1] = ident
            raw[4:20] = bytes(16)
            raw[4:20] = accounting_authenticator(bytes(raw), secret)
            data = bytes(raw)
            start = time.perf_counter()
            try:
                for attempt in range(RETRIES + 1):
                    fut: asyncio.Future[float] = loop.create_future()
                    waiting[sock][ident] = fut
                    if attempt:
                        stats["retransmissions"] += 1
                    transports[sock].sendto(data)
                    try:
                        async with asyncio.timeout(TIMEOUT_S):
                            done = await fut
                        latencies.append(done - start)
                        return
                    except TimeoutError:
                        continue
                stats["lost"] += 1
            finally:
                waiting[sock].pop(ident, None)
                free.put_nowait((sock, ident))

    started = time.perf_counter()

    # Sessions in order: Start, Interim, Stop of one session go out one after the other.
    async def session(i: int) -> None:
        for k in range(3):
            await one(templates[3 * i + k])

    await asyncio.gather(*(session(i) for i in range(sessions)))
    elapsed = time.perf_counter() - started
    for t in transports:
        t.close()
    latencies.sort()

    def pct(p: float) -> float:
        return (
            1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else 0.0
        )

    return {
        "requests": len(templates),
        "answered": len(latencies),
        "lost": stats["lost"],
        "retransmissions": stats["retransmissions"],
        "elapsed_s": elapsed,
        "rps": len(latencies) / elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
    }


def main() -> None:
    host, port, secret, sessions, window, nas_id = sys.argv[1:7]
    result = asyncio.run(run(host, int(port), secret.encode(), int(sessions), int(window), nas_id))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
