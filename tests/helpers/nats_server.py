"""The real NATS server with JetStream for the event-stream tests, and names no other test uses.

The server is `LOOPLINE_TEST_NATS_URL` (default nats://127.0.0.1:4222, JetStream on). Where it
cannot be reached the tests are skipped, except under `CI=true`, where they fail. Each test gets
its own subject prefix (so its own streams and consumers), deleted afterwards. A test that
takes the server away mid-write starts a private `nats-server` of its own (`private_nats`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from evaluation.benchmarks.event_throughput import delete_streams
from shared.ingestion.jetstream import DLQ, DOCUMENTS, FRAMES, Connection, Topology, close_quietly, connect_once

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true requires NATS; {reason}", pytrace=False)
    pytest.skip(reason)


def nats_connection() -> Connection:
    """A Connection to the test server, after checking it answers and has JetStream."""
    url = os.environ.get("LOOPLINE_TEST_NATS_URL", DEFAULT_NATS_URL)

    async def check() -> None:
        import nats

        nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False, max_reconnect_attempts=0)
        try:
            await nc.jetstream().account_info()
        finally:
            await nc.close()

    try:
        asyncio.run(check())
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable"
        _missing(f"NATS with JetStream not reachable at {url}: {type(exc).__name__}: {exc}")
    return Connection(url)


@contextmanager
def fresh_topology(connection: Connection) -> Iterator[Topology]:
    """A Topology under a prefix of its own; its streams are deleted afterwards."""
    topology = Topology(f"t{uuid.uuid4().hex[:12]}")
    try:
        yield topology
    finally:
        delete_streams(connection, topology, [DOCUMENTS, FRAMES, DLQ])


def read_dead_letters(connection: Connection, topology: Topology, *, limit: int = 1000) -> list[dict[str, Any]]:
    """The messages on the dead-letter stream, oldest first: subject, data and headers."""

    async def go() -> list[dict[str, Any]]:
        import nats.js.errors

        nc = await connect_once(connection)
        try:
            js = nc.jetstream()
            try:
                info = await js.stream_info(topology.stream(DLQ))
            except nats.js.errors.NotFoundError:
                return []
            if not info.state.messages:
                return []
            out = []
            for seq in range(info.state.first_seq, min(info.state.last_seq, info.state.first_seq + limit - 1) + 1):
                try:
                    raw = await js.get_msg(topology.stream(DLQ), seq)
                except nats.js.errors.NotFoundError:
                    continue
                out.append({"subject": raw.subject, "data": raw.data, "headers": dict(raw.headers or {})})
            return out
        finally:
            await close_quietly(nc)

    return asyncio.run(go())


class PrivateNats:
    """A `nats-server -js` of this test's own on a free port, which the test may stop."""

    def __init__(self, binary: str, store: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(store)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nats-server did not listen on port {self.port} within 10 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@contextmanager
def private_nats(tmp_path: Path) -> Iterator[PrivateNats]:
    binary = shutil.which("nats-server")
    if binary is None:
        _missing("no nats-server on PATH (apt-get install nats-server)")
    server = PrivateNats(binary, tmp_path / "nats-store")
    try:
        yield server
    finally:
        server.stop()
