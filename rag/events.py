"""Document events from NATS JetStream into the index: create, update and delete by event.

A `DocumentEvent` on `PREFIX.documents.SOURCE` upserts or deletes the document `id` of the
source `events:SOURCE`. Its content comes inline (`text`, read as Markdown) or by `link`: a
file under LOOPLINE_INGEST_ROOTS (checked like an API caller's path: an event is a remote
caller) or `object:KEY`, a key under `documents/` in the object store. Nothing else can be
linked, so an event cannot make the server read arbitrary files or republish uploads and frames.

A batch of events goes through `RagService.ingest_records`, one run per source: the last event
of an id in the batch wins, deletes become `removed`. Replays are harmless (content hashes:
the same text again is unchanged), so redelivery after a crash neither loses nor duplicates; a
failed event redelivered after a newer event of its id was written is skipped, so it cannot
bring the old text back: this process remembers the newest stream sequence it wrote for each of
the last `REMEMBERED_IDS` ids, within one incarnation of the stream (a stream deleted and
created again numbers from 1 again, and its events are new). What the ingest refuses (no text,
over a limit, a bad link) is a dead letter of its run and is sent to the dead-letter subject.
What this module does not do: talk to NATS itself (see shared/ingestion/jetstream.py).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo, field_validator

from shared.ingestion import RunSummary, SourceItem, record_item
from shared.ingestion.jetstream import (
    DOCUMENTS,
    Connection,
    ConsumerSpec,
    ConsumerThread,
    Delivery,
    JetStreamConsumer,
    Rejection,
    Topology,
    from_settings,
    publish,
)
from shared.ingestion.roots import PathRefused, check_ingest_path, parse_roots
from shared.objectstore import ObjectStore, check_key

if TYPE_CHECKING:
    from rag.service import RagService
    from shared.config import Settings
    from shared.context import AppContext

log = logging.getLogger(__name__)
LINKED_OBJECTS = "documents"  # `object:KEY` reads KEY under this prefix of the object store, nothing else
SOURCE_KIND = "events"
REMEMBERED_IDS = 100_000  # ids whose newest written sequence this process remembers (least recent forgotten)
Group = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]


class DocumentEvent(BaseModel):
    """One change of a document at its source: its new content, or its deletion."""

    model_config = ConfigDict(extra="forbid")

    op: Literal["upsert", "delete"] = Field("upsert", description="`upsert` creates or replaces; `delete` removes.")
    id: str = Field(
        min_length=1,
        max_length=512,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="The document's key in its source; the same id again is a new version of it.",
    )
    text: str | None = Field(None, description="The content, read as Markdown (or give `link`).")
    link: str | None = Field(
        None,
        max_length=4096,
        validate_default=True,
        description="Where the content lies (instead of `text`): an absolute path under LOOPLINE_INGEST_ROOTS, "
        "or `object:KEY` for KEY under `documents/` in the object store; read by its extension like a folder's files.",
    )
    title: str = Field("", max_length=512, description="Shown in citations (the id if empty); a linked file's own.")
    groups: list[Group] | None = Field(
        None, min_length=1, description="Who may read it; the consumer's default groups if absent."
    )

    @field_validator("link")
    @classmethod
    def _content(cls, link: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("op", "upsert") == "delete":
            return link
        if link is None and info.data.get("text") is None:
            raise ValueError("an upsert carries its content: give `text` or `link`")
        if link is not None and info.data.get("text") is not None:
            raise ValueError("give `text` or `link`, not both")
        if link is not None and not (link.startswith("/") or link.startswith("object:")):
            raise ValueError(
                "must be an absolute path (a file under LOOPLINE_INGEST_ROOTS) or object:KEY (a key under "
                "documents/ in the object store)"
            )
        return link


@dataclass
class RunTotals:
    """What the ingest runs of the consumed events did, summed."""

    runs: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: int = 0
    chunks: int = 0
    superseded: int = 0  # redeliveries skipped: a newer event of their id was written already

    def add(self, run: RunSummary) -> None:
        self.runs += 1
        for name, value in run.counts().items():
            setattr(self, name, getattr(self, name) + value)


class DocumentEvents:
    """The handler: a batch of events → one `ingest_records` run per source; rejected ones by stream sequence."""

    def __init__(
        self,
        service: RagService,
        *,
        topology: Topology,
        groups: Sequence[str] = ("public",),
        objects: ObjectStore | None = None,
        ingest_roots: Sequence[Path] = (),
    ) -> None:
        self.service = service
        self.topology = topology
        self.groups = sorted(set(groups))
        self.objects = objects.scoped(LINKED_OBJECTS) if objects is not None else None
        self.ingest_roots = list(ingest_roots)
        self.totals = RunTotals()
        # (source, id) → the stream incarnation and sequence of the newest event written for it, least recent first
        self._applied: OrderedDict[tuple[str, str], tuple[tuple[str, datetime | None], int]] = OrderedDict()

    def source_of(self, subject: str) -> str:
        """`events:hr` for `loopline.documents.hr`."""
        return f"{SOURCE_KIND}:{self.topology.name_of(DOCUMENTS, subject)}"

    def __call__(self, batch: list[Delivery[DocumentEvent]]) -> dict[int, Rejection]:
        latest: dict[str, dict[str, Delivery[DocumentEvent]]] = {}
        for d in batch:
            source = self.source_of(d.subject)
            if self._superseded((source, d.event.id), d):
                # A redelivery overtaken by a newer event of the same id (it failed, the newer one did not):
                # applying it now would bring back the old version.
                self.totals.superseded += 1
                continue
            per_source = latest.setdefault(source, {})
            per_source.pop(d.event.id, None)  # the last event of an id wins, in stream order
            per_source[d.event.id] = d
        rejected: dict[int, Rejection] = {}
        for source, events in latest.items():
            rejected |= self._ingest(source, events)
            for key, d in events.items():
                self._remember((source, key), d)
        return rejected

    def _superseded(self, key: tuple[str, str], d: Delivery[DocumentEvent]) -> bool:
        seen = self._applied.get(key)
        return seen is not None and seen[0] == (d.stream, d.stream_created) and seen[1] > d.stream_seq

    def _remember(self, key: tuple[str, str], d: Delivery[DocumentEvent]) -> None:
        incarnation = (d.stream, d.stream_created)
        seen = self._applied.pop(key, None)
        seq = max(seen[1], d.stream_seq) if seen is not None and seen[0] == incarnation else d.stream_seq
        self._applied[key] = (incarnation, seq)
        while len(self._applied) > REMEMBERED_IDS:
            self._applied.popitem(last=False)

    def _ingest(self, source: str, events: Mapping[str, Delivery[DocumentEvent]]) -> dict[int, Rejection]:
        home = self.service.settings.ensure_home()
        with tempfile.TemporaryDirectory(prefix=".event-objects-", dir=home) as tmp:
            items: list[SourceItem] = []
            removed: list[str] = []
            for key, d in events.items():
                if d.event.op == "delete":
                    removed.append(key)
                else:
                    items.append(self._item(source, d.event, Path(tmp)))
            run = self.service.ingest_records(source, items, removed=removed, groups=self.groups, kind="stream")
        self.totals.add(run)
        rejected: dict[int, Rejection] = {}
        for dl in run.dead_letters:
            d = events.get(dl["path"])
            if d is not None:
                field = "link" if d.event.link is not None else "text"
                rejected[d.stream_seq] = Rejection(dl["reason"], field=field, recorded=True)
        return rejected

    def _item(self, source: str, ev: DocumentEvent, tmp: Path) -> SourceItem:
        """The event as an item: a record of its text, or the linked file (an invalid record when refused)."""
        if ev.link is None:
            return record_item(source, ev.id, ev.text, title=ev.title, groups=ev.groups)
        try:
            path = self._linked_file(ev.link, tmp)
        except (PathRefused, FileNotFoundError, ValueError) as exc:
            return record_item(source, ev.id, None, title=ev.title, groups=ev.groups, invalid=f"link {ev.link}: {exc}")
        groups = tuple(sorted(set(ev.groups))) if ev.groups is not None else None
        return SourceItem(
            source=source, path=ev.id, abs_path=path, size_bytes=path.stat().st_size, title=ev.title, groups=groups
        )

    def _linked_file(self, link: str, tmp: Path) -> Path:
        if link.startswith("object:"):
            key = check_key(link.removeprefix("object:"))
            if self.objects is None:
                raise FileNotFoundError("no object store is configured for this consumer")
            data = self.objects.get(key)  # FileNotFoundError when absent
            target = tmp / f"{len(list(tmp.iterdir()))}" / PurePosixPath(key).name
            target.parent.mkdir()
            target.write_bytes(data)
            return target
        path = check_ingest_path(link, self.ingest_roots, protected=[self.service.settings.home])
        if not path.is_file():
            raise FileNotFoundError("no such file on the server")
        return path


# --- building and running the consumer ---------------------------------------------------------
def event_id(data: Any) -> str | None:
    """The `id` of a decoded event, also of one the schema refuses (a dead letter's path)."""
    return data.get("id") if isinstance(data, dict) else None


def document_consumer(
    service: RagService,
    settings: Settings,
    *,
    url: str | None = None,
    durable: str | None = None,
    max_deliver: int | None = None,
    groups: Sequence[str] = ("public",),
    objects: ObjectStore | None = None,
    topology: Topology | None = None,
    nak_delay_s: float = 2.0,
) -> JetStreamConsumer[DocumentEvent]:
    """The durable consumer of `PREFIX.documents.>` writing into `service` (settings fill what is not given)."""
    connection, configured = from_settings(settings, url)
    topology = topology or configured
    events = DocumentEvents(
        service,
        topology=topology,
        groups=groups,
        objects=objects,
        ingest_roots=parse_roots(settings.ingest_roots),
    )
    spec = ConsumerSpec(
        kind=DOCUMENTS,
        durable=durable or topology.durable("rag-documents"),
        attempts=max_deliver or settings.nats_max_deliver,
        ack_wait_s=settings.nats_ack_wait_s,
        batch=settings.nats_batch,
        nak_delay_s=nak_delay_s,
        topology=topology,
    )
    return JetStreamConsumer(
        connection,
        spec,
        DocumentEvent,
        events,
        dead_letters=service.metadata,
        source_of=events.source_of,
        key_of=event_id,
        on_stop=service.stop,
    )


def report(consumer: JetStreamConsumer[DocumentEvent]) -> dict[str, Any]:
    """What `rag consume-events --json` prints: the consumer's counts, the runs' counts, events/s."""
    stats = consumer.stats.as_dict()
    totals = consumer.handler.totals if isinstance(consumer.handler, DocumentEvents) else RunTotals()
    rate = consumer.stats.received / consumer.stats.seconds if consumer.stats.seconds > 0 else 0.0
    dead = stats.pop("dead_letters")
    return {**stats, **asdict(totals), "events_per_s": round(rate, 1), "dead_letters": dead}


def background_consumer(ctx: AppContext, service: RagService) -> ConsumerThread | None:
    """The consumer `loopline serve` runs on a thread when LOOPLINE_NATS_URL is set; None otherwise."""
    if not ctx.settings.nats_url:
        return None
    consumer = document_consumer(service, ctx.settings, objects=ctx.objects)
    consumer.on_stop = None  # serve stops the service itself (ApiPlugin.stop)
    return ConsumerThread(consumer, name="loopline-rag-events")


def publish_document_events(
    connection: Connection,
    events: Iterable[tuple[str, DocumentEvent | Mapping[str, Any]]],
    *,
    topology: Topology = Topology(),
) -> int:
    """Publish (source, event) pairs to `PREFIX.documents.SOURCE`; the number published (tests, benchmarks)."""

    def encode(ev: DocumentEvent | Mapping[str, Any]) -> bytes:
        data = ev.model_dump(exclude_none=True) if isinstance(ev, DocumentEvent) else dict(ev)
        return json.dumps(data).encode()

    messages = ((topology.subject(DOCUMENTS, source), encode(ev), None) for source, ev in events)
    return publish(connection, messages, topology=topology, kinds=[DOCUMENTS])
