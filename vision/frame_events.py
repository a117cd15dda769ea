"""Frame announcements from NATS JetStream, stored exactly like `POST /v1/devices/frames`.

A `FrameAnnouncement` on `PREFIX.frames.DEVICE` carries the frame's record (`meta`, the same
`FrameMeta` as an upload) and its image: inline as base64 (`image_b64`) for frames that fit
NATS's default 1 MB payload with room to spare (about 700 KB of JPEG or PNG), or as
`image_key`, an object under `frames-incoming/DEVICE/` in the object store that the publisher
wrote first (larger frames; the claim-check pattern). The image then goes through
`vision.api.store_frame`: the same checks (type, bytes, pixels, full decode), the same storage,
idempotent on `frame_id` (a redelivery is a duplicate, counted once), the fleet from the device
registry. The incoming object is removed once the frame is stored, and once the announcement is
dead-lettered because the checks refuse its image (not after a failure that is retried).

Announcements carry no device token: the device must be registered (LOOPLINE_DEVICES_FILE)
and the subject names it, so who may publish on `PREFIX.frames.DEVICE` is decided by NATS's
permissions. Edge devices do not publish here (their runtime has no NATS client; they upload
over HTTP): a gateway or another publisher does. What this module does not do: decode or store
images itself, or talk to NATS directly (shared/ingestion/jetstream.py).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import HTTPException
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, ValidationInfo, field_validator

from shared.ingestion.jetstream import (
    FRAMES,
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
from shared.objectstore import ObjectStore, check_key
from vision.api import FrameMeta, VisionApi, store_frame

if TYPE_CHECKING:
    from shared.config import Settings
    from shared.metadata.store import MetadataStore

log = logging.getLogger(__name__)
INCOMING = "frames-incoming"  # where publishers put images too large to send inline: INCOMING/DEVICE/…


def _strict_base64(value: object) -> object:
    """Standard base64, checked strictly (the lenient decoder skips what is not base64 and yields garbage)."""
    if not isinstance(value, str):
        return value
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"is not valid base64 ({exc})") from None


Base64Image = Annotated[
    bytes,
    BeforeValidator(_strict_base64),
    PlainSerializer(lambda data: base64.b64encode(data).decode("ascii"), return_type=str),
]


class FrameAnnouncement(BaseModel):
    """A device's frame: its record and its image, inline or by object key (one of the two)."""

    model_config = ConfigDict(extra="forbid")

    meta: FrameMeta
    image_b64: Base64Image | None = Field(None, description="The JPEG or PNG, base64-encoded.")
    image_key: str | None = Field(
        None,
        max_length=1024,
        validate_default=True,
        description="Instead of image_b64: a key under `frames-incoming/DEVICE/` of the object store (the part "
        "after `frames-incoming/`), written before the announcement.",
    )

    @field_validator("image_key")
    @classmethod
    def _one_image(cls, key: str | None, info: ValidationInfo) -> str | None:
        inline = info.data.get("image_b64") is not None
        if key is None and not inline:
            raise ValueError("a frame carries its image: give `image_b64` or `image_key`")
        if key is not None and inline:
            raise ValueError("give `image_b64` or `image_key`, not both")
        return key


class Refused(Exception):
    """An announcement that can never be stored: its reason, the field at fault, and what to
    remove once it is dead-lettered (`cleanup`)."""

    def __init__(self, reason: str, field: str, cleanup: Callable[[], None] | None = None) -> None:
        super().__init__(reason)
        self.reason, self.field, self.cleanup = reason, field, cleanup


@dataclass
class FrameTotals:
    stored: int = 0
    duplicates: int = 0


class FrameEvents:
    """The handler: each announcement stored through `store_frame`; refused ones by stream sequence."""

    def __init__(self, api: VisionApi, *, topology: Topology, incoming: ObjectStore | None = None) -> None:
        self.api = api
        self.topology = topology
        self.incoming = incoming
        self.totals = FrameTotals()

    def source_of(self, subject: str) -> str:
        """`frames:line1-cam01` for `loopline.frames.line1-cam01`."""
        return f"frames:{self.topology.name_of(FRAMES, subject)}"

    def __call__(self, batch: list[Delivery[FrameAnnouncement]]) -> dict[int, Rejection]:
        rejected: dict[int, Rejection] = {}
        for d in batch:
            try:
                self._store(d)
            except Refused as exc:
                rejected[d.stream_seq] = Rejection(exc.reason, field=exc.field, cleanup=exc.cleanup)
        return rejected

    def _store(self, d: Delivery[FrameAnnouncement]) -> None:
        ann, device_id = d.event, d.name
        fm = ann.meta
        if fm.device_id != device_id:
            raise Refused(
                f"meta.device_id is '{fm.device_id}', but the subject names device '{device_id}'", "meta.device_id"
            )
        dev = self.api.ctx.devices.get(device_id)
        if dev is None:
            raise Refused(f"device '{device_id}' is not registered (add it to LOOPLINE_DEVICES_FILE)", "meta.device_id")
        field = "image_b64" if ann.image_key is None else "image_key"
        data = ann.image_b64 if ann.image_key is None else self._incoming_image(device_id, fm, ann.image_key)
        if data is None:  # stored by an earlier delivery, which removed the incoming copy
            self.totals.duplicates += 1
            return
        try:
            out = store_frame(self.api, dev, fm, data)
        except HTTPException as exc:
            if exc.status_code >= 500:
                raise
            # Never storable: its incoming copy goes once the announcement is dead-lettered for good.
            cleanup = self._remover(ann.image_key)
            raise Refused(str(exc.detail), "meta.frame_id" if exc.status_code == 409 else field, cleanup) from None
        if ann.image_key is not None and self.incoming is not None:
            self.incoming.delete(ann.image_key)
        if out.duplicate:
            self.totals.duplicates += 1
        else:
            self.totals.stored += 1

    def _remover(self, key: str | None) -> Callable[[], None] | None:
        """Removes the incoming object `key` (already checked to be the device's own); None for inline images."""
        incoming = self.incoming
        if key is None or incoming is None:
            return None
        return lambda: incoming.delete(key)

    def _incoming_image(self, device_id: str, fm: FrameMeta, key: str) -> bytes | None:
        prefix = f"{device_id}/"
        if self.incoming is None:
            raise Refused("image_key: no object store is configured for incoming frames", "image_key")
        if not key.startswith(prefix):
            raise Refused(
                f"image_key must lie under {INCOMING}/{prefix} (a device announces its own images)", "image_key"
            )
        try:
            return self.incoming.get(check_key(key))
        except ValueError as exc:
            raise Refused(str(exc), "image_key") from None
        except FileNotFoundError:
            if self.api.frames.exists(f"{device_id}/{fm.frame_id}.json"):
                return None
            raise Refused(f"image_key {key}: no such object under {INCOMING}/", "image_key") from None


# --- building and running the consumer ---------------------------------------------------------
def frame_id(data: Any) -> str | None:
    """The `meta.frame_id` of a decoded announcement, also of one the schema refuses (a dead letter's path)."""
    meta = data.get("meta") if isinstance(data, dict) else None
    return meta.get("frame_id") if isinstance(meta, dict) else None


def frame_consumer(
    api: VisionApi,
    settings: Settings,
    *,
    url: str | None = None,
    durable: str | None = None,
    max_deliver: int | None = None,
    incoming: ObjectStore | None = None,
    dead_letters: MetadataStore | None = None,
    topology: Topology | None = None,
    nak_delay_s: float = 2.0,
) -> JetStreamConsumer[FrameAnnouncement]:
    """The durable consumer of `PREFIX.frames.>` storing into `api`'s frame store."""
    connection, configured = from_settings(settings, url)
    topology = topology or configured
    events = FrameEvents(api, topology=topology, incoming=incoming)
    spec = ConsumerSpec(
        kind=FRAMES,
        durable=durable or topology.durable("vision-frames"),
        attempts=max_deliver or settings.nats_max_deliver,
        ack_wait_s=settings.nats_ack_wait_s,
        batch=settings.nats_batch,
        nak_delay_s=nak_delay_s,
        topology=topology,
    )
    return JetStreamConsumer(
        connection,
        spec,
        FrameAnnouncement,
        events,
        dead_letters=dead_letters,
        source_of=events.source_of,
        key_of=frame_id,
    )


def report(consumer: JetStreamConsumer[FrameAnnouncement]) -> dict[str, Any]:
    """What `vision consume-frames --json` prints."""
    stats = consumer.stats.as_dict()
    totals = consumer.handler.totals if isinstance(consumer.handler, FrameEvents) else FrameTotals()
    dead = stats.pop("dead_letters")
    return {**stats, "stored": totals.stored, "duplicates": totals.duplicates, "dead_letters": dead}


def background_consumer(api: VisionApi) -> ConsumerThread | None:
    """The consumer `loopline serve` runs on a thread when LOOPLINE_NATS_URL is set; None otherwise."""
    ctx = api.ctx
    if not getattr(ctx.settings, "nats_url", None):
        return None
    consumer = frame_consumer(
        api, ctx.settings, incoming=ctx.objects.scoped(INCOMING), dead_letters=getattr(ctx, "metadata", None)
    )
    return ConsumerThread(consumer, name="loopline-frame-events")


def publish_frames(
    connection: Connection,
    frames: list[tuple[str, FrameAnnouncement | dict[str, Any]]],
    *,
    topology: Topology = Topology(),
) -> int:
    """Publish (device id, announcement) pairs to `PREFIX.frames.DEVICE` (tests, gateways written in Python)."""

    def encode(ann: FrameAnnouncement | dict[str, Any]) -> bytes:
        if isinstance(ann, FrameAnnouncement):
            return ann.model_dump_json(exclude_none=True).encode()
        return json.dumps(ann).encode()

    messages = ((topology.subject(FRAMES, device), encode(ann), None) for device, ann in frames)
    return publish(connection, messages, topology=topology, kinds=[FRAMES])
