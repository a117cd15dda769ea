"""The real NATS server with JetStream for the event-stream tests, and names no other test uses.

The server is `LOOPLINE_TEST_NATS_URL` (default nats://127.0.0.1:4222, JetStream on). Where it
cannot be reached the tests are skipped, except under `CI=true`, where they fail. Each test gets
its own subject prefix (so its own streams and consumers), deleted afterwards.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


def nats_connection():  # noqa: ANN201 - shared.ingestion.jetstream.Connection
    """A Connection to the test server, after checking it answers and has JetStream."""
    pytest.importorskip("nats")
    from shared.ingestion.jetstream import Connection

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
        reason = f"NATS with JetStream not reachable at {url}: {type(exc).__name__}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires NATS; {reason}", pytrace=False)
        pytest.skip(reason)
    return Connection(url)


@contextmanager
def fresh_topology(connection) -> Iterator[object]:  # noqa: ANN001
    """A Topology under a prefix of its own; its streams are deleted afterwards."""
    from shared.ingestion.jetstream import DLQ, DOCUMENTS, FRAMES, Topology, delete_streams

    topology = Topology(f"t{uuid.uuid4().hex[:12]}")
    try:
        yield topology
    finally:
        delete_streams(connection, topology, [DOCUMENTS, FRAMES, DLQ])
