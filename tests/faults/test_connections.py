"""Slow headers, malformed requests and clients that hang up: bounded, in the envelope, and not logged as errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from embedserve.accounting.schema import api_keys, ledger
from embedserve.accounting.store import Store
from tests.faults.conftest import HEADER_TIMEOUT, KEYED_CREDITS, MAX_CONNECTIONS, KeyedServer

HANG_UPS = 30


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:  # closed with our unread bytes in its buffer: the kernel answers with a reset
        pass
    return b"".join(chunks)


def test_slow_headers_are_cut_off_and_cannot_starve_a_normal_request(keyed_server: KeyedServer) -> None:
    port = keyed_server.server.port
    with contextlib.ExitStack() as opened:  # the server closes its end; ours are closed here, reply or not
        slow = []
        for _ in range(MAX_CONNECTIONS + 10):  # more than the cap: the excess is refused at once
            sock = opened.enter_context(socket.create_connection(("127.0.0.1", port), timeout=HEADER_TIMEOUT + 10))
            sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n")  # and never the rest
            slow.append(sock)
        started = time.monotonic()
        replies = [_read_all(sock) for sock in slow]  # each ends when the server closes it
        cut_after = time.monotonic() - started
    refused = [r for r in replies if r.startswith(b"HTTP/1.1 503")]
    print(f"\n{len(slow)} slow-header connections: {len(refused)} refused at once, all closed within {cut_after:.2f}s")
    assert all(b'"too_many_connections"' in r for r in refused)
    assert not [r for r in replies if r and not r.startswith(b"HTTP/1.1 503")]
    assert cut_after < HEADER_TIMEOUT + 5, f"slow-header connections held {cut_after:.1f}s"
    health_started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert _read_all(sock).startswith(b"HTTP/1.1 200")
    assert time.monotonic() - health_started < 2
    assert "Traceback" not in keyed_server.server.log()


@pytest.mark.parametrize("length", [b"abc", b"-5", b"1, 2"])
def test_a_bad_content_length_is_a_400_in_the_envelope(keyed_server: KeyedServer, length: bytes) -> None:
    with socket.create_connection(("127.0.0.1", keyed_server.server.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\n{}")
        reply = _read_all(sock)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"application/json" in head, reply[:300]
    assert set(json.loads(body)["error"]) == {"message", "type", "param", "code"}


async def _hang_up(port: int, secret: str, body: bytes) -> None:
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.close()  # gone before the answer
    with contextlib.suppress(ConnectionError):  # the server may answer our hang-up with a reset
        await writer.wait_closed()


async def _ledger(data: Path, key_id: str) -> tuple[int, dict[str, int]]:
    store = Store(f"sqlite+aiosqlite:///{data / 'embedserve.db'}")
    try:
        async with store.begin() as conn:
            balance = (await conn.execute(sa.select(api_keys.c.credits).where(api_keys.c.id == key_id))).scalar()
            rows = await conn.execute(sa.select(ledger.c.status, sa.func.count()).group_by(ledger.c.status))
            counts = {status: n for status, n in rows}
    finally:
        await store.dispose()
    return int(balance or 0), counts


async def test_clients_that_hang_up_are_logged_as_499_not_errors(keyed_server: KeyedServer) -> None:
    body = json.dumps({"input": [f"text number {i} " * 8 for i in range(1500)]}).encode()
    before = keyed_server.server.log()
    started = time.monotonic()
    await asyncio.gather(*(_hang_up(keyed_server.server.port, keyed_server.secret, body) for _ in range(HANG_UPS)))
    while keyed_server.server.log()[len(before) :].count("POST /v1/embeddings") < HANG_UPS:
        assert time.monotonic() - started < 60, "the hung-up requests were not all dropped within 60 s"
        await asyncio.sleep(0.2)
    dropped_after = time.monotonic() - started
    log = keyed_server.server.log()[len(before) :]
    print(f"\n{HANG_UPS} hang-ups of 1,500-input requests: all dropped or answered within {dropped_after:.1f}s, "
          f"{log.count(' 499 ')} logged as 499")  # fmt: skip
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
    assert " 499 " in log, "no hang-up reached the server while its work was queued"
    balance, counts = await _ledger(keyed_server.data_dir, keyed_server.key_id)
    assert "reserved" not in counts
    assert balance == KEYED_CREDITS - await _charged_credits(keyed_server)


async def _charged_credits(keyed_server: KeyedServer) -> int:
    store = Store(f"sqlite+aiosqlite:///{keyed_server.data_dir / 'embedserve.db'}")
    try:
        async with store.begin() as conn:
            query = sa.select(sa.func.coalesce(sa.func.sum(ledger.c.credits), 0)).where(ledger.c.status == "charged")
            return int((await conn.execute(query)).scalar_one())
    finally:
        await store.dispose()
