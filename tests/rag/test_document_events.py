"""Document events from the real NATS JetStream into answers: create, update, delete and group
changes visible in `ask`; a crash before or after the write replays without loss or duplicate
chunks; poison events and refused links on the dead-letter subject and in the metadata store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nats_server import read_dead_letters

from rag.events import DocumentEvents, document_consumer, publish_document_events, report
from rag.service import RagService
from shared.auth import Principal
from shared.ingestion.jetstream import DOCUMENTS, Connection, JetStreamConsumer, Topology
from shared.objectstore import LocalObjectStore

PAT = Principal(name="pat")  # public only
HANA = Principal(name="hana", groups=["hr"])


def _consumer(svc: RagService, connection: Connection, topology: Topology, **kw) -> JetStreamConsumer:
    return document_consumer(svc, svc.settings, url=connection.url, topology=topology, nak_delay_s=0.2, **kw)


def _cited(svc: RagService, question: str, who: Principal) -> list[tuple[str, str]]:
    return [(c.source, c.text) for c in svc.ask(question, who).citations]


def _no_duplicate_chunks(svc: RagService) -> None:
    docs = svc.metadata.list_documents()
    assert svc.store.count() == sum(d.chunk_count for d in docs)
    for d in docs:
        assert svc.store.count(doc_id=d.id) == d.chunk_count > 0


def test_events_reach_answers_and_updates_deletes_and_group_changes_follow(make_service, connection, topology) -> None:
    svc = make_service()
    publish_document_events(
        connection,
        [
            ("handbook", {"id": "parking.md", "text": "# Parking\n\nVisitors park on level minus two of the garage."}),
            ("handbook", {"id": "pay.md", "text": "# Pay day\n\nSalaries are paid on the 25th.", "groups": ["hr"]}),
            ("handbook", {"id": "lunch.md", "text": "# Lunch\n\nLunch is served in the canteen from 11:30."}),
        ],
        topology=topology,
    )
    first = _consumer(svc, connection, topology)
    first.drain()
    assert {k: report(first)[k] for k in ("received", "acked", "added", "dead_lettered")} == {
        "received": 3,
        "acked": 3,
        "added": 3,
        "dead_lettered": 0,
    }
    assert any("minus two" in text for _, text in _cited(svc, "Where do visitors park?", PAT))
    assert all(source != "pay.md" for source, _ in _cited(svc, "When are salaries paid?", PAT))
    assert _cited(svc, "When are salaries paid?", HANA)[0][0] == "pay.md"
    assert svc.metadata.find_document("events:handbook", "parking.md") is not None

    publish_document_events(
        connection,
        [
            ("handbook", {"id": "parking.md", "text": "# Parking\n\nVisitors park on the roof."}),  # superseded below
            ("handbook", {"id": "parking.md", "text": "# Parking\n\nVisitors now park behind the north gate."}),
            ("handbook", {"id": "pay.md", "text": "# Pay day\n\nSalaries are paid on the 25th.", "groups": ["public"]}),
            ("handbook", {"op": "delete", "id": "lunch.md"}),
        ],
        topology=topology,
    )
    second = _consumer(svc, connection, topology)
    second.drain()
    out = report(second)
    assert (out["updated"], out["deleted"], out["added"], out["acked"]) == (2, 1, 0, 4)
    parking = " ".join(text for _, text in _cited(svc, "Where do visitors park?", PAT))
    assert "north gate" in parking and "minus two" not in parking and "roof" not in parking
    assert _cited(svc, "When are salaries paid?", PAT)[0][0] == "pay.md"  # readable by everyone now
    assert all(source != "lunch.md" for source, _ in _cited(svc, "When is lunch served?", PAT))
    assert svc.metadata.find_document("events:handbook", "lunch.md") is None
    _no_duplicate_chunks(svc)


@pytest.mark.parametrize("crash", ["before the write", "after the write, before the ack"])
def test_a_crash_replays_the_events_without_loss_or_duplicates(make_service, connection, topology, crash) -> None:
    svc = make_service()
    publish_document_events(
        connection,
        [
            ("wiki", {"id": "vpn", "text": "# VPN\n\nConnect to the VPN with the WireGuard profile from IT."}),
            ("wiki", {"id": "printer", "text": "# Printers\n\nThe printer on floor three is called Gutenberg."}),
        ],
        topology=topology,
    )
    consumer = _consumer(svc, connection, topology)
    events = consumer.handler
    assert isinstance(events, DocumentEvents)

    def crashing(batch):  # noqa: ANN001, ANN202
        if batch[0].attempt == 1:
            if crash.startswith("after"):
                events(batch)
            raise RuntimeError(f"process crashed {crash}")
        return events(batch)

    consumer.handler = crashing
    stats = consumer.drain()
    assert (stats.acked, stats.dead_lettered) == (2, 0)
    assert stats.retried == 2  # both redelivered
    assert events.totals.added == 2 and events.totals.updated == 0
    _no_duplicate_chunks(svc)
    assert len(svc.metadata.list_documents()) == 2
    assert any("Gutenberg" in text for _, text in _cited(svc, "What is the printer called?", PAT))


def test_a_failed_event_redelivered_after_a_newer_one_does_not_bring_back_the_old_text(
    make_service, connection, topology
) -> None:
    svc = make_service(nats_batch=1)  # one event per batch: the newer one is written while the older waits
    publish_document_events(
        connection,
        [
            ("wiki", {"id": "lockers", "text": "# Lockers\n\nLockers are on the ground floor."}),
            ("wiki", {"id": "lockers", "text": "# Lockers\n\nLockers moved to the second floor."}),
        ],
        topology=topology,
    )
    consumer = _consumer(svc, connection, topology)
    events = consumer.handler
    assert isinstance(events, DocumentEvents)

    def flaky(batch):  # noqa: ANN001, ANN202
        if "ground" in (batch[0].event.text or "") and batch[0].attempt == 1:
            raise ConnectionError("the index hiccupped")
        return events(batch)

    consumer.handler = flaky
    stats = consumer.drain()
    assert (stats.acked, stats.retried, events.totals.superseded) == (2, 1, 1)
    text = " ".join(t for _, t in _cited(svc, "Where are the lockers?", PAT))
    assert "second floor" in text and "ground floor" not in text


def test_events_of_a_stream_deleted_and_created_again_are_new_not_stale(make_service, connection, topology) -> None:
    from evaluation.benchmarks.event_throughput import delete_streams
    from shared.ingestion.jetstream import DLQ

    svc = make_service()
    publish_document_events(
        connection,
        [
            ("wiki", {"id": "lockers", "text": "# Lockers\n\nLockers are on the ground floor."}),
            ("wiki", {"id": "lockers", "text": "# Lockers\n\nLockers moved to the second floor."}),
        ],
        topology=topology,
    )
    consumer = _consumer(svc, connection, topology)  # one process throughout: it remembers sequence 2
    consumer.drain()
    delete_streams(connection, topology, [DOCUMENTS, DLQ])  # an operator's reset: sequences start at 1 again
    publish_document_events(
        connection,
        [("wiki", {"id": "lockers", "text": "# Lockers\n\nLockers are now in the basement."})],
        topology=topology,
    )
    stats = consumer.drain()
    assert (stats.received, stats.acked, consumer.handler.totals.superseded) == (3, 3, 0)
    text = " ".join(t for _, t in _cited(svc, "Where are the lockers?", PAT))
    assert "basement" in text and "second floor" not in text


def test_poison_events_and_refused_links_are_dead_lettered_with_field_and_reason(
    make_service, connection, topology, tmp_path: Path
) -> None:
    root = tmp_path / "shared-docs"
    root.mkdir()
    (root / "desk.md").write_text("# Desks\n\nHot desks are booked in the Deskly app.\n")
    objects = LocalObjectStore(tmp_path / "objects")
    objects.put("documents/guides/coffee.md", b"# Coffee\n\nThe espresso machine is descaled on Fridays.\n")
    objects.put("uploads/abc/secret.md", b"# Secret\n\nNot for events.\n")
    svc = make_service(ingest_roots=str(root))
    publish_document_events(
        connection,
        [
            ("ops", {"id": "no-content"}),
            ("ops", {"op": "replace", "id": "typo", "text": "x"}),
            ("ops", {"id": "blank", "text": "   "}),
            ("ops", {"id": "passwd", "link": "/etc/passwd"}),
            ("ops", {"id": "upload", "link": "object:../uploads/abc/secret.md"}),
            ("ops", {"id": "cafe", "text": "# Cafeteria\n\nThe cafeteria opens at eight in the morning."}),
            ("ops", {"id": "coffee", "link": "object:guides/coffee.md"}),
            ("ops", {"id": "desk", "link": str(root / "desk.md")}),
        ],
        topology=topology,
    )
    consumer = _consumer(svc, connection, topology, objects=objects)
    consumer.drain()
    out = report(consumer)
    assert (out["added"], out["acked"], out["dead_lettered"]) == (3, 3, 5)

    subject = topology.subject(DOCUMENTS, "ops")
    dlq = {json.loads(m["data"])["id"]: m for m in read_dead_letters(connection, topology)}
    assert set(dlq) == {"no-content", "typo", "blank", "passwd", "upload"}
    assert {m["subject"] for m in dlq.values()} == {topology.dlq_subject(subject)}
    fields = {k: m["headers"]["Loopline-Field"] for k, m in dlq.items()}
    assert fields == {"no-content": "link", "typo": "op", "blank": "text", "passwd": "link", "upload": "link"}
    assert "give `text` or `link`" in dlq["no-content"]["headers"]["Loopline-Reason"]
    assert "not under an ingest root" in dlq["passwd"]["headers"]["Loopline-Reason"]

    letters = {d.path: d for d in svc.metadata.dead_letters()}  # by event id, whoever refused it
    assert set(letters) == set(dlq) and {d.source for d in letters.values()} == {"events:ops"}
    assert "field 'op'" in letters["typo"].reason and "'upsert' or 'delete'" in letters["typo"].reason
    assert "no text" in letters["blank"].reason  # recorded by the ingest run, under the event's id
    assert letters["passwd"].run_id is not None
    assert "invalid object key" in letters["upload"].reason

    assert _cited(svc, "When does the cafeteria open?", PAT)[0][0] == "cafe"
    assert _cited(svc, "When is the espresso machine descaled?", PAT)[0][0] == "coffee"
    assert _cited(svc, "How do I book a hot desk?", PAT)[0][0] == "desk"
    _no_duplicate_chunks(svc)


def test_consume_events_drains_and_prints_the_counts_as_json(connection, topology, tmp_path: Path, monkeypatch) -> None:
    from click.testing import CliRunner

    from rag.event_cli import consume_events

    publish_document_events(
        connection,
        [
            ("faq", {"id": "wifi", "text": "# Wi-Fi\n\nThe guest network is called Lobby and needs no password."}),
            ("faq", {"id": "broken", "op": "upsert"}),
        ],
        topology=topology,
    )
    monkeypatch.setenv("LOOPLINE_HOME", str(tmp_path / "cli-home"))
    monkeypatch.setenv("LOOPLINE_NATS_PREFIX", topology.prefix)
    result = CliRunner().invoke(consume_events, ["--url", connection.url, "--json", "--groups", "staff"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert {k: out[k] for k in ("received", "added", "acked", "dead_lettered", "failed")} == {
        "received": 2,
        "added": 1,
        "acked": 1,
        "dead_lettered": 1,
        "failed": 0,
    }
    assert out["dead_letters"][0]["field"] == "link" and out["events_per_s"] > 0
    again = CliRunner().invoke(consume_events, ["--url", connection.url, "--json"])
    assert json.loads(again.stdout)["received"] == 0  # the durable consumer remembers what it took

    from rag.service import RagService
    from shared.config import Settings

    with RagService(Settings()) as svc:
        (doc,) = svc.metadata.list_documents()
        assert (doc.source, doc.path, list(doc.groups)) == ("events:faq", "wifi", ["staff"])


def test_the_serving_process_consumes_events_on_a_thread_until_stopped(make_service, connection, topology) -> None:
    import time

    from rag.events import background_consumer
    from shared.context import AppContext

    svc = make_service(nats_url=connection.url, nats_prefix=topology.prefix)
    ctx = AppContext.build(svc.settings, metadata=svc.metadata)
    try:
        events = background_consumer(ctx, svc)
        assert events is not None
        events.start()
        publish_document_events(
            connection,
            [("live", {"id": "badge", "text": "# Badges\n\nLost badges are replaced at reception."})],
            topology=topology,
        )
        deadline = time.monotonic() + 20
        while svc.metadata.find_document("events:live", "badge") is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _cited(svc, "Where do I get a new badge?", PAT)[0][0] == "badge"
        events.stop()
        events.join(5)
        assert not events.alive
    finally:
        ctx.close()


def test_a_password_in_the_nats_url_is_not_printed_when_the_server_is_unreachable(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    from click.testing import CliRunner

    from rag.event_cli import consume_events

    monkeypatch.setenv("LOOPLINE_HOME", str(tmp_path / "cli-home"))
    monkeypatch.setenv("LOOPLINE_NATS_URL", "nats://svc:hunter2-secret@127.0.0.1:1")  # nothing listens there
    result = CliRunner().invoke(consume_events, ["--json"])
    assert result.exit_code == 1
    assert "NATS at nats://svc:***@127.0.0.1:1 is not reachable" in result.output
    assert "hunter2-secret" not in result.output + caplog.text
