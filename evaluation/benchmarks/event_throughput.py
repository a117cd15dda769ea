"""Events/s of document events through NATS JetStream: published, then drained with embedding.

The freshness benchmark's `events` part (evaluation/benchmarks/freshness.py). It runs under a
subject prefix of its own whose streams it deletes afterwards, so it never meets a deployment's
streams or consumers. What it does not do: start NATS (StreamUnavailable, a ConnectionError,
when it does not answer).
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rag.events import document_consumer, publish_document_events, report
from shared.ingestion.jetstream import DLQ, DOCUMENTS, Connection, Topology, close_quietly, connect_once

if TYPE_CHECKING:
    from rag.service import RagService


def measure_event_throughput(
    service: RagService, url: str, docs: Sequence[tuple[str, str]], events: int, *, source: str = "bench"
) -> dict[str, Any]:
    """Publish `events` upserts of new ids (cycling through the (title, text) `docs`), then drain
    them through the durable consumer with embedding and time it: the benchmark's events/s."""
    connection = Connection(url)
    topology = Topology(f"bench{uuid.uuid4().hex[:10]}")
    pairs = itertools.islice(itertools.cycle(docs), events)
    try:
        t0 = time.perf_counter()
        publish_document_events(
            connection,
            ((source, {"id": f"event-{i}", "title": title, "text": text}) for i, (title, text) in enumerate(pairs)),
            topology=topology,
        )
        published_s = time.perf_counter() - t0
        consumer = document_consumer(service, service.settings, url=url, topology=topology)
        consumer.drain()
    finally:
        delete_streams(connection, topology, [DOCUMENTS, DLQ])
    out = report(consumer)
    return {
        "events": events,
        "publish_s": round(published_s, 3),
        "drain_s": out["seconds"],
        "events_per_s": out["events_per_s"],
        "batch": consumer.spec.batch,
        **{k: out[k] for k in ("acked", "added", "chunks", "retried", "dead_lettered")},
    }


def delete_streams(connection: Connection, topology: Topology, kinds: Sequence[str]) -> None:
    """Delete the streams `PREFIX_KIND` (with their consumers) where they exist: a run's own, and tests'."""

    async def go() -> None:
        import nats.js.errors

        nc = await connect_once(connection)
        try:
            js = nc.jetstream()
            for kind in kinds:
                try:
                    await js.delete_stream(topology.stream(kind))
                except nats.js.errors.NotFoundError:
                    pass
        finally:
            await close_quietly(nc)

    asyncio.run(go())
