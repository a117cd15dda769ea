"""The JetStream consumer against the real NATS server: acknowledged after the write, redelivered
after a failure or a death, poison and exhausted messages on the dead-letter subject and in the
metadata store, stopping cleanly."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import Counter

import pytest
from nats_server import private_nats, read_dead_letters
from pydantic import BaseModel, Field

from shared.ingestion.jetstream import (
    DLQ,
    DOCUMENTS,
    Connection,
    ConsumerSpec,
    ConsumerThread,
    Delivery,
    JetStreamConsumer,
    Rejection,
    StreamUnavailable,
    Topology,
    publish,
)


class Note(BaseModel):
    id: str
    n: int = Field(ge=0)


def _send(connection: Connection, topology: Topology, *bodies: bytes | dict, source: str = "notes") -> None:
    raw = [b if isinstance(b, bytes) else json.dumps(b).encode() for b in bodies]
    publish(
        connection, [(topology.subject(DOCUMENTS, source), b, None) for b in raw], topology=topology, kinds=[DOCUMENTS]
    )


def _consumer(connection, topology, handler, store=None, **spec) -> JetStreamConsumer[Note]:  # noqa: ANN001
    opts = {"attempts": 3, "ack_wait_s": 5.0, "nak_delay_s": 0.2, "batch": 16} | spec
    return JetStreamConsumer(
        connection,
        ConsumerSpec(DOCUMENTS, "notes", topology=topology, **opts),
        Note,
        handler,
        dead_letters=store,
        source_of=lambda subject: f"events:{topology.name_of(DOCUMENTS, subject)}",
        key_of=lambda data: data.get("id"),
    )


def _unacknowledged(connection: Connection, topology: Topology) -> int:
    """What the server counts as delivered and not yet acknowledged, asked over a connection of its own."""

    async def ask() -> int:
        import nats

        nc = await nats.connect(connection.url)
        try:
            info = await nc.jetstream().consumer_info(topology.stream(DOCUMENTS), "notes")
            return info.num_ack_pending
        finally:
            await nc.close()

    return asyncio.run(ask())


class Writes:
    """The handler's 'database': what it wrote, and how often each note was written."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()
        self.attempts: dict[str, list[int]] = {}

    def write(self, batch: list[Delivery[Note]]) -> None:
        for d in batch:
            self.count[d.event.id] += 1
            self.attempts.setdefault(d.event.id, []).append(d.attempt)


def test_messages_are_acknowledged_only_after_the_handler_wrote_them(connection, topology) -> None:
    _send(connection, topology, *({"id": f"n{i}", "n": i} for i in range(5)))
    writes = Writes()
    seen_unacked: list[int] = []

    def handler(batch: list[Delivery[Note]]) -> None:
        seen_unacked.append(_unacknowledged(connection, topology))  # during the write: nothing acknowledged yet
        writes.write(batch)

    stats = _consumer(connection, topology, handler).drain()
    assert seen_unacked == [5]
    assert _unacknowledged(connection, topology) == 0
    assert writes.count == {f"n{i}": 1 for i in range(5)}
    assert (stats.received, stats.acked, stats.retried, stats.dead_lettered) == (5, 5, 0, 0)


def test_a_failed_write_is_redelivered_and_written_once(connection, topology) -> None:
    _send(connection, topology, *({"id": f"n{i}", "n": i} for i in range(4)))
    writes = Writes()

    def handler(batch: list[Delivery[Note]]) -> None:
        if any(d.event.id == "n2" and d.attempt == 1 for d in batch):
            raise ConnectionError("the index is not answering")  # before anything is written
        writes.write(batch)

    stats = _consumer(connection, topology, handler).drain()
    assert writes.count == {"n0": 1, "n1": 1, "n2": 1, "n3": 1}  # its batch-mates went on, one by one
    assert writes.attempts["n2"] == [2]
    assert (stats.retried, stats.dead_lettered) == (1, 0)
    assert read_dead_letters(connection, topology) == []


def test_messages_of_a_consumer_that_died_mid_batch_come_back(connection, topology) -> None:
    _send(connection, topology, {"id": "a", "n": 1}, {"id": "b", "n": 2})

    def dies(batch: list[Delivery[Note]]) -> None:
        raise SystemExit("killed between reading and writing")

    with pytest.raises(SystemExit):
        _consumer(connection, topology, dies, ack_wait_s=1.0).drain()
    writes = Writes()
    t0 = time.monotonic()
    stats = _consumer(connection, topology, writes.write, ack_wait_s=1.0).drain()
    assert writes.count == {"a": 1, "b": 1}
    assert writes.attempts == {"a": [2], "b": [2]}  # redelivered once ack_wait passed, nothing lost
    assert stats.acked == 2 and time.monotonic() - t0 < 10


def test_poison_messages_go_to_the_dead_letter_subject_and_the_store(connection, topology, sqlite_store) -> None:
    _send(
        connection,
        topology,
        b"not json at all",
        {"id": "neg", "n": -1},
        {"id": "refused", "n": 3},
        {"id": "fine", "n": 4},
        source="hr",
    )
    writes = Writes()

    def handler(batch: list[Delivery[Note]]) -> dict[int, Rejection]:
        writes.write([d for d in batch if d.event.id == "fine"])
        return {d.stream_seq: Rejection("over the limit", field="n") for d in batch if d.event.id == "refused"}

    stats = _consumer(connection, topology, handler, store=sqlite_store).drain()
    assert writes.count == {"fine": 1}
    assert (stats.acked, stats.dead_lettered) == (1, 3)

    original = topology.subject(DOCUMENTS, "hr")
    dlq = read_dead_letters(connection, topology)
    assert [m["subject"] for m in dlq] == [topology.dlq_subject(original)] * 3
    by_data = {m["data"]: m["headers"] for m in dlq}
    assert by_data[b"not json at all"]["Loopline-Field"] == "<message>"
    negative = by_data[json.dumps({"id": "neg", "n": -1}).encode()]
    assert negative["Loopline-Field"] == "n"
    assert "greater than or equal to 0" in negative["Loopline-Reason"]
    assert negative["Loopline-Subject"] == original
    assert by_data[json.dumps({"id": "refused", "n": 3}).encode()]["Loopline-Reason"] == "over the limit"

    # Recorded under the event's id where the message names one, else where it lies in the stream.
    letters = {d.path: d for d in sqlite_store.dead_letters()}
    not_json = by_data[b"not json at all"]["Loopline-Stream-Seq"]
    assert set(letters) == {f"{topology.stream(DOCUMENTS)}#{not_json}", "neg", "refused"}
    assert {d.source for d in letters.values()} == {"events:hr"}
    assert "field 'n'" in letters["neg"].reason and topology.dlq_subject(original) in letters["neg"].reason


def test_a_message_failing_every_delivery_goes_to_the_dead_letter_subject(connection, topology, sqlite_store) -> None:
    _send(connection, topology, {"id": "ok", "n": 1}, {"id": "bad", "n": 7})
    tries: list[int] = []
    writes = Writes()

    def handler(batch: list[Delivery[Note]]) -> None:
        for d in batch:
            if d.event.id == "bad":
                tries.append(d.attempt)
                raise ValueError("cannot be parsed")
        writes.write(batch)

    stats = _consumer(connection, topology, handler, store=sqlite_store, attempts=3).drain()
    assert tries == [1, 1, 2, 3]  # in its batch, then alone; redelivered; the third is the last
    assert writes.count == {"ok": 1}
    (dead,) = read_dead_letters(connection, topology)
    assert dead["headers"]["Loopline-Deliveries"] == "3"
    assert dead["headers"]["Loopline-Reason"] == "failed on all 3 attempts; the last: ValueError: cannot be parsed"
    (letter,) = sqlite_store.dead_letters()
    assert letter.reason.startswith("failed on all 3 attempts")
    assert stats.dead_lettered == 1 and _unacknowledged(connection, topology) == 0


def test_a_last_attempt_that_never_finished_is_dead_lettered(connection, topology, sqlite_store) -> None:
    _send(connection, topology, {"id": "x", "n": 1})

    def dies(batch: list[Delivery[Note]]) -> None:
        raise SystemExit("killed")

    with pytest.raises(SystemExit):
        _consumer(connection, topology, dies, attempts=1, ack_wait_s=1.0).drain()
    writes = Writes()
    stats = _consumer(connection, topology, writes.write, store=sqlite_store, attempts=1, ack_wait_s=1.0).drain()
    assert writes.count == {}  # not tried a second time: its one attempt is spent
    assert stats.dead_lettered == 1
    (dead,) = read_dead_letters(connection, topology)
    assert "without being acknowledged" in dead["headers"]["Loopline-Reason"]


def test_a_following_consumer_takes_new_messages_and_stops_when_asked(connection, topology) -> None:
    writes = Writes()
    got = threading.Event()

    def handler(batch: list[Delivery[Note]]) -> None:
        writes.write(batch)
        got.set()

    runner = ConsumerThread(_consumer(connection, topology, handler), name="test-follow").start()
    _send(connection, topology, {"id": "live", "n": 1})
    assert got.wait(15)
    assert runner.state == "consuming"
    t0 = time.monotonic()
    runner.stop()
    runner.join(10)
    assert not runner.alive and time.monotonic() - t0 < 5
    assert runner.state == "stopped"
    assert writes.count == {"live": 1}


def test_an_unreachable_server_is_waited_for_while_following_and_refused_when_draining(topology) -> None:
    nowhere = Connection("nats://127.0.0.1:1")  # nothing listens there
    consumer = _consumer(nowhere, topology, Writes().write)
    with pytest.raises(StreamUnavailable, match="not reachable"):
        consumer.drain()
    runner = ConsumerThread(_consumer(nowhere, topology, Writes().write), name="test-wait").start()
    time.sleep(1.0)
    assert runner.alive and runner.state == "connecting"  # still trying, not crashed
    runner.stop()
    runner.join(5)
    assert not runner.alive


def test_sigterm_ends_a_follow_in_the_main_thread_after_the_batch_in_hand(connection, topology) -> None:
    import os
    import signal

    from shared.ingestion.jetstream import run_until_signalled

    _send(connection, topology, {"id": "last", "n": 1})
    writes = Writes()

    def handler(batch: list[Delivery[Note]]) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while this write runs
        time.sleep(0.3)
        writes.write(batch)

    before = signal.getsignal(signal.SIGTERM)
    stats = run_until_signalled(_consumer(connection, topology, handler), follow=True)
    assert writes.count == {"last": 1} and stats.acked == 1  # finished and acknowledged, then stopped
    assert _unacknowledged(connection, topology) == 0
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_write_longer_than_ack_wait_is_not_handed_to_another_consumer_while_it_runs(connection, topology) -> None:
    _send(connection, topology, {"id": "slow", "n": 1})
    writes = Writes()
    taken_over: list[bytes] = []

    async def other_worker_fetches() -> None:
        import nats

        nc = await nats.connect(connection.url)
        try:
            sub = await nc.jetstream().pull_subscribe_bind(durable="notes", stream=topology.stream(DOCUMENTS))
            taken_over.extend(m.data for m in await sub.fetch(1, timeout=1.0))
        except TimeoutError:
            pass
        finally:
            await nc.close()

    def slow(batch: list[Delivery[Note]]) -> None:
        time.sleep(1.5)  # past the ack wait: the consumer has been telling the server it is in progress
        asyncio.run(other_worker_fetches())
        writes.write(batch)

    stats = _consumer(connection, topology, slow, ack_wait_s=1.0).drain()
    assert taken_over == []
    assert writes.attempts == {"slow": [1]} and (stats.acked, stats.retried) == (1, 0)


def test_a_password_in_the_server_url_never_shows_in_errors_states_or_logs(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    secret = Connection("nats://alice:s3cret-pw@127.0.0.1:1,nats://bob:0ther-pw@127.0.0.1:2")  # nothing listens
    topology = Topology("tsecret")
    with pytest.raises(StreamUnavailable) as refused:
        _consumer(secret, topology, Writes().write).drain()
    assert "nats://alice:***@127.0.0.1:1,nats://bob:***@127.0.0.1:2 is not reachable" in str(refused.value)
    runner = ConsumerThread(_consumer(secret, topology, Writes().write), name="test-secret").start()
    time.sleep(1.0)
    states = [runner.state]
    runner.stop()
    runner.join(5)
    shown = " ".join([str(refused.value), repr(secret), *states, caplog.text])
    assert "s3cret-pw" not in shown and "0ther-pw" not in shown
    assert "alice:***@127.0.0.1:1" in caplog.text  # the log still says where it tried


def test_a_following_consumer_that_cannot_connect_keeps_retrying_and_says_why() -> None:
    # nats-py refuses this list at once (not a server that is down, which it waits for):
    # the thread used to die of it, leaving no consumer and nothing in readiness but "stopped".
    mixed = Connection("nats://127.0.0.1:1,ws://127.0.0.1:2")
    runner = ConsumerThread(_consumer(mixed, Topology("tmixed"), Writes().write), name="test-mixed").start()
    deadline = time.monotonic() + 10
    while not runner.state.startswith("retrying") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runner.alive and runner.state.startswith("retrying: StreamUnavailable")
    assert "mixing of websocket and non websocket URLs" in runner.state
    runner.stop()
    runner.join(5)
    assert not runner.alive


def test_a_dead_letter_that_cannot_be_published_is_recorded_and_terminated_on_its_last_delivery(
    connection, topology, sqlite_store, caplog
) -> None:
    async def tiny_dead_letter_stream() -> None:  # an operator's DLQ stream that refuses every message
        import nats
        from nats.js.api import StreamConfig

        nc = await nats.connect(connection.url)
        try:
            config = StreamConfig(name=topology.stream(DLQ), subjects=[topology.subjects(DLQ)], max_msg_size=1)
            await nc.jetstream().add_stream(config)
        finally:
            await nc.close()

    asyncio.run(tiny_dead_letter_stream())
    _send(connection, topology, {"id": "neg", "n": -1})
    t0 = time.monotonic()
    stats = _consumer(connection, topology, Writes().write, store=sqlite_store, attempts=1).drain()
    assert time.monotonic() - t0 < 5  # not waiting for a message that is never coming back
    assert (stats.dead_lettered, stats.retried) == (1, 1)  # given back once, then terminated
    assert _unacknowledged(connection, topology) == 0
    assert _consumer(connection, topology, Writes().write).drain().received == 0  # not stuck in the stream
    (letter,) = sqlite_store.dead_letters()  # recorded once, with the schema's reason
    assert letter.path == "neg" and "field 'n'" in letter.reason
    assert read_dead_letters(connection, topology) == []
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("terminated all the same" in e and f"dead letter #{letter.id}" in e for e in errors)


def test_a_write_whose_server_went_away_is_finished_before_its_messages_are_touched_again(tmp_path) -> None:
    with private_nats(tmp_path) as server:
        own = Connection(server.url)
        topology = Topology("tgone")
        _send(own, topology, {"id": "a", "n": 1}, {"id": "b", "n": 2})
        writes = Writes()
        running, most = [0], [0]
        lock = threading.Lock()

        def handler(batch: list[Delivery[Note]]) -> None:
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            server.stop()  # NATS goes away while the write runs past the ack deadline
            time.sleep(2.0)
            writes.write(batch)
            with lock:
                running[0] -= 1

        with pytest.raises(StreamUnavailable):  # the acknowledgements cannot be sent
            _consumer(own, topology, handler, ack_wait_s=1.0).drain()
    assert most[0] == 1  # never a second write of the same messages beside the first
    assert writes.count == {"a": 1, "b": 1}


def test_a_following_consumer_binds_again_to_a_stream_deleted_and_created_again(connection, topology) -> None:
    from evaluation.benchmarks.event_throughput import delete_streams

    seen: list[Delivery[Note]] = []
    runner = ConsumerThread(_consumer(connection, topology, seen.extend), name="test-rebind").start()
    try:
        _send(connection, topology, {"id": "before", "n": 1})
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.05)
        delete_streams(connection, topology, [DOCUMENTS, DLQ])  # takes the durable consumer with it
        _send(connection, topology, {"id": "after", "n": 2})
        deadline = time.monotonic() + 20
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        runner.stop()
        runner.join(5)
    before, after = seen
    assert (before.event.id, after.event.id) == ("before", "after")
    assert before.stream_seq == after.stream_seq == 1  # numbered anew: only the incarnation tells them apart
    assert None not in (before.stream_created, after.stream_created)
    assert before.stream_created != after.stream_created
