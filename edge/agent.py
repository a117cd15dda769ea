"""The device loop: detect every frame, keep the interesting ones, ship them, stay up to date.

The main thread runs the detector on the source's frames, records metrics and asks the
selector; selected frames are JPEG-encoded into the durable outbox. A background thread
drains the outbox to central and polls for model updates, so a slow or down network never
stalls inference. The detector is rebuilt in the main thread when the updater switches
models; a model that keeps failing at run time is reported and rolled back. The command
locks its home first: one agent per home, or two would ship one outbox twice.

`agent` is the click command `loopline edge agent` (registered by edge/cli.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Protocol

import click
import cv2
import numpy as np

from edge.metrics import Metrics
from edge.outbox import Outbox
from edge.quality import frame_quality
from edge.selection import FrameSelector, default_selector
from edge.types import Detection, FrameResult
from edge.updater import ModelInfo, ModelUpdater
from edge.uploader import DrainReport, Uploader

log = logging.getLogger(__name__)


class FrameDetector(Protocol):
    def detect(self, image_bgr: np.ndarray) -> list[Detection]: ...


@dataclass
class AgentSummary:
    frames: int = 0
    selected: int = 0
    errors: int = 0
    delivered: int = 0
    pending: int = 0
    model_version: str | None = None


class DeviceAgent:
    """Ties detector, selector, outbox, uploader, updater and metrics into the device loop.

    `detector_factory(path)` builds a detector for a model file. `source` yields
    (frame_id, BGR image). Clocks are passed in: `clock` for wall time (quotas,
    captured_at), `perf_counter` for latency.
    """

    def __init__(
        self,
        detector_factory: Callable[[Path], FrameDetector],
        source: Iterable[tuple[str, np.ndarray]],
        selector: FrameSelector,
        outbox: Outbox,
        uploader: Uploader,
        updater: ModelUpdater,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        perf_counter: Callable[[], float] = time.perf_counter,
        jpeg_quality: int = 90,
        upload_interval: float = 2.0,
        update_interval: float = 300.0,
        failure_limit: int = 3,
        drain_timeout: float = 10.0,
    ) -> None:
        self.detector_factory = detector_factory
        self.source = source
        self.selector = selector
        self.outbox = outbox
        self.uploader = uploader
        self.updater = updater
        self.metrics = metrics
        self._clock = clock
        self._perf = perf_counter
        self.jpeg_quality = jpeg_quality
        self.upload_interval = upload_interval
        self.update_interval = update_interval
        self.failure_limit = failure_limit
        self.drain_timeout = drain_timeout
        self._detector: FrameDetector | None = None
        self._model: ModelInfo | None = None
        self._failures = 0
        self._unloadable: str | None = None
        self._reported: str | None = None
        self.summary = AgentSummary()

    # --- the loop ----------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None) -> AgentSummary:
        """Process the source until it ends or `stop` is set; then try to deliver what is left."""
        stop = stop or threading.Event()
        if not self._wait_for_model(stop):
            return self.summarize()
        bg_stop = threading.Event()
        bg = threading.Thread(target=self._background, args=(bg_stop,), name="edge-uploads", daemon=True)
        bg.start()
        try:
            for frame_id, frame in self.source:
                if stop.is_set():
                    break
                self.process(frame_id, frame)
        finally:
            bg_stop.set()
            bg.join(timeout=30)
            self._final_drain()
        return self.summarize()

    def process(self, frame_id: str, frame: np.ndarray) -> FrameResult:
        """One frame: detect, measure, select, and store it in the outbox if selected."""
        self._ensure_detector()
        self.summary.frames += 1
        if self._detector is None:
            self.summary.errors += 1
            return FrameResult(frame_id, [], 0.0, extra={"error": "no usable model"})
        t0 = self._perf()
        try:
            detections = self._detector.detect(frame)
        except Exception as exc:
            return self._detector_failed(frame_id, exc)
        latency = self._perf() - t0
        self._failures = 0
        self.metrics.observe_frame(latency, detections)
        self._observe_quality(frame)
        now = self._clock()
        selected, reason = self.selector.decide(frame, detections, now)
        if selected and reason is not None:
            selected = self._keep(frame_id, frame, detections, reason, now)
        elif reason is not None:
            self.metrics.count("selection_suppressed", reason)
        return FrameResult(frame_id, detections, latency * 1000, selected=selected, reason=reason)

    def _observe_quality(self, frame: np.ndarray) -> None:
        """Brightness, contrast, sharpness, colour balance into the metrics (for central's drift checks)."""
        try:
            self.metrics.observe_quality(frame_quality(frame))
        except cv2.error as exc:  # an odd frame format must not stop detection
            self.metrics.count("quality_errors")
            log.debug("frame quality not computed: %s", exc)

    def _keep(self, frame_id: str, frame: np.ndarray, detections: list[Detection], reason: str, now: float) -> bool:
        """Store the frame with its record; the metrics snapshot is taken now, so the drift counts
        it carries are those at capture time (central buckets them by `captured_at`)."""
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:
            log.error("frame could not be JPEG-encoded; not stored")
            return False
        meta = {
            "captured_at": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
            "model_version": self._model.version if self._model else None,
            "reason": reason,
            "predictions": [d.to_json() for d in detections],
            "source_frame": Path(frame_id).name[:255],  # the device's own name (an image file's name)
            "metrics": self.metrics.snapshot(),
        }
        stored = self.outbox.store(buf.tobytes(), meta)
        self.metrics.record_selection(reason)
        if stored.evicted:
            self.metrics.count("outbox_evicted", "", len(stored.evicted))
        self.summary.selected += 1
        return True

    def _detector_failed(self, frame_id: str, exc: Exception) -> FrameResult:
        self._failures += 1
        self.summary.errors += 1
        self.metrics.count("detector_errors")
        version = self._model.version if self._model else None
        level = logging.ERROR if self._failures == 1 else logging.DEBUG  # one line per streak, not per frame
        log.log(
            level, "detector failed on frame %s (%d in a row, model %s): %s", frame_id, self._failures, version, exc
        )
        key = self._model.key() if self._model else None
        if self._failures >= self.failure_limit and key != self._reported:
            self._reported = key  # once per model: with nothing to roll back to, asking again is noise
            now_current = self.updater.report_failure(exc, version=version)
            if now_current is not None and now_current.key() != key:
                self.metrics.count("model_rollbacks")
        return FrameResult(frame_id, [], 0.0, extra={"error": f"{type(exc).__name__}: {exc}"})

    def _ensure_detector(self) -> None:
        """Load the updater's current model if it is not the one in use (cheap when it is)."""
        info = self.updater.current()
        if (
            info is None
            or (self._model is not None and info.key() == self._model.key())
            or info.key() == self._unloadable
        ):
            return
        try:
            detector = self.detector_factory(self.updater.path(info))
        except Exception as exc:
            log.error("model %s could not be loaded: %s", info.version, exc)
            self.metrics.count("detector_errors", "load")
            self._unloadable = info.key()  # not retried every frame, only when another model is offered
            fallback = self.updater.report_failure(exc, version=info.version)
            if fallback is not None and fallback.key() != info.key():
                self._ensure_detector()
            return
        old = self._model.version if self._model else None
        self._detector, self._model, self._failures = detector, info, 0
        self.metrics.set_model_version(info.version)
        log.info("detector running model %s (was %s)", info.version, old)

    # --- background: uploads and update polls --------------------------------------------
    def _background(self, stop: threading.Event) -> None:
        next_poll = self._clock()  # check once at start: the device may have been off for long
        while not stop.is_set():
            wait = self.upload_interval
            try:
                if self._clock() >= next_poll:
                    next_poll = self._clock() + self.update_interval
                    self._poll_update()
                report = self.uploader.drain()
                self._count_uploads(report)
                if report.wait:
                    wait = min(max(report.wait, 0.05), self.update_interval)
            except Exception:  # the loop must outlive any one bad round
                log.exception("upload/update round failed; retrying in %.1fs", wait)
            stop.wait(wait)

    def _poll_update(self) -> None:
        result = self.updater.check()
        self.metrics.count("model_checks", result.status.value)

    def _count_uploads(self, report: DrainReport) -> None:
        for kind in ("delivered", "duplicates", "dead", "retried"):
            if getattr(report, kind):
                self.metrics.count("uploads", kind, getattr(report, kind))
        self.summary.delivered += report.acked

    def _wait_for_model(self, stop: threading.Event) -> bool:
        """A new device has no model yet: poll central (with backoff) until it has one."""
        delay = 1.0
        while self.updater.current() is None:
            result = self.updater.check()
            if self.updater.current() is not None:
                break
            log.warning(
                "no model on this device yet (%s: %s); asking again in %.0fs", result.status.value, result.detail, delay
            )
            if stop.wait(delay):
                return False
            delay = min(delay * 2, 60.0)
        return True

    def _final_drain(self) -> None:
        deadline = self._clock() + self.drain_timeout
        while self._clock() < deadline and self.outbox.stats().pending:
            report = self.uploader.drain()
            self._count_uploads(report)
            if report.retried or report.wait:
                break  # central is down: the frames wait in the outbox for the next start
            if not report.acked:
                break

    def summarize(self) -> AgentSummary:
        """The run's counts so far, with the outbox backlog and the model in use."""
        self.summary.pending = self.outbox.stats().pending
        self.summary.model_version = self._model.version if self._model else None
        return self.summary


# --- wiring and the CLI command -----------------------------------------------------------
LOCK_FILE = "agent.lock"


def lock_home(home: Path) -> IO[str]:
    """Claim HOME for this process: the returned file holds an exclusive flock until closed.

    Two agents on one home would drain one outbox twice and swap each other's models. The
    lock dies with its process, even on kill -9, so a crash never leaves a home locked; the
    file keeps the holder's pid only to name it in the error.
    """
    import fcntl  # POSIX: devices run Linux

    path = home / LOCK_FILE
    fh = open(path, "a+")  # noqa: SIM115 - held open for the life of the agent
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "unknown"
        fh.close()
        raise click.ClickException(
            f"home {home} is in use by another agent (pid {holder}; lock {path}): two agents on one home upload "
            f"the same frames twice. Stop that agent, or give this one its own --home."
        ) from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh


def device_id_for(home: Path, given: str | None) -> str:
    """The device's id: central only accepts frames under the id registered with its token,
    so it cannot be invented here. Given once, it is kept in HOME/device_id."""
    path = home / "device_id"
    if given:
        if not path.is_file() or path.read_text().strip() != given:
            path.write_text(given + "\n")
        return given
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    raise click.ClickException(
        f"this device has no id yet: pass --device-id (the id registered with its token in central's devices "
        f"file); it is then kept in {path}"
    )


@click.command("agent")
@click.option(
    "--central", required=True, envvar="LOOPLINE_CENTRAL_URL", help="Central service URL, e.g. http://central:8000."
)
@click.option("--token", required=True, envvar="LOOPLINE_DEVICE_TOKEN", help="Device token (or LOOPLINE_DEVICE_TOKEN).")
@click.option("--fleet", required=True, help="Fleet whose model this device runs.")
@click.option("--source", "source_spec", required=True, help="Camera index, video file, image folder or stream URL.")
@click.option(
    "--home",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Device state folder; locked while the agent runs (one agent per home).",
)
@click.option(
    "--conf", default=0.25, show_default=True, type=click.FloatRange(0, 1), help="Detector confidence threshold."
)
@click.option(
    "--rules",
    "rules_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='JSON frame selection: {"rules": [{"type", "name", ...}], "per_minute", "per_day", "dedup_distance"} '
    "(default: uncertain detections + 2% random).",
)
@click.option(
    "--device-id",
    default=None,
    envvar="LOOPLINE_DEVICE_ID",
    help="Id registered for this token in central (needed once; kept in HOME/device_id).",
)
@click.option("--metrics-port", default=9464, show_default=True, type=int, help="Port of /metrics; 0 turns it off.")
@click.option("--metrics-host", default="0.0.0.0", show_default=True, help="Interface of /metrics.")
@click.option("--update-interval", default=300.0, show_default=True, type=float, help="Seconds between model checks.")
@click.option(
    "--max-outbox-mb", default=1024, show_default=True, type=int, help="Outbox size limit; oldest frames go first."
)
def agent(
    central: str,
    token: str,
    fleet: str,
    source_spec: str,
    home: Path,
    conf: float,
    rules_file: Path | None,
    device_id: str | None,
    metrics_port: int,
    metrics_host: str,
    update_interval: float,
    max_outbox_mb: int,
) -> None:
    """Run the device: detect, select frames for labeling, upload them, follow model updates."""
    from edge.detector import (
        Detector,  # imported here: `edge agent --help` needs no model code
    )
    from edge.sources import SourceError, open_source

    metrics = Metrics()

    def factory(path: Path) -> Detector:
        return Detector(path, conf=conf)

    def test_load(path: Path) -> None:
        factory(path).detect(np.zeros((320, 320, 3), np.uint8))

    updater: ModelUpdater | None = None  # made once the home is locked; the selector asks it per frame

    def reference() -> dict | None:
        info = updater.current() if updater is not None else None
        return info.reference if info is not None else None

    def boost() -> float:
        return updater.sampling_boost() if updater is not None else 1.0

    try:
        if rules_file:
            selector = FrameSelector.from_config(json.loads(rules_file.read_text()), reference=reference, boost=boost)
        else:
            selector = default_selector(conf, reference=reference, boost=boost)
    except (ValueError, OSError) as exc:  # JSON and config errors are ValueErrors, listing every problem
        raise click.ClickException(f"--rules {rules_file}: {exc}") from exc
    home.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as cleanup:
        cleanup.enter_context(lock_home(home))  # before anything in the home is read or written
        device_id = device_id_for(home, device_id)
        try:
            frames = open_source(source_spec)
        except SourceError as exc:
            raise click.ClickException(str(exc)) from exc
        cleanup.callback(frames.close)
        if metrics_port:
            try:
                cleanup.callback(metrics.serve(metrics_port, metrics_host).close)
            except OSError as exc:
                raise click.ClickException(
                    f"cannot serve metrics on {metrics_host}:{metrics_port} ({exc}); pick another --metrics-port, "
                    "or 0 to turn it off"
                ) from exc
        outbox = Outbox(home / "outbox", max_bytes=max_outbox_mb << 20)
        cleanup.callback(outbox.close)
        uploader = Uploader(
            outbox, central=central, token=token, device_id=device_id, metrics_snapshot=metrics.snapshot
        )
        updater = ModelUpdater(home / "models", central=central, token=token, fleet=fleet, loader=test_load)
        device = DeviceAgent(
            factory, frames, selector, outbox, uploader, updater, metrics, update_interval=update_interval
        )
        stop = threading.Event()
        try:
            previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
            cleanup.callback(signal.signal, signal.SIGTERM, previous)
        except ValueError:
            pass  # not the main thread (embedded use): the caller stops us another way
        try:
            summary = device.run(stop)
        except KeyboardInterrupt:
            summary = device.summarize()
    click.echo(
        f"device {device_id}: {summary.frames} frames, {summary.selected} selected, {summary.delivered} delivered, "
        f"{summary.pending} waiting in the outbox, {summary.errors} errors, model {summary.model_version}"
    )
