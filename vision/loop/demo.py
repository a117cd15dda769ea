"""The closed-loop demo (`loopline demo`): a model goes blind under a shift, and the loop fixes it.

Everything runs through the real paths on this machine, with embedded defaults:
1. a local Label Studio starts (in the background: its first start migrates for a minute or two);
2. a production detector trains from scratch on clean synthetic plates, is exported and promoted;
3. the central service serves HTTP on loopback; a device agent (the edge runtime, in this
   process) streams plates to it — clean first, then under the shift — selecting frames
   by uncertainty, at random, and by input drift against the model's reference;
4. central's drift check raises the alarm, and the monitoring core opens a retraining request;
5. the loop pushes the selected frames to Label Studio with the model's pre-annotations;
6. a SIMULATED LABELER (this demo, through Label Studio's API) submits the ground truth the
   plates were drawn with — in real use, people do this in Label Studio's web page;
7. the loop pulls the labels, versions the dataset, retrains from the production weights,
   exports, judges candidate against production on held-out sets, and promotes;
8. the device picks the new model up at its next poll.
It ends with a table — before and after, on held-out shifted plates and clean ones.

The device's clock is simulated (a frame a minute, starting hours ago), so central's hourly
drift buckets see hours of camera time in the seconds the stream takes.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pydantic import SecretStr

from shared.config import Settings
from vision.datasets.synth import CLASSES, Box, Shift, generate, render_plate

log = logging.getLogger(__name__)
FLEET = "demo-line"
DEVICE, DEVICE_TOKEN = "demo-cam-01", "demo-device-token-0001"
IMGSZ = 160
CLEAN_FRAMES, SHIFTED_FRAMES, AFTER_FRAMES = 180, 240, 30  # a frame a minute: 3 h clean, 4 h shifted
DEFAULT_SHIFT = "brightness=70,contrast=0.6"


@dataclass
class DemoResult:
    shift: str
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)
    frames: dict = field(default_factory=dict)
    psi: dict = field(default_factory=dict)
    drift_alert: dict | None = None
    production_version: str | None = None
    promoted_version: str | None = None
    device_model_version: str | None = None
    gate: dict = field(default_factory=dict)
    labelstudio: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    report: str | None = None
    dataset: str | None = None

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class SimClock:
    """The device's clock: starts on an hour boundary hours ago and moves a minute per frame."""

    def __init__(self, frames: int, step_s: float = 60.0) -> None:
        span = frames * step_s + 3600
        self.start = math.floor((time.time() - span) / 3600) * 3600
        self.now = float(self.start)
        self.step_s = step_s

    def __call__(self) -> float:
        return self.now

    def tick(self) -> None:
        self.now += self.step_s


class Stream:
    """The camera: frames the demo feeds in phases; the agent iterates until `end()`."""

    def __init__(self, clock: SimClock, pace_s: float = 0.02) -> None:
        self._q: queue.Queue = queue.Queue()
        self.clock = clock
        self.pace_s = pace_s
        self.consumed = 0

    def feed(self, frames: list[tuple[str, np.ndarray]]) -> None:
        for item in frames:
            self._q.put(item)

    def end(self) -> None:
        self._q.put(None)

    def drained(self) -> bool:
        return self._q.empty()

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        while True:
            item = self._q.get()
            if item is None:
                return
            self.clock.tick()
            self.consumed += 1
            yield item
            time.sleep(self.pace_s)  # a camera, not a file: central's checks run while it streams

    def close(self) -> None:
        """Nothing held open."""


def _plates(rng: np.random.Generator, n: int, shift: Shift, prefix: str, truth: dict) -> list[tuple[str, np.ndarray]]:
    out = []
    for i in range(n):
        img, boxes = render_plate(rng, IMGSZ, shift)
        name = f"{prefix}_{i:04d}.png"
        truth[name] = boxes
        out.append((name, img))
    return out


def _matches(pred: list[dict], truth: list[Box], iou: float = 0.5) -> bool:
    """Whether the predictions found every true box (same class, IoU >= iou) and nothing else."""
    from vision.datasets.synth import _iou

    left = list(truth)
    for p in pred:
        x1, y1, x2, y2 = p["box"]
        hit = next((t for t in left if t.cls == p["cls"] and _iou(Box(p["cls"], x1, y1, x2, y2), t) >= iou), None)
        if hit is None:
            return False
        left.remove(hit)
    return not left


def _psi(reference: dict, images: list[np.ndarray], feature: str = "brightness") -> float | None:
    """PSI of a feature of `images` against a model's reference (its reference.json), as devices judge it."""
    from edge.quality import frame_quality
    from edge.selection.input_drift import psi_against

    value = psi_against(reference.get(feature) or {}, [frame_quality(img)[feature] for img in images], bins=5)
    return None if value is None else round(value, 3)


def _mean_top_score(model: Path, images: list[np.ndarray]) -> float:
    from edge.detector import Detector

    det = Detector(model, conf=0.05)
    return float(np.mean([max((d.score for d in det.detect(img)), default=0.0) for img in images]))


def run_demo(
    settings: Settings,
    *,
    shift_spec: str = DEFAULT_SHIFT,
    epochs: int = 15,
    retrain_epochs: int = 10,
    say: Callable[[str], None] = lambda line: None,
) -> DemoResult:
    """Run the whole loop once in `settings.home/demo-loop` (wiped first); returns its figures."""
    from shared.auth import Device, DeviceRegistry, KeyRegistry
    from shared.metadata import MetadataStore
    from vision.registry import ModelRegistry
    from vision.release import export_version
    from vision.training import model_dir, train_detector

    shift = Shift.parse(shift_spec)
    result = DemoResult(shift=shift_spec)
    t_all = time.perf_counter()
    stage_t = {"t": time.perf_counter()}

    def stage(name: str) -> None:
        now = time.perf_counter()
        result.seconds[name] = round(now - stage_t["t"], 1)
        stage_t["t"] = now

    home = settings.ensure_home().resolve()
    demo_home = home / "demo-loop"
    local = _demo_label_studio(settings, demo_home)
    local.down()  # the last demo's server, left running for a look, goes with its folder
    shutil.rmtree(demo_home, ignore_errors=True)
    demo_home.mkdir(parents=True)

    # 1. Label Studio, in the background while the model trains.
    ls_box: dict[str, Any] = {}

    def start_ls() -> None:
        t0 = time.perf_counter()
        try:
            ls_box["info"] = local.up(progress=lambda line: log.info("labelstudio: %s", line))
        except Exception as exc:  # reported when the demo needs it
            ls_box["error"] = exc
        ls_box["seconds"] = round(time.perf_counter() - t0, 1)

    ls_thread = threading.Thread(target=start_ls, name="labelstudio-up", daemon=True)
    ls_thread.start()
    say("starting Label Studio in the background (the first start migrates its database: 1-2 min)")

    # 2. The production model, trained on clean plates.
    data = generate(demo_home / "data", train=240, val=60, imgsz=IMGSZ, seed=0)
    rng = np.random.default_rng(7)
    truth: dict[str, list[Box]] = {}
    shifted_test = generate(demo_home / "heldout-shifted", train=0, val=60, imgsz=IMGSZ, seed=101, shift=shift)
    stage("data")
    dsettings = settings.model_copy(update={"home": demo_home, "loop_interval_s": 0, "loop_epochs": retrain_epochs})
    store = MetadataStore(dsettings.resolved_database_url)
    registry = ModelRegistry.from_settings(dsettings)
    say(f"training the production detector from scratch: yolov8n, {epochs} epochs on 240 clean plates …")
    res = train_detector(dsettings, store, registry, data=data, epochs=epochs, imgsz=IMGSZ, batch=16)
    store.close()
    stage("train_production")
    out = export_version(dsettings, registry, res.version, int8=True, data_yaml=data)
    registry.promote(res.version, fleet=FLEET)
    result.production_version = res.version
    say(f"version {res.version}: clean mAP50 {res.metrics['mAP50']:.3f}; exported ({out['preferred']}), promoted")
    stage("export_production")

    ls_thread.join()
    if "error" in ls_box:
        raise RuntimeError(f"Label Studio did not start: {ls_box['error']}")
    info = ls_box["info"]
    result.labelstudio = {
        "url": info.url,
        "start_seconds": ls_box["seconds"],
        "login": f"loopline@localhost, password in {local.credentials_file}",
        "stop": f"LOOPLINE_HOME={demo_home} loopline labelstudio down",
    }
    say(f"Label Studio is up at {info.url} (started in {ls_box['seconds']:.0f} s, in parallel)")
    stage("labelstudio_wait")

    # 3. Central on loopback, and the device.
    from vision.labeling.client import LabelStudioLabeling, project_title

    labeling = LabelStudioLabeling(info.url, info.token, files_root=info.files_root)
    _delete_project(labeling, project_title(FLEET))  # a fresh project for a fresh demo
    with _central(
        dsettings, registry, info, DeviceRegistry([Device(id=DEVICE, fleet=FLEET, token=DEVICE_TOKEN)]), KeyRegistry([])
    ) as (central_url, ctx):
        clock = SimClock(CLEAN_FRAMES + SHIFTED_FRAMES + AFTER_FRAMES)
        stream = Stream(clock)
        stream_ref = f"vision:{FLEET}"
        _seed_reference(ctx, stream_ref, res.version, model_dir(dsettings, res.version), clock.start - 3600)
        agent, agent_thread = _start_device(demo_home / "device", central_url, stream, clock)
        checks = _Checks(ctx)
        checks.start()
        say(
            f"device {DEVICE} streams {CLEAN_FRAMES} clean plates, then {SHIFTED_FRAMES} under the shift ({shift_spec}) …"
        )
        stream.feed(_plates(rng, CLEAN_FRAMES, Shift(), "clean", truth))
        _wait(lambda: stream.drained() and agent.outbox.stats().pending == 0, 120)
        stream.feed(_plates(rng, SHIFTED_FRAMES, shift, "shifted", truth))
        _wait(lambda: stream.drained() and agent.outbox.stats().pending == 0, 300)
        time.sleep(1.0)
        checks.stop()
        alert = checks.check_now()
        result.drift_alert = alert
        stage("stream")
        say(
            f"central drift check: {alert['message'] if alert else 'no drift alert'}; "
            f"retraining requests open: {len(ctx.alerts.open_retraining_requests(stream_ref))}"
        )

        # 4-7. The loop: push, label, pull, retrain, judge, promote.
        from vision.labeling.tables import LabelingRecords
        from vision.loop.runner import LoopRunner

        runner = LoopRunner(ctx, labeling, registry, on_stage=lambda fleet, what: log.info("loop %s: %s", fleet, what))
        [first] = runner.run_once([FLEET])
        if first.errors:
            raise RuntimeError(f"the loop's push failed: {first.errors}")
        result.labelstudio["project_id"] = first.project_id
        result.labelstudio["project_url"] = f"{info.url}/projects/{first.project_id}/data"
        say(f"pushed {first.pushed} frames to Label Studio project {first.project_id} with pre-annotations")
        stage("push")
        labeled = _simulated_labeler(labeling, first.project_id, truth)
        _wait(lambda: len(LabelingRecords(ctx.metadata).tasks(FLEET, status="labeled")) >= labeled, 20, quiet=True)
        via_webhook = len(LabelingRecords(ctx.metadata).tasks(FLEET, status="labeled"))
        say(
            f"simulated labeler submitted {labeled} annotations through Label Studio's API "
            f"({via_webhook} already reached central by webhook)"
        )
        stage("label")
        say(f"loop cycle: pull, dataset version, retrain ({retrain_epochs} epochs from v{res.version}), export, gate …")
        [second] = runner.run_once([FLEET])
        if second.errors:
            raise RuntimeError(f"the loop's cycle failed: {second.errors}")
        for k, v in second.seconds.items():
            result.seconds[f"loop_{k}"] = v
        stage("retrain_cycle")
        result.dataset = second.dataset
        result.gate = (second.cycle or {}).get("gate", {})
        result.promoted_version = second.promoted_version
        if second.promoted_version:
            say(f"gate passed: version {second.promoted_version} promoted for fleet {FLEET}")
        else:
            say(f"candidate not promoted: {second.rejected or second.waiting}")

        # 8. The device picks it up.
        stream.feed(_plates(rng, AFTER_FRAMES, shift, "after", truth))
        if second.promoted_version:
            _wait(lambda: agent.summarize().model_version == second.promoted_version or stream.drained(), 120)
        stream.end()
        agent_thread.join(timeout=60)
        summary = agent.summarize()
        result.device_model_version = summary.model_version
        stage("device_update")
        say(f"device runs version {summary.model_version} now")

        records = LabelingRecords(ctx.metadata).tasks(FLEET)
        sent = [json.loads(ctx.objects.scoped("frames").get(f"{t.frame}.json")) for t in records]
        wrong = sum(not _matches(r.get("predictions") or [], truth.get(r.get("source_frame") or "", [])) for r in sent)
        result.frames = {
            "streamed": summary.frames,
            "sent": len(sent),
            "labeled": sum(t.status == "labeled" for t in records),
            "sent_per_1000": round(1000 * len(sent) / max(1, summary.frames), 1),
            "sent_wrong": wrong,
            "by_reason": _count(r.get("reason") for r in sent),
        }
        from shared.monitoring.report import write_report

        try:
            result.report = str(write_report(ctx.metadata, demo_home / "report.html", settings=dsettings))
        except Exception as exc:  # matplotlib missing: the table still stands
            log.warning("report not written: %s", exc)

    # Before and after, on held-out plates neither model trained on.
    from vision.validation import evaluate_detector
    from vision.yolo_env import prepare_ultralytics

    prepare_ultralytics(dsettings.home, dsettings.train_threads)
    shifted_images = [cv2.imread(str(p)) for p in sorted((demo_home / "heldout-shifted/images/val").glob("*.png"))]
    clean_images = [cv2.imread(str(p)) for p in sorted((demo_home / "data/images/val").glob("*.png"))]
    after_version = result.promoted_version or res.version
    for side, version in (("before", res.version), ("after", after_version)):
        folder = model_dir(dsettings, version)
        model = folder / "model.fp32.onnx"
        reference = json.loads((folder / "reference.json").read_text()) if (folder / "reference.json").exists() else {}
        getattr(result, side).update(
            {
                "version": version,
                "map50_shifted": evaluate_detector(model, shifted_test, split="val")["mAP50"],
                "map50_clean": evaluate_detector(model, data, split="val")["mAP50"],
                "mean_confidence_shifted": round(_mean_top_score(model, shifted_images), 3),
                "mean_confidence_clean": round(_mean_top_score(model, clean_images), 3),
            }
        )
        if reference:
            result.psi[side] = {"shifted": _psi(reference, shifted_images), "clean": _psi(reference, clean_images)}
    stage("evaluate")
    result.seconds["total"] = round(time.perf_counter() - t_all, 1)
    (demo_home / "demo.json").write_text(json.dumps(result.to_json(), indent=1, default=str))
    return result


def _demo_label_studio(settings: Settings, demo_home: Path):  # noqa: ANN202
    """The demo's own Label Studio: its database and the frames it serves live in the demo's folder."""
    from vision.labeling.local_server import LocalLabelStudio, port_in_use

    port = settings.label_studio_port
    state = demo_home / "labelstudio" / "server.json"
    previous = json.loads(state.read_text()).get("port") if state.exists() else None
    if port_in_use(port) and port != previous:  # your own `loopline labelstudio up` keeps its port
        port = _free_port()
    return LocalLabelStudio(
        demo_home, executable=settings.label_studio_bin, port=previous or port, files_root=demo_home / "frames"
    )


def _seed_reference(ctx, stream: str, version: str, folder: Path, at: float) -> None:  # noqa: ANN001
    """Central's drift reference for the stream: the quality histograms of the version's training
    frames (its reference.json), counted in a bucket before the stream starts and frozen there."""
    from vision.release import read_reference

    reference = read_reference(folder)
    if not reference:
        log.warning("version %s has no reference.json: central judges drift once it has its own reference", version)
        return
    ctx.drift.record_totals(
        stream, source=f"training-frames-v{version}", epoch=version, histograms=reference, at=_dt(at)
    )
    ctx.drift.freeze_reference(stream, label=version, since=_dt(at), until=_dt(at), min_n=50)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _count(values) -> dict[str, int]:  # noqa: ANN001
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return out


def _dt(ts: float):  # noqa: ANN202
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, tz=UTC)


def _wait(done: Callable[[], bool], timeout: float, *, quiet: bool = False) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            if quiet:
                return
            raise TimeoutError(f"gave up waiting after {timeout:.0f} s")
        time.sleep(0.2)


def _delete_project(labeling, title: str) -> None:  # noqa: ANN001
    for p in labeling.client.projects.list(title=title):
        if p.title == title:
            labeling.client.projects.delete(id=p.id)


class _central:  # noqa: N801 - used as a context manager, like `open`
    """The central service on a free loopback port, in a thread, for the demo's duration."""

    def __init__(self, settings: Settings, registry, info, devices, keys) -> None:  # noqa: ANN001
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.settings = settings.model_copy(
            update={
                "label_studio_url": info.url,
                "label_studio_token": SecretStr(info.token),
                "loop_webhook_url": f"{self.url}/v1/labeling/webhook",
            }
        )
        self.registry, self.devices, self.keys = registry, devices, keys

    def __enter__(self):  # noqa: ANN204
        import uvicorn

        import shared.monitoring.api
        import vision.api
        import vision.labeling.api
        from shared.server import create_app

        registry = self.registry
        app = create_app(
            self.settings,
            plugins=[
                lambda ctx: vision.api.plugin(ctx, registry=registry),
                vision.labeling.api.plugin,
                shared.monitoring.api.plugin,
            ],
            keys=self.keys,
            devices=self.devices,
        )
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, name="central", daemon=True)
        self.thread.start()
        _wait(lambda: self.server.started or not self.thread.is_alive(), 60)
        if not self.server.started:
            raise RuntimeError("the central service did not start")
        return self.url, app.state.ctx

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def _start_device(home: Path, central: str, stream: Stream, clock: SimClock):  # noqa: ANN202
    """The edge runtime's agent, as `loopline edge agent` wires it, on the demo's stream."""
    from edge.agent import DeviceAgent
    from edge.detector import Detector
    from edge.metrics import Metrics
    from edge.outbox import Outbox
    from edge.selection import default_selector
    from edge.updater import ModelUpdater
    from edge.uploader import Uploader

    home.mkdir(parents=True, exist_ok=True)
    metrics = Metrics()
    outbox = Outbox(home / "outbox", max_bytes=256 << 20)
    uploader = Uploader(
        outbox, central=central, token=DEVICE_TOKEN, device_id=DEVICE, metrics_snapshot=metrics.snapshot
    )

    def factory(path: Path) -> Detector:
        return Detector(path, conf=0.25)

    updater = ModelUpdater(
        home / "models",
        central=central,
        token=DEVICE_TOKEN,
        fleet=FLEET,
        loader=lambda p: factory(p).detect(np.zeros((IMGSZ, IMGSZ, 3), np.uint8)),
    )
    selector = default_selector(
        0.25,
        clock=clock,
        reference=lambda: updater.current().reference if updater.current() else None,
        boost=updater.sampling_boost,
    )
    agent = DeviceAgent(
        factory,
        stream,
        selector,
        outbox,
        uploader,
        updater,
        metrics,
        clock=clock,
        upload_interval=0.2,
        update_interval=600.0,  # device time: every 10 frames
    )
    thread = threading.Thread(target=agent.run, name="device-agent", daemon=True)
    thread.start()
    _wait(lambda: updater.current() is not None, 60)  # the device fetched the fleet's model
    return agent, thread


class _Checks:
    """Central's monitoring check, every second while the device streams (as an operator's cron would)."""

    def __init__(self, ctx) -> None:  # noqa: ANN001
        self.ctx = ctx
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="monitor-checks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.check_now()
            except Exception:
                log.exception("monitoring check failed")

    def check_now(self) -> dict | None:
        from shared.monitoring.rules import Monitor

        with Monitor.from_settings(self.ctx.settings, self.ctx.metadata) as mon:
            mon.check()
        drift = [a for a in self.ctx.alerts.open_alerts("drift") if a.key.startswith(f"vision:{FLEET}/")]
        if not drift:
            return None
        top = max(drift, key=lambda a: float(a.details.get("psi") or 0.0))
        return {"key": top.key, "message": top.message, "features": sorted(a.key.split("/", 1)[1] for a in drift)}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _simulated_labeler(labeling, project_id: int, truth: dict[str, list[Box]]) -> int:  # noqa: ANN001
    """SIMULATED LABELER: submits each frame's ground truth through Label Studio's API, as a person would."""
    done = 0
    for task in labeling.client.tasks.list(project=project_id, fields="all"):
        if task.annotations:
            continue
        boxes = truth.get(str(task.data.get("source") or ""))
        if boxes is None:
            continue
        result = [
            {
                "from_name": "label",
                "to_name": "image",
                "type": "rectanglelabels",
                "original_width": IMGSZ,
                "original_height": IMGSZ,
                "value": {
                    "x": 100 * b.x1 / IMGSZ,
                    "y": 100 * b.y1 / IMGSZ,
                    "width": 100 * (b.x2 - b.x1) / IMGSZ,
                    "height": 100 * (b.y2 - b.y1) / IMGSZ,
                    "rotation": 0,
                    "rectanglelabels": [CLASSES[b.cls]],
                },
            }
            for b in boxes
        ]
        labeling.client.annotations.create(id=task.id, result=result, was_cancelled=False)
        done += 1
    return done
