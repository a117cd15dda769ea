"""The central API for edge devices: current model, model download, frame uploads.

Devices authenticate with their token (`Authorization: Bearer …`) and only ever act as
themselves: a device downloads only its fleet's production model and uploads only frames
under its own id. Frame uploads are validated first (type, size, pixels, a full decode, a
bounded number at a time), then stored through the object store port, idempotent on
`frame_id`: devices retry, so the same bytes again are a 200 duplicate (counted once, also
when retries race), while other bytes under a stored id are a 409, never a silent overwrite.
Frames announced on NATS JetStream (vision/frame_events.py) are stored by the same `store_frame`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema

from shared.auth import Device
from shared.context import ApiPlugin, AppContext
from shared.dependencies import DEVICE_ONLY, WITH_BODY, app_context, error, require_device
from shared.monitoring.drift import DriftMonitor
from shared.objectstore import ObjectStore
from vision.training import model_dir

log = logging.getLogger(__name__)
MAX_SIDE = 8192
IMAGE_MAGIC = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG\r\n\x1a\n": "image/png"}


class Sampling(BaseModel):
    boost: float = Field(
        1.0, description="Multiply the random and input-drift sampling shares by this (capped at 100%)."
    )
    reason: str | None = Field(None, description="Why the boost is not 1: the open drift alert(s) of the fleet.")


class ModelInfo(BaseModel):
    version: str
    sha256: str
    size: int
    precision: str
    url: str
    names: list[str] = Field(default_factory=list)
    imgsz: int
    reference: dict[str, Any] | None = Field(
        None,
        description="Frame-quality histograms of the training images, {feature: {edges, counts}} over fixed bins "
        "(-inf, e0), [e0, e1), …, [e_last, inf); the device compares its recent frames with them. None when the "
        "version was exported without one.",
    )
    sampling: Sampling = Field(default_factory=Sampling, description="How much to sample now, as central asks.")


FRAME_META_EXAMPLE = {
    "device_id": "line1-cam01",
    "frame_id": "0f9e2c4d7a1b4c3e",
    "captured_at": "2026-11-27T13:18:21.415+00:00",
    "model_version": "1",
    "reason": "close_to_threshold",
    "source_frame": "plate-000123.png",
    "predictions": [{"cls": 0, "name": "scratch", "score": 0.48, "box": [12.0, 8.5, 40.0, 30.0]}],
    "metrics": {},
}


class FrameMeta(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [FRAME_META_EXAMPLE]})

    device_id: str = Field(description="The id of the device whose token sends it (403 otherwise).")
    frame_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{7,63}$")
    captured_at: float | str | None = None
    model_version: str | None = None
    reason: str | None = None
    source_frame: str | None = Field(
        None, max_length=255, description="The device's own name for the frame (an image file's name)."
    )
    predictions: list[dict[str, Any]] = Field(default_factory=list)
    metrics: dict[str, Any] = Field(default_factory=dict)


class DeviceOut(BaseModel):
    id: str
    fleet: str


class FrameOut(BaseModel):
    id: str = Field(description="Where the frame is stored: DEVICE/FRAME_ID.")
    duplicate: bool = Field(description="The same frame was already stored (a retry): nothing was written.")


class _Models:
    """Reads the registry lazily (MLflow imports take seconds) and caches nothing stale."""

    def __init__(self, ctx: AppContext, registry=None) -> None:  # noqa: ANN001
        self.ctx = ctx
        self._registry = registry
        self._lock = threading.Lock()

    @property
    def registry(self):  # noqa: ANN201
        with self._lock:
            if self._registry is None:
                from vision.registry import ModelRegistry

                self._registry = ModelRegistry.from_settings(self.ctx.settings)
            return self._registry

    def current(self, fleet: str) -> tuple[ModelInfo, Path]:
        mv = self.registry.production(fleet)
        if mv is None:
            raise HTTPException(404, detail=f"no production model for fleet '{fleet}' yet: promote a version first")
        precision = mv.tags.get("preferred_precision", "fp32")
        path = model_dir(self.ctx.settings, mv.version) / f"model.{precision}.onnx"
        sha = mv.tags.get(f"onnx.{precision}.sha256")
        if not path.exists() or not sha:
            raise HTTPException(
                409,
                detail=f"version {mv.version} has no exported {precision} ONNX model: run `loopline vision export {mv.version}`",
            )
        names = _readable_names(path, mv.version, precision, mv.tags.get(f"onnx.{precision}.size"))
        from vision.release import read_reference

        return (
            ModelInfo(
                version=mv.version,
                sha256=sha,
                size=path.stat().st_size,
                precision=precision,
                url=f"/v1/devices/model/download?version={mv.version}&precision={precision}",
                names=names,
                imgsz=int(mv.tags.get("imgsz", 0)),
                reference=read_reference(path.parent),
            ),
            path,
        )


def drift_stream(fleet: str) -> str:
    """The monitored stream of a fleet's frames: `vision:FLEET`."""
    return f"vision:{fleet}"


def sampling_of(ctx: AppContext, fleet: str) -> Sampling:
    """The boost (`drift_sampling_boost`) while a drift alert is open on the fleet's stream, else 1:
    devices send more of what they see while the fleet drifts, and fall back once it resolves."""
    alerts = getattr(ctx, "alerts", None)  # a context without an alert store (a bare device API) boosts nothing
    if alerts is None:
        return Sampling()
    stream = drift_stream(fleet)
    features = sorted(
        a.key.rsplit("/", 1)[1]
        for a in alerts.open_alerts("drift")
        if "/" in a.key and a.key.rsplit("/", 1)[0] == stream
    )
    if not features:
        return Sampling()
    return Sampling(
        boost=ctx.settings.drift_sampling_boost, reason=f"drift alert open on {stream}: {', '.join(features)}"
    )


def captured_time(value: float | str | None, now: datetime) -> datetime:
    """When a frame was captured (ISO 8601, naive read as UTC, or epoch seconds); `now` when
    unknown or unreadable, or when it lies in the future (a device clock ahead)."""
    at: datetime | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        try:
            at = datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            at = None
    elif isinstance(value, str):
        try:
            at = datetime.fromisoformat(value.strip())
        except ValueError:
            at = None
        if at is not None and at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
    return now if at is None or at > now else at


_FEATURE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_DRIFT_FEATURES = 32
MAX_CATEGORIES = 200


class FleetDrift:
    """Feeds the drift counts devices send with their uploads into the stream of their fleet.

    Devices send running totals over fixed bins of frame quality (brightness, contrast,
    sharpness, colour balance) and predictions (max score, detections, class) for *every*
    frame they process, in `meta.metrics.drift`; the predictions of the uploaded frame itself
    are not used, since selected frames are chosen for being unusual. The device takes the
    counts when it keeps a frame, so what grew lands in the bucket of `captured_at`.
    References follow promotions lazily: on an upload, at most every `recheck_s` per fleet,
    the fleet's production version is read from the registry and, when it differs from the
    label of the stream's reference, a new reference is requested — frozen from what arrives
    from then on, once there is enough of it (so the new model's own predictions become the
    normal).
    """

    def __init__(
        self,
        monitor: DriftMonitor,
        production: Callable[[str], str | None],
        *,
        recheck_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.monitor = monitor
        self._production = production
        self.recheck_s = recheck_s
        self._clock = clock
        self._next_check: dict[str, float] = {}
        self._lock = threading.Lock()

    def feed(
        self, device_id: str, fleet: str, metrics: dict[str, Any], captured_at: float | str | None = None
    ) -> float:
        """Add what grew since the device's last upload, in the bucket of the frame's capture
        time (the device took the counts then); returns the number of observations added."""
        payload = metrics.get("drift")
        if not isinstance(payload, dict):
            return 0.0
        hist = {
            k: v
            for k, v in list((payload.get("histograms") or {}).items())[:MAX_DRIFT_FEATURES]
            if _FEATURE.match(str(k)) and isinstance(v, dict)
        }
        cats = {
            k: {str(c)[:64]: n for c, n in list(v.items())[:MAX_CATEGORIES]}
            for k, v in list((payload.get("categories") or {}).items())[:MAX_DRIFT_FEATURES]
            if _FEATURE.match(str(k)) and isinstance(v, dict)
        }
        stream = drift_stream(fleet)
        try:
            added = self.monitor.record_totals(
                stream,
                source=device_id,
                epoch=str(payload.get("epoch") or "")[:64],
                histograms=hist,
                categories=cats,
                at=captured_time(captured_at, self.monitor.now()),
            )
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("drift counts from device %s ignored: %s", device_id, exc)
            return 0.0
        self._follow_promotion(fleet)
        return added

    def _follow_promotion(self, fleet: str) -> None:
        now = self._clock()
        with self._lock:
            if now < self._next_check.get(fleet, float("-inf")):
                return
            self._next_check[fleet] = now + self.recheck_s
        version = self._production(fleet)
        stream = drift_stream(fleet)
        if version is not None and self.monitor.reference_label(stream) != version:
            self.monitor.request_reference(stream, label=version)
            log.info(
                "fleet %s runs version %s now: drift reference requested from the frames arriving from now on",
                fleet,
                version,
            )


def _readable_names(path: Path, version: str, precision: str, recorded_size: str | None) -> list[str]:
    """The class names of an exported model, or 409 when the file is not the one export wrote:
    a truncated or corrupt file is the operator's to fix, like a missing export, not a 500."""
    redo = f"run `loopline vision export {version}` again"
    size = path.stat().st_size
    if recorded_size is not None and recorded_size.isdigit() and int(recorded_size) != size:
        raise HTTPException(
            409,
            detail=f"version {version}: {path.name} is {size:,} bytes, export wrote {int(recorded_size):,} "
            f"(truncated or replaced): {redo}",
        )
    from google.protobuf.message import DecodeError

    try:
        return _names_of(path)
    except (DecodeError, OSError, ValueError, SyntaxError, TypeError, KeyError) as exc:
        log.error("version %s: exported model %s is unreadable: %s", version, path, exc)
        raise HTTPException(
            409, detail=f"version {version}: {path.name} is not a readable ONNX model ({type(exc).__name__}): {redo}"
        ) from None


def _names_of(path: Path) -> list[str]:
    import ast

    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    names = ast.literal_eval(meta.get("names", "{}"))
    return [names[k] for k in sorted(names)]


@dataclass
class VisionApi:
    """What the device routes depend on, built once per app from the composition root."""

    ctx: AppContext
    frames: ObjectStore
    models: Any  # _Models, or what answers `current(fleet)` in tests
    drift: FleetDrift | None
    decoder: FrameDecoder


def vision_api(ctx: AppContext = Depends(app_context)) -> VisionApi:
    return ctx.services["vision"]


router = APIRouter(prefix="/v1/devices", tags=["edge devices"], responses=DEVICE_ONLY)


NO_MODEL = error(404, "The fleet has no production model yet.") | error(
    409, "The production version has no readable exported model (run `loopline vision export VERSION`)."
)


@router.get("/me", response_model=DeviceOut, summary="Who this token is: the device id and its fleet.")
def me(dev: Device = Depends(require_device), api: VisionApi = Depends(vision_api)) -> DeviceOut:
    return DeviceOut(id=dev.id, fleet=dev.fleet)


@router.get(
    "/model",
    response_model=ModelInfo,
    summary="The production model this device's fleet should run.",
    description="With the version's input reference (quality histograms of its training frames, for the "
    "device's input-drift rule) and how much to sample now: `sampling.boost` is LOOPLINE_DRIFT_SAMPLING_BOOST "
    "while a drift alert is open on the fleet's stream `vision:FLEET`, else 1.",
    responses=error(403, "`fleet` names another fleet than the device's.") | NO_MODEL,
)
def current_model(
    fleet: str | None = None, dev: Device = Depends(require_device), api: VisionApi = Depends(vision_api)
) -> ModelInfo:
    if fleet and fleet != dev.fleet:
        raise HTTPException(403, detail=f"device '{dev.id}' belongs to fleet '{dev.fleet}', not '{fleet}'")
    info = api.models.current(dev.fleet)[0]
    return info.model_copy(update={"sampling": sampling_of(api.ctx, dev.fleet)})


@router.get(
    "/model/download",
    summary="Download the fleet's production model file.",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The ONNX file.",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        },
        **error(404, "No production model, or `version`/`precision` is not the fleet's production model."),
        **error(409, "The production version has no readable exported model (run `loopline vision export VERSION`)."),
    },
)
def download(
    version: str = Query(..., examples=["1"], description="The version `GET /v1/devices/model` names."),
    precision: str = Query("fp32", pattern="^(fp32|int8|fp16)$"),
    dev: Device = Depends(require_device),
    api: VisionApi = Depends(vision_api),
):
    info, path = api.models.current(dev.fleet)
    if version != info.version or precision != info.precision:
        raise HTTPException(
            404, detail=f"version {version} ({precision}) is not the production model of fleet '{dev.fleet}'"
        )
    api.ctx.metrics.record_download(dev.fleet, info.version)
    return FileResponse(path, media_type="application/octet-stream", filename=f"model-v{version}.{precision}.onnx")


# The meta part is JSON text (an object part of multipart/form-data is application/json by OpenAPI's
# rules): the handler parses it itself, to answer which field is wrong in one sentence.
FrameMetaJson = Annotated[str, WithJsonSchema(FrameMeta.model_json_schema())]
FRAME_PARTS = {"image": {"contentType": "image/jpeg, image/png"}, "meta": {"contentType": "application/json"}}


@router.post(
    "/frames",
    status_code=201,
    response_model=FrameOut,
    summary="Upload a frame kept for labeling, with its predictions.",
    description="Idempotent on `frame_id`: the same image again answers 200 with `duplicate: true`; "
    "another image under a stored id answers 409.",
    responses={
        200: {"model": FrameOut, "description": "This frame was stored before (a retry): nothing was written."},
        **WITH_BODY,
        **error(403, "`meta.device_id` is not the device of this token."),
        **error(409, "Another image is stored under this `frame_id`."),
        **error(413, "The frame is over LOOPLINE_FRAME_MAX_BYTES bytes or LOOPLINE_FRAME_MAX_PIXELS pixels."),
        **error(415, "The image is not a JPEG or PNG."),
        **error(422, "`meta` is not valid, or the image does not decode or has a side under 8 or over 8192 pixels."),
    },
    openapi_extra={"requestBody": {"content": {"multipart/form-data": {"encoding": FRAME_PARTS}}}},
)
def upload_frame(
    image: Annotated[
        UploadFile,
        File(
            description=f"A JPEG or PNG, fully decodable, each side 8 to {MAX_SIDE} pixels, within "
            "LOOPLINE_FRAME_MAX_BYTES bytes and LOOPLINE_FRAME_MAX_PIXELS pixels (the server checks what "
            "OpenAPI cannot say)."
        ),
    ],
    meta: Annotated[FrameMetaJson, Form(description="The frame's record, as JSON.")],
    dev: Device = Depends(require_device),
    api: VisionApi = Depends(vision_api),
) -> FrameOut | JSONResponse:
    try:
        fm = FrameMeta.model_validate_json(meta)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "meta"
        raise HTTPException(422, detail=f"meta: field '{field}' {_sentence_case(err['msg'])}") from exc
    if fm.device_id != dev.id:
        raise HTTPException(403, detail=f"this token belongs to device '{dev.id}', not '{fm.device_id}'")
    stored = store_frame(api, dev, fm, image.file.read(api.ctx.settings.frame_max_bytes + 1))
    if stored.duplicate:
        return JSONResponse(stored.model_dump(), status_code=200)
    return stored


def store_frame(api: VisionApi, dev: Device, fm: FrameMeta, data: bytes) -> FrameOut:
    """Validate a frame of `dev` and store it once: uploads and stream announcements alike.

    Raises HTTPException 413 (over LOOPLINE_FRAME_MAX_BYTES or _PIXELS), 415 (not a JPEG or PNG),
    422 (does not decode) or 409 (another image under this frame id); a retry of a stored frame
    is `duplicate` and counted once.
    """
    limit = api.ctx.settings.frame_max_bytes
    if len(data) > limit:
        raise HTTPException(413, detail=f"frame is over the limit of {limit:,} bytes")
    kind = next((t for magic, t in IMAGE_MAGIC.items() if data.startswith(magic)), None)
    if kind is None:
        raise HTTPException(415, detail="frame must be a JPEG or PNG image")
    h, w = api.decoder.size(data)
    key = f"{dev.id}/{fm.frame_id}"
    ext = "jpg" if kind == "image/jpeg" else "png"
    sha = hashlib.sha256(data).hexdigest()
    record = fm.model_dump() | {"fleet": dev.fleet, "image": f"{key}.{ext}", "width": w, "height": h, "sha256": sha}
    if not _store_once(api.frames, key, data, sha, record):
        return FrameOut(id=key, duplicate=True)
    api.ctx.metrics.record_frame(dev.id, dev.fleet, fm.reason, fm.model_version)
    if api.drift is not None:
        try:
            api.drift.feed(dev.id, dev.fleet, fm.metrics, fm.captured_at)
        except Exception:  # monitoring must never refuse a frame
            log.exception("drift counts of frame %s from %s not recorded", fm.frame_id, dev.id)
    log.info("frame %s from %s (%s)", fm.frame_id, dev.id, fm.reason)
    return FrameOut(id=key, duplicate=False)


def _sentence_case(message: str) -> str:
    """pydantic's message with its first letter lowered: patterns and values stay as written."""
    return message[:1].lower() + message[1:]


def _store_once(frames: ObjectStore, key: str, data: bytes, sha: str, record: dict[str, Any]) -> bool:
    """Store a validated frame unless its id is taken; True when this request stored it.

    The image and then its record are each created only if absent, so of racing retries
    exactly one stores (and is counted) and the others are duplicates. The same id with other
    bytes is a 409, and the loser of such a race removes the image it created.
    """
    record_key, image_key = f"{key}.json", record["image"]
    if frames.exists(record_key):  # the common retry: answered without writing anything
        return _same_frame(frames, key, sha)
    created = frames.put_if_absent(image_key, data)
    if not created and frames.get(image_key) != data:
        raise _conflict(
            key, _sha_of_record(frames, record_key) or hashlib.sha256(frames.get(image_key)).hexdigest(), sha
        )
    if frames.put_if_absent(record_key, json.dumps(record).encode()):  # written last: marks the frame complete
        return True
    try:
        return _same_frame(frames, key, sha)
    except HTTPException:
        if created:
            frames.delete(image_key)
        raise


def _same_frame(frames: ObjectStore, key: str, sha: str) -> bool:
    """False (a duplicate) when the stored frame `key` has these bytes; 409 otherwise."""
    stored = _sha_of_record(frames, f"{key}.json")
    if stored != sha:
        raise _conflict(key, stored, sha)
    return False


def _sha_of_record(frames: ObjectStore, record_key: str) -> str | None:
    """The sha256 of a stored frame's image (hashed from the image for records that predate it)."""
    if not frames.exists(record_key):
        return None
    record = json.loads(frames.get(record_key))
    return record.get("sha256") or hashlib.sha256(frames.get(record["image"])).hexdigest()


def _conflict(key: str, stored: str | None, sha: str) -> HTTPException:
    was = f" (sha256 {stored[:12]}…)" if stored else ""
    return HTTPException(
        409,
        detail=f"frame {key} is already stored with different content{was} than this upload (sha256 {sha[:12]}…): "
        "a frame id names one image; give a new image a new frame_id",
    )


class FrameDecoder:
    """Checks a frame's header against the pixel cap, then decodes it, `concurrency` at a time.

    A 200 KB PNG can claim 8192x8192 pixels, about 200 MB once decoded: the header (no pixels
    read) is checked first, and the semaphore bounds what decodes in flight hold together.
    """

    def __init__(self, max_pixels: int, concurrency: int) -> None:
        self.max_pixels = max_pixels
        self._slots = threading.BoundedSemaphore(concurrency)

    def size(self, data: bytes) -> tuple[int, int]:
        """(height, width) of a fully decodable frame; HTTPException 413/422 otherwise."""
        from io import BytesIO

        import cv2
        import numpy as np
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(BytesIO(data)) as header:
                w, h = header.size
        except Image.DecompressionBombError:
            raise HTTPException(
                422, detail=f"frame claims too many pixels; sides must be between 8 and {MAX_SIDE} pixels"
            ) from None
        except (UnidentifiedImageError, OSError, ValueError):
            raise HTTPException(422, detail="frame could not be decoded (truncated or corrupt image)") from None
        if not (8 <= w <= MAX_SIDE and 8 <= h <= MAX_SIDE):
            raise HTTPException(422, detail=f"frame is {w}x{h}; sides must be between 8 and {MAX_SIDE} pixels")
        if w * h > self.max_pixels:
            raise HTTPException(
                413,
                detail=f"frame is {w}x{h} = {w * h:,} pixels, over the limit of {self.max_pixels:,} "
                "(setting LOOPLINE_FRAME_MAX_PIXELS)",
            )
        with self._slots:
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            shape = None if img is None else img.shape[:2]
            del img  # freed before the slot is: the slot stands for the memory
        if shape is None:
            raise HTTPException(422, detail="frame could not be decoded (truncated or corrupt image)")
        return shape[0], shape[1]


def attach(ctx: AppContext, *, frames: ObjectStore, models: Any, drift: FleetDrift | None = None) -> VisionApi:
    """Give the device routes what they depend on; `models` answers `current(fleet) -> (ModelInfo, path)`."""
    api = ctx.services["vision"] = VisionApi(
        ctx=ctx,
        frames=frames,
        models=models,
        drift=drift,
        decoder=FrameDecoder(ctx.settings.frame_max_pixels, ctx.settings.frame_decode_concurrency),
    )
    return api


def plugin(ctx: AppContext, *, registry=None, drift: DriftMonitor | None = None) -> ApiPlugin:
    """Entry point of the `loopline.api` group; tests pass a `registry` and a `drift` monitor (devices go to the root)."""
    models = _Models(ctx, registry)

    def production(fleet: str) -> str | None:
        mv = models.registry.production(fleet)
        return mv.version if mv is not None else None

    api = attach(
        ctx, frames=ctx.objects.scoped("frames"), models=models, drift=FleetDrift(drift or ctx.drift, production)
    )
    # Frame announcements on NATS JetStream (LOOPLINE_NATS_URL): consumed on a thread while serving.
    from vision.frame_events import background_consumer

    events = background_consumer(api)

    def stop() -> None:
        if events is not None:
            events.stop()

    def close() -> None:
        stop()
        if events is not None:
            events.join(timeout=30)  # the batch in hand is stored and acknowledged before the stores close

    def ready() -> dict:
        details: dict[str, Any] = {"devices": len(ctx.devices)}
        if events is not None:
            details["frame_events"] = events.state.split(":")[0]  # the reason goes to the log, not to callers
        return details

    return ApiPlugin(
        name="vision",
        router=router,
        ready=ready,
        max_body_bytes=ctx.settings.frame_max_bytes,
        start=events.start if events is not None else lambda: None,
        stop=stop,
        close=close,
    )
