"""Event streams from NATS JetStream: a durable pull consumer handing validated batches to a handler.

Delivery is at least once, so handlers must be idempotent (the ingestion core is: change
detection by content hash, stable ids). A message is acknowledged only after the handler
returned, i.e. after its write; a handler that raises gets its messages nak'ed and redelivered
after a short delay (a failing batch is first retried one message at a time, so one poison
event does not take its batch-mates down); a process that dies mid-batch gets them redelivered
after `ack_wait`. A message that does not decode or fit its schema, that the handler rejects,
or that failed on its last allowed attempt is recorded as a dead letter in the metadata store,
goes to the dead-letter subject `PREFIX.dlq.SUBJECT` (its bytes unchanged, `Loopline-*` headers
naming the reason, the field and the original subject), and is terminated.

The consumer's server-side `max_deliver` is one more than the attempts the handler gets: a
message whose last attempt never finished (the process died) comes back once more and goes
straight to the dead-letter subject, so every message ends acknowledged or dead-lettered. A
dead letter that cannot be published to its subject is given back and published again on a
later delivery; on its last delivery it is terminated all the same, its record in the metadata
store (an error in the log says so). Only where it could be neither recorded nor published does
it stay unacknowledged in the stream.

nats-py is asynchronous; this module runs it on an event loop of its own and offers a
synchronous API (`drain`, `follow`, `ConsumerThread`) for the CLI and for `loopline serve`'s
background thread. A NATS outage delays, never loses: the client reconnects forever while
following, and unacknowledged messages stay in the stream. What this module does not do: know
what an event means (the vertical's schema and handler) or handle two batches at once. Server
URLs are shown with their passwords masked (shared/redact.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import signal
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from shared.ingestion.pipeline import Cancelled
from shared.ingestion.schema import SchemaError, validate_record
from shared.metadata.store import MetadataStore
from shared.redact import masked_text, masked_url

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

DOCUMENTS = "documents"
FRAMES = "frames"
DLQ = "dlq"
FETCH_WAIT_S = 1.0  # a fetch returns after this when nothing comes: how soon a stop is noticed
BOUND_CHECK_S = 5.0  # following and idle, how often the durable consumer is looked for (a deleted stream takes it)
DRAIN_WAIT_S = 0.25  # the same while draining: how soon an empty consumer is noticed
RECONNECT_WAIT_S = 2.0
MAX_RETRY_WAIT_S = 30.0  # following, a consumer that keeps failing to start tries at least this often
HEADER_MAX = 1000  # characters of a reason kept in a dead letter's header
DLQ_PUBLISH_TRIES = 3  # a dead letter's publish, tried at once before the message is given back
RECORDED_MAX = 10_000  # dead letters this consumer remembers recording (not twice when one comes back)
_PREFIX = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_DURABLE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class StreamUnavailable(ConnectionError):
    """NATS or its JetStream cannot be used; the message says what to start or set."""


def require_client() -> None:
    """Fail at once, naming the install, where the NATS client is missing (not later on a thread)."""
    try:
        import nats  # noqa: F401
    except ImportError as exc:
        raise StreamUnavailable(
            f"consuming from NATS needs nats-py, which is not installed here ({exc}): pip install 'loopline[rag]' "
            "(or 'loopline[vision]')"
        ) from exc


# --- names ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Topology:
    """Stream and subject names under one prefix (`loopline`): deployments sharing a NATS
    server, and tests, keep apart by prefix. `PREFIX.KIND.NAME` is a subject (the name is the
    document source or the device), `PREFIX_KIND` its stream, `PREFIX.dlq.SUBJECT` its dead letters."""

    prefix: str = "loopline"

    def __post_init__(self) -> None:
        if not _PREFIX.match(self.prefix):
            raise ValueError(f"NATS subject prefix {self.prefix!r}: use letters, digits, '_', '-' and dots between")

    def subjects(self, kind: str) -> str:
        return f"{self.prefix}.{kind}.>"

    def subject(self, kind: str, name: str) -> str:
        return f"{self.prefix}.{kind}.{name}"

    def stream(self, kind: str) -> str:
        return re.sub(r"[^A-Za-z0-9_-]", "_", f"{self.prefix}_{kind}").upper()

    def name_of(self, kind: str, subject: str) -> str:
        """The last part of a subject (`hr` of `loopline.documents.hr`); the subject itself if it is not ours."""
        head = f"{self.prefix}.{kind}."
        return subject[len(head) :] if subject.startswith(head) else subject

    def dlq_subject(self, subject: str) -> str:
        return f"{self.prefix}.{DLQ}.{subject}"

    def durable(self, role: str) -> str:
        """The default durable consumer name of a role (`loopline-rag-documents`)."""
        return re.sub(r"[^A-Za-z0-9_-]", "_", f"{self.prefix}-{role}")[:64]


@dataclass(frozen=True)
class ConsumerSpec:
    """One durable consumer of one kind of subject, and how hard it tries."""

    kind: str
    durable: str
    attempts: int = 5  # handler tries of a message before it is dead-lettered
    ack_wait_s: float = 60.0  # an unacknowledged delivery comes back after this (the handler's progress extends it)
    batch: int = 64
    nak_delay_s: float = 2.0  # a failed message comes back after this
    topology: Topology = field(default_factory=Topology)

    def __post_init__(self) -> None:
        if not _DURABLE.match(self.durable):
            raise ValueError(f"durable consumer name {self.durable!r}: 1 to 64 letters, digits, '_' or '-'")
        if self.attempts < 1 or self.batch < 1 or self.ack_wait_s <= 0 or self.nak_delay_s < 0:
            raise ValueError("attempts and batch must be at least 1, ack_wait_s positive, nak_delay_s not negative")


@dataclass(frozen=True)
class Connection:
    """Where the NATS server is and how to log in (a `.creds` file; user and password may be in the URL)."""

    url: str = field(repr=False)
    credentials: Path | None = None
    name: str = "loopline"

    @property
    def display(self) -> str:
        """The URL as logs and errors show it: passwords (and NATS tokens) masked."""
        return masked_url(self.url)

    def __repr__(self) -> str:
        return f"Connection(url={self.display!r}, credentials={self.credentials!r}, name={self.name!r})"

    def options(self, *, reconnect: bool) -> dict[str, Any]:
        opts: dict[str, Any] = {
            "servers": [u.strip() for u in self.url.split(",") if u.strip()],
            "name": self.name,
            "connect_timeout": 3,
            "allow_reconnect": reconnect,
            # Not reconnecting: one more try after half a second, then NoServersError (0 would try forever).
            "max_reconnect_attempts": -1 if reconnect else 1,
            "reconnect_time_wait": RECONNECT_WAIT_S if reconnect else 0.5,
        }
        if self.credentials is not None:
            opts["user_credentials"] = str(self.credentials)
        return opts


def from_settings(settings: Any, url: str | None = None) -> tuple[Connection, Topology]:
    """The server (`url`, else LOOPLINE_NATS_URL) and the names (LOOPLINE_NATS_PREFIX) of a deployment."""
    url = url or settings.nats_url
    if not url:
        raise StreamUnavailable("no NATS server configured: set LOOPLINE_NATS_URL (or pass --url)")
    return Connection(url, settings.nats_credentials_file), Topology(settings.nats_prefix)


# --- what a handler sees and answers -------------------------------------------------------
@dataclass(frozen=True)
class Delivery(Generic[M]):
    """One valid message: its subject, the last part of it (`name`), the event, where it is."""

    subject: str
    name: str
    event: M
    stream: str
    stream_seq: int
    attempt: int  # 1 on the first delivery
    # When the stream was created: its incarnation. A stream deleted and created again numbers
    # from 1 again, so sequences compare only within one incarnation. None where not known.
    stream_created: datetime | None = None

    @property
    def ref(self) -> str:
        """Where the message can be read again: `STREAM#SEQ` (`nats stream get STREAM SEQ`)."""
        return f"{self.stream}#{self.stream_seq}"


@dataclass(frozen=True)
class Rejection:
    """A message the handler will never take; it is dead-lettered instead of acknowledged.

    `recorded`: the handler's ingest run already recorded it as a dead letter (not twice).
    `cleanup`: runs (on a worker thread) once the message is terminated, i.e. dead-lettered for
    good and not on a retryable failure: removing what only it referenced."""

    reason: str
    field: str = ""
    recorded: bool = False
    cleanup: Callable[[], None] | None = dataclasses.field(default=None, compare=False, repr=False)


Handler = Callable[[list[Delivery[M]]], Mapping[int, Rejection] | None]
"""Takes a batch, writes it, returns the rejected messages by stream sequence (or None).
Raising means "try again": the batch is retried message by message, then redelivered."""


@dataclass
class ConsumeStats:
    """What a consumer did; `seconds` is the time spent consuming."""

    received: int = 0
    acked: int = 0
    retried: int = 0  # nak'ed for a later redelivery
    dead_lettered: int = 0
    batches: int = 0
    seconds: float = 0.0
    dead_letters: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["seconds"] = round(self.seconds, 3)
        return out


# --- the consumer ----------------------------------------------------------------------------
class JetStreamConsumer(Generic[M]):
    """A durable pull consumer of `spec.kind` subjects, validating messages with `model`.

    `dead_letters` records what is dead-lettered: its source is `source_of(subject)`, its path
    the event's id where the message decodes far enough to have one (`key_of` of its JSON
    object, also when the schema refuses the rest), else `STREAM#SEQ` (where it can be read
    again). `on_stop` runs when `stop()` is called (cancel a running write).
    """

    def __init__(
        self,
        connection: Connection,
        spec: ConsumerSpec,
        model: type[M],
        handler: Handler[M],
        *,
        dead_letters: MetadataStore | None,
        source_of: Callable[[str], str] = lambda subject: subject,
        key_of: Callable[[Any], str | None] | None = None,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        require_client()
        self.connection = connection
        self.spec = spec
        self.model = model
        self.handler = handler
        self.dead_letters = dead_letters
        self.source_of = source_of
        self.key_of = key_of
        self.on_stop = on_stop
        self.stats = ConsumeStats()
        self.attempts = spec.attempts  # the consumer's own, once read from the server
        self._ack_wait_s = spec.ack_wait_s
        self._max_deliver = spec.attempts + 1  # the server's: the last delivery a message gets (-1: no limit)
        self._stream_created: datetime | None = None
        # (stream incarnation, STREAM#SEQ) → the dead letter recorded for it: not twice when it comes back
        self._recorded: OrderedDict[tuple[datetime | None, str], int] = OrderedDict()
        self.state = "not started"  # for readiness: connecting, consuming, retrying: WHY, stopped
        self._stop = threading.Event()
        self._closing = threading.Event()  # set while closing the connection: its disconnect is no news

    # --- the synchronous API ------------------------------------------------------------------
    def drain(self, *, settle_s: float | None = None) -> ConsumeStats:
        """Consume what is pending, then return. Messages waiting for a redelivery are waited
        for; ones another consumer holds for longer than `settle_s` are left to it (logged)."""
        t0 = time.perf_counter()
        try:
            asyncio.run(self._consume(follow=False, settle_s=settle_s))
        finally:
            self.stats.seconds += time.perf_counter() - t0
        return self.stats

    def follow(self) -> ConsumeStats:
        """Consume until `stop()`; an unreachable NATS is waited for and reconnected to."""
        t0 = time.perf_counter()
        try:
            asyncio.run(self._consume(follow=True))
        finally:
            self.stats.seconds += time.perf_counter() - t0
        return self.stats

    def stop(self) -> None:
        """Stop after the batch in hand (its write is finished and acknowledged, or nak'ed)."""
        first = not self._stop.is_set()
        self._stop.set()
        if first and self.on_stop is not None:
            self.on_stop()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # --- the loop ----------------------------------------------------------------------------
    async def _consume(self, *, follow: bool, settle_s: float | None = None) -> None:
        settle = settle_s if settle_s is not None else self.spec.nak_delay_s + 5.0
        try:
            await self._sessions(follow, settle)
        finally:
            self.state = "stopped"

    async def _sessions(self, follow: bool, settle: float) -> None:
        """Connect, subscribe and consume; following, start again after any failure (with a growing wait)."""
        import nats.errors

        failures = 0
        while not self.stopping:
            self.state = "connecting"
            nc = None
            try:
                nc = await self._connect(follow)
                if nc is None:  # stopped while waiting for the server
                    return
                js = nc.jetstream()
                stream, sub = await self._subscribe(js)
                self.state = "consuming"
                failures = 0
                idle_since = checked = time.monotonic()
                while not self.stopping:
                    try:
                        msgs = await sub.fetch(self.spec.batch, timeout=FETCH_WAIT_S if follow else DRAIN_WAIT_S)
                    except TimeoutError:  # nats.errors.TimeoutError, or asyncio's from some fetch paths
                        if not follow and await self._drained(sub, idle_since, settle):
                            return
                        if follow and time.monotonic() - checked > BOUND_CHECK_S:
                            await self._still_bound(sub, stream)
                            checked = time.monotonic()
                        continue
                    idle_since = time.monotonic()
                    await self._handle(nc, js, stream, msgs)
                return
            except Exception as exc:
                nats_trouble = isinstance(exc, (nats.errors.Error, OSError, StreamUnavailable))
                if not follow or self.stopping:
                    if nats_trouble and not isinstance(exc, StreamUnavailable):
                        raise StreamUnavailable(f"NATS at {self.connection.display}: {_what(exc)}") from exc
                    raise
                # Following never gives up (a server not there yet, a refused login, a bad URL alike):
                # unacknowledged messages wait in the stream meanwhile.
                failures += 1
                wait = min(MAX_RETRY_WAIT_S, RECONNECT_WAIT_S * 2 ** (failures - 1))
                self.state = f"retrying: {_what(exc)}"
                log.log(
                    logging.WARNING if nats_trouble else logging.ERROR,
                    "consuming %s stopped (%s); starting again in %.0f s",
                    self.spec.topology.subjects(self.spec.kind),
                    _what(exc),
                    wait,
                    exc_info=not nats_trouble,
                )
                await _sleep_unless(self._stop, wait)
            finally:
                if nc is not None:
                    self._closing.set()
                    await close_quietly(nc)
                    self._closing.clear()

    async def _connect(self, follow: bool):  # noqa: ANN202 - nats.aio.client.Client, imported lazily
        """Connected client, or None when stopped first. Following, the client tries forever (until
        `stop()`) and reconnects forever; draining, an unreachable server is an error at once."""
        import nats
        import nats.errors

        url = self.connection.display
        connecting = asyncio.ensure_future(
            nats.connect(
                **self.connection.options(reconnect=follow),
                error_cb=_log_error(url),
                disconnected_cb=_log_event(url, "disconnected; reconnecting", logging.WARNING, quiet=self._closing),
                reconnected_cb=_log_event(url, "reconnected", logging.INFO),
            )
        )
        while not connecting.done():
            await asyncio.wait({connecting}, timeout=0.2)
            if self.stopping and not connecting.done():
                connecting.cancel()
                await asyncio.gather(connecting, return_exceptions=True)
                return None
        try:
            nc = connecting.result()
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            raise StreamUnavailable(
                f"NATS at {url} is not reachable ({_what(exc)}): start it, or point LOOPLINE_NATS_URL / --url at it"
            ) from exc
        log.info("connected to NATS at %s", url)
        return nc

    async def _subscribe(self, js):  # noqa: ANN001, ANN202
        """Make sure the streams and the durable consumer exist; the pull subscription bound to it."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        topo = self.spec.topology
        stream = await ensure_stream(js, topo, self.spec.kind)
        await ensure_stream(js, topo, DLQ)
        config = ConsumerConfig(
            durable_name=self.spec.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            max_deliver=self.spec.attempts + 1,
            ack_wait=self.spec.ack_wait_s,
            filter_subject=topo.subjects(self.spec.kind),
            max_ack_pending=max(1000, 4 * self.spec.batch),
        )
        info = await _ensure_consumer(js, stream, config)
        server_max = info.config.max_deliver or -1
        self.attempts = server_max - 1 if server_max > 1 else self.spec.attempts
        self._max_deliver = server_max
        self._ack_wait_s = float(info.config.ack_wait or self.spec.ack_wait_s)
        self._stream_created = (await js.stream_info(stream)).created
        sub = await js.pull_subscribe_bind(durable=self.spec.durable, stream=stream)
        log.info(
            "consuming %s from stream %s as durable %s (%d attempts, ack wait %.0f s)",
            topo.subjects(self.spec.kind),
            stream,
            self.spec.durable,
            self.attempts,
            self._ack_wait_s,
        )
        return stream, sub

    async def _still_bound(self, sub, stream: str) -> None:  # noqa: ANN001
        """Raise where the durable consumer is gone: its stream was deleted (and perhaps created again,
        numbering from 1), and fetching from it would wait forever. The session then starts again."""
        import nats.js.errors

        try:
            await sub.consumer_info()
        except nats.js.errors.NotFoundError as exc:
            raise StreamUnavailable(
                f"the durable consumer {self.spec.durable} of stream {stream} is gone (the stream was deleted?)"
            ) from exc
        except TimeoutError:  # a busy server: look again later
            pass

    async def _drained(self, sub, idle_since: float, settle_s: float) -> bool:  # noqa: ANN001
        try:
            info = await sub.consumer_info()
        except TimeoutError:  # a busy server: look again after the next fetch
            return False
        if info.num_pending == 0 and info.num_ack_pending == 0:
            return True
        if info.num_pending == 0 and time.monotonic() - idle_since > settle_s:
            log.warning(
                "%d messages are delivered but not acknowledged (held by another consumer of %s, or waiting "
                "for a redelivery); they are left to it and to the next run",
                info.num_ack_pending,
                self.spec.durable,
            )
            return True
        return False

    # --- one batch ---------------------------------------------------------------------------
    async def _handle(self, nc, js, stream: str, msgs: Sequence[Any]) -> None:  # noqa: ANN001
        self.stats.batches += 1
        self.stats.received += len(msgs)
        valid: list[tuple[Any, Delivery[M]]] = []
        for msg in msgs:
            meta = msg.metadata
            attempt = meta.num_delivered
            if attempt > self.attempts:  # the extra delivery: the last attempt never finished
                await self._dead_letter(
                    js,
                    msg,
                    Rejection(
                        f"delivered {self.attempts} times without being acknowledged (the consumer stopped or "
                        "timed out while handling it)"
                    ),
                )
                continue
            try:
                event = validate_record(self.model, json.loads(msg.data))
            except (UnicodeDecodeError, ValueError) as exc:  # SchemaError is a ValueError too
                field = exc.field if isinstance(exc, SchemaError) else "<message>"
                reason = str(exc) if isinstance(exc, SchemaError) else f"the message is not JSON ({exc})"
                await self._dead_letter(js, msg, Rejection(reason, field=field))
                continue
            subject = msg.subject
            name = self.spec.topology.name_of(self.spec.kind, subject)
            delivery = Delivery(
                subject, name, event, meta.stream or stream, meta.sequence.stream, attempt, self._stream_created
            )
            valid.append((msg, delivery))
        if valid:
            await self._run(js, valid)
        await nc.flush()

    async def _run(self, js, batch: list[tuple[Any, Delivery[M]]]) -> None:  # noqa: ANN001
        try:
            rejected = await self._call(batch)
        except Exception as exc:
            if len(batch) > 1 and not self.stopping:
                log.warning(
                    "a batch of %d messages failed (%s: %s); retrying them one by one",
                    len(batch),
                    type(exc).__name__,
                    exc,
                )
                for one in batch:
                    await self._run(js, [one])
                return
            for msg, delivery in batch:
                await self._failed(js, msg, delivery, exc)
            return
        for msg, delivery in batch:
            rejection = rejected.get(delivery.stream_seq)
            if rejection is not None:
                await self._dead_letter(js, msg, rejection)
            else:
                await msg.ack()
                self.stats.acked += 1

    async def _call(self, batch: list[tuple[Any, Delivery[M]]]) -> Mapping[int, Rejection]:
        """The handler on a worker thread; while it runs, its messages' ack deadlines are pushed back."""
        task = asyncio.ensure_future(asyncio.to_thread(self.handler, [d for _, d in batch]))
        every = max(0.5, self._ack_wait_s / 3)
        extending = True
        while True:
            done, _ = await asyncio.wait({task}, timeout=every)
            if done:
                return task.result() or {}
            if not extending:
                continue
            try:
                for msg, _ in batch:
                    await msg.in_progress()
            except Exception as exc:
                # NATS went away: the write in hand still runs, and is waited for (returning now would
                # let its messages be handled again beside it); they may come back after it, a replay.
                extending = False
                log.warning(
                    "%d messages in hand: their ack deadline cannot be extended (%s); finishing their write first",
                    len(batch),
                    _what(exc),
                )

    async def _failed(self, js, msg, delivery: Delivery[M], exc: BaseException) -> None:  # noqa: ANN001
        what = _what(exc)
        if isinstance(exc, Cancelled) or self.stopping:  # shutting down: another consumer may take it now
            await msg.nak()
            self.stats.retried += 1
            log.info(
                "%s (%s): handling interrupted (%s); given back for redelivery", delivery.ref, delivery.subject, what
            )
            return
        if delivery.attempt >= self.attempts:
            await self._dead_letter(js, msg, Rejection(f"failed on all {self.attempts} attempts; the last: {what}"))
            return
        await msg.nak(delay=self.spec.nak_delay_s)
        self.stats.retried += 1
        log.warning(
            "%s (%s) failed on attempt %d of %d (%s); redelivered in %g s",
            delivery.ref,
            delivery.subject,
            delivery.attempt,
            self.attempts,
            what,
            self.spec.nak_delay_s,
        )

    async def _dead_letter(self, js, msg, rejection: Rejection) -> None:  # noqa: ANN001
        """Record the message as a dead letter, publish it to the dead-letter subject, terminate it.

        The record comes first and does not wait for the publish. A publish that fails (tried a few
        times at once) gives the message back, to be published on a later delivery; on its last
        delivery it is terminated anyway when it is recorded (by this or by the handler's run)."""
        meta = msg.metadata
        stream, seq = meta.stream, meta.sequence.stream
        ref = f"{stream}#{seq}"
        target = self.spec.topology.dlq_subject(msg.subject)
        headers = {k: v for k, v in (msg.headers or {}).items() if not k.lower().startswith("nats-")}
        headers |= {
            "Loopline-Reason": _header(rejection.reason),
            "Loopline-Field": _header(rejection.field),
            "Loopline-Subject": msg.subject,
            "Loopline-Stream": stream,
            "Loopline-Stream-Seq": str(seq),
            "Loopline-Deliveries": str(meta.num_delivered),
            "Nats-Msg-Id": f"dlq-{stream}-{seq}",  # a dead letter published twice (a crash in between) is kept once
        }
        dl_id = await self._record(msg, ref, rejection, target)
        recorded = rejection.recorded or dl_id is not None
        where = f"dead letter #{dl_id}" if dl_id is not None else "a dead letter by its handler"
        try:
            await _publish_dead_letter(js, target, msg.data, headers)
        except Exception as exc:
            last = 0 < self._max_deliver <= meta.num_delivered  # the server will not deliver it again
            if not last:
                await msg.nak(delay=self.spec.nak_delay_s)
                self.stats.retried += 1
                log.error(
                    "%s (%s) could not be published to %s (%s); %s, it is given back to be published on its next "
                    "delivery",
                    ref,
                    msg.subject,
                    target,
                    _what(exc),
                    f"recorded as {where}" if recorded else "not recorded either",
                )
                return
            if not recorded:
                log.error(
                    "%s (%s): %s; on its last delivery it could be neither published to %s (%s) nor recorded: it "
                    "stays unacknowledged in stream %s (nats stream get %s %s)",
                    ref,
                    msg.subject,
                    rejection.reason,
                    target,
                    _what(exc),
                    stream,
                    stream,
                    seq,
                )
                return
            log.error(
                "%s (%s): %s; it could not be published to %s on its last delivery (%s); terminated all the same: "
                "it is recorded as %s in the metadata store",
                ref,
                msg.subject,
                rejection.reason,
                target,
                _what(exc),
                where,
            )
        else:
            log.warning(
                "%s (%s): %s; published to %s%s",
                ref,
                msg.subject,
                rejection.reason,
                target,
                f" and recorded as {where}" if recorded else "",
            )
        await msg.term()
        self.stats.dead_lettered += 1
        self.stats.dead_letters.append(
            {"subject": msg.subject, "ref": ref, "field": rejection.field, "reason": rejection.reason}
        )
        if rejection.cleanup is not None:
            try:
                await asyncio.to_thread(rejection.cleanup)
            except Exception as exc:
                log.warning("%s: cleaning up after its dead letter failed (%s)", ref, _what(exc))

    async def _record(self, msg, ref: str, rejection: Rejection, target: str) -> int | None:  # noqa: ANN001
        """The dead letter's id in the metadata store (once per message); None where there is none or it failed."""
        if self.dead_letters is None or rejection.recorded:
            return None
        key = (self._stream_created, ref)
        if key in self._recorded:
            return self._recorded[key]
        try:
            dl_id = await asyncio.to_thread(
                self.dead_letters.add_dead_letter,
                run_id=None,
                source=self.source_of(msg.subject)[:512],
                path=self._dead_letter_path(msg.data, ref),
                reason=f"{rejection.reason}; dead-lettered to {target}",
            )
        except Exception as exc:
            log.error("%s: could not be recorded as a dead letter (%s)", ref, _what(exc))
            return None
        self._recorded[key] = dl_id
        while len(self._recorded) > RECORDED_MAX:
            self._recorded.popitem(last=False)
        return dl_id

    def _dead_letter_path(self, data: bytes, ref: str) -> str:
        """The event's id (`key_of`) where the message is a JSON object that names one, else `STREAM#SEQ`."""
        if self.key_of is not None:
            try:
                key = self.key_of(json.loads(data))
            except (ValueError, TypeError, AttributeError, KeyError, IndexError):  # not JSON, not an object
                key = None
            if isinstance(key, str) and key.strip():
                return key[:1024]
        return ref


class ConsumerThread:
    """A consumer following its stream on a daemon thread (inside `loopline serve`)."""

    def __init__(self, consumer: JetStreamConsumer, *, name: str) -> None:
        self.consumer = consumer
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> ConsumerThread:
        if not self._thread.is_alive() and not self.consumer.stopping:
            self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.consumer.follow()
        except Exception:
            log.exception("the consumer of %s stopped", self.consumer.spec.topology.subjects(self.consumer.spec.kind))

    def stop(self) -> None:
        self.consumer.stop()

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def state(self) -> str:
        """connecting, consuming, `retrying: WHY` or stopped (what readiness shows: the part before ':')."""
        return self.consumer.state


def run_until_signalled(consumer: JetStreamConsumer, *, follow: bool) -> ConsumeStats:
    """`consumer.follow()` (or `drain()`) in the main thread; SIGINT or SIGTERM stop it after the
    batch in hand, which is written and acknowledged (or cut short and given back), not abandoned."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handle(signum: int, frame: object) -> None:
        log.warning("%s: stopping after the batch in hand", signal.Signals(signum).name)
        consumer.stop()

    for sig in previous:
        signal.signal(sig, handle)
    try:
        return consumer.follow() if follow else consumer.drain()
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# --- streams and publishing -----------------------------------------------------------------
async def ensure_stream(js, topology: Topology, kind: str) -> str:  # noqa: ANN001
    """The stream that holds `kind`'s subjects: an existing one (an operator's, any name), else `PREFIX_KIND`."""
    import nats.js.errors
    from nats.js.api import StreamConfig

    subjects = topology.subjects(kind)
    try:
        return await js.find_stream_name_by_subject(subjects)
    except nats.js.errors.NotFoundError:
        pass
    except nats.js.errors.ServiceUnavailableError as exc:
        raise StreamUnavailable(f"NATS has no JetStream ({exc}): start nats-server with -js") from exc
    name = topology.stream(kind)
    try:
        await js.add_stream(StreamConfig(name=name, subjects=[subjects], duplicate_window=120.0))
    except nats.js.errors.BadRequestError:
        return await js.find_stream_name_by_subject(subjects)  # another process created it meanwhile
    log.info("created stream %s on %s", name, subjects)
    return name


async def _ensure_consumer(js, stream: str, config):  # noqa: ANN001, ANN202
    import nats.js.errors

    try:
        info = await js.consumer_info(stream, config.durable_name)
    except nats.js.errors.NotFoundError:
        return await js.add_consumer(stream, config)
    if (info.config.max_deliver, info.config.ack_wait) != (config.max_deliver, config.ack_wait):
        try:
            return await js.add_consumer(stream, config)  # an update of its editable settings
        except nats.js.errors.APIError as exc:
            log.warning("durable consumer %s keeps its own settings (%s)", config.durable_name, exc)
    return info


def publish(
    connection: Connection,
    messages: Iterable[tuple[str, bytes, Mapping[str, str] | None]],
    *,
    topology: Topology = Topology(),
    kinds: Sequence[str] = (),
    window: int = 256,
) -> int:
    """Publish (subject, data, headers) messages, each confirmed by JetStream; the number published.

    The streams of `kinds` are made sure of first. Up to `window` publishes are in flight at once.
    A `Nats-Msg-Id` header makes a repeated publish within two minutes count once.
    """

    async def go() -> int:
        nc = await connect_once(connection)
        try:
            js = nc.jetstream()
            for kind in kinds:
                await ensure_stream(js, topology, kind)
            sent, pending = 0, []
            for subject, data, headers in messages:
                pending.append(_publish(js, subject, data, dict(headers) if headers else None))
                if len(pending) >= window:
                    sent += len(await asyncio.gather(*pending))
                    pending = []
            return sent + len(await asyncio.gather(*pending))
        finally:
            await close_quietly(nc)

    return asyncio.run(go())


# --- small helpers ---------------------------------------------------------------------------
def _header(text: str) -> str:
    """A header value: one line of ASCII (NATS headers are; `…` becomes `...`), bounded."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "backslashreplace").decode("ascii")
    one = " ".join(plain.split())
    return one if len(one) <= HEADER_MAX else one[: HEADER_MAX - 3] + "..."


async def _publish(js, subject: str, data: bytes, headers: dict[str, str] | None, *, tries: int = 5):  # noqa: ANN001, ANN202
    """`js.publish`, tried again a few times while no stream answers: a stream created a moment ago
    (or a JetStream electing a leader) may not listen yet."""
    import nats.js.errors

    for attempt in range(tries - 1):
        try:
            return await js.publish(subject, data, headers=headers)
        except nats.js.errors.NoStreamResponseError:
            await asyncio.sleep(0.1 * 2**attempt)
    return await js.publish(subject, data, headers=headers)


async def _publish_dead_letter(js, subject: str, data: bytes, headers: dict[str, str]) -> None:  # noqa: ANN001
    """Publish a dead letter, tried again at once a few times whatever failed (its `Nats-Msg-Id`
    keeps a publish that did arrive from counting twice)."""
    for attempt in range(DLQ_PUBLISH_TRIES):
        try:
            await js.publish(subject, data, headers=headers)
            return
        except Exception:
            if attempt == DLQ_PUBLISH_TRIES - 1:
                raise
            await asyncio.sleep(0.2 * 2**attempt)


async def connect_once(connection: Connection):  # noqa: ANN202 - nats.aio.client.Client, imported lazily
    """A client for one short job (publish, clean up); StreamUnavailable when the server does not answer."""
    import nats
    import nats.errors

    try:
        return await nats.connect(**connection.options(reconnect=False), error_cb=_log_error(connection.display))
    except (TimeoutError, nats.errors.Error, OSError) as exc:
        raise StreamUnavailable(f"NATS at {connection.display} is not reachable ({_what(exc)})") from exc


async def close_quietly(nc) -> None:  # noqa: ANN001
    try:
        await nc.close()
    except Exception:  # already closed, or the server gone: nothing left to release
        pass


async def _sleep_unless(stop: threading.Event, seconds: float) -> bool:
    """Sleep `seconds` in small steps; True as soon as `stop` is set."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if stop.is_set():
            return True
        await asyncio.sleep(min(0.2, deadline - time.monotonic()))
    return stop.is_set()


def _what(exc: BaseException) -> str:
    """`Type: message` of an exception, as logs and errors show it (passwords in URLs masked)."""
    return masked_text(f"{type(exc).__name__}: {exc}")


def _log_error(url: str, *, every_s: float = 60.0) -> Callable[[Exception], Any]:
    """The client's error callback: a repeated error (each reconnect try) is logged once a minute.
    `url` is the display form (Connection.display)."""
    last: dict[str, float] = {}

    async def cb(exc: Exception) -> None:
        text = _what(exc)
        now = time.monotonic()
        if now - last.get(text, float("-inf")) >= every_s:
            last[text] = now
            log.warning("NATS at %s: %s", url, text)

    return cb


def _log_event(url: str, what: str, level: int, *, quiet: threading.Event | None = None) -> Callable[[], Any]:
    async def cb() -> None:
        if quiet is None or not quiet.is_set():
            log.log(level, "NATS at %s: %s", url, what)

    return cb
