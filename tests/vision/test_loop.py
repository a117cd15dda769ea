"""The closed loop against a real Label Studio: push, pull, datasets, retraining, gate, promotion.

A tiny production detector (64 px, one epoch) serves a fleet through the real device API;
frames arrive as devices upload them; a simulated labeler (named so: it is this test) answers
tasks through Label Studio's API with the ground truth the frames were drawn with.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

pytest.importorskip("ultralytics")
pytest.importorskip("label_studio_sdk")

from shared.auth import Device, DeviceRegistry, KeyRegistry  # noqa: E402
from shared.config import Settings  # noqa: E402
from shared.metadata import MetadataStore  # noqa: E402
from shared.server import create_app  # noqa: E402
from vision.datasets.synth import CLASSES, Shift, generate, render_plate  # noqa: E402

TOKEN = "token-loop-cam-aaaaaaaaaaaa"
FLEET = "line-1"


class Central:
    """The central service of one test module: settings, registry, an app and its client."""

    def __init__(self, home: Path, label_studio) -> None:  # noqa: ANN001
        import vision.api
        import vision.labeling.api
        from vision.registry import ModelRegistry
        from vision.release import export_version
        from vision.training import train_detector

        self.home = home
        self.label_studio = label_studio
        self.settings = Settings(
            home=home,
            train_threads=2,
            label_studio_url=label_studio.url,
            label_studio_token=label_studio.token,
            loop_epochs=1,
            loop_int8=False,
            loop_min_new_labels=6,
            loop_min_holdout=1,
            loop_holdout_share=0.3,
            loop_interval_s=0,
        )
        data = generate(home / "data", train=16, val=8, imgsz=64, seed=3)
        self.registry = ModelRegistry.from_settings(self.settings)
        store = MetadataStore(self.settings.resolved_database_url)
        res = train_detector(self.settings, store, self.registry, data=data, epochs=1, imgsz=64, batch=8)
        store.close()
        export_version(self.settings, self.registry, res.version)
        self.registry.promote(res.version)
        self.production = res.version
        self.app = create_app(
            self.settings,
            plugins=[
                lambda ctx: vision.api.plugin(ctx, registry=self.registry),
                vision.labeling.api.plugin,
            ],
            keys=KeyRegistry([]),
            devices=DeviceRegistry([Device(id="cam-01", fleet=FLEET, token=TOKEN)]),
        )
        self.client = TestClient(self.app).__enter__()
        self.truth: dict[str, list] = {}  # frame key → ground-truth boxes (what the simulated labeler draws)
        self.rng = np.random.default_rng(11)

    @property
    def ctx(self):  # noqa: ANN201
        return self.app.state.ctx

    def frame_ids(self, n: int) -> list[str]:
        """n new frame ids; from 2 on, at least one held out and one for training (the split hashes the id)."""
        from vision.loop.labeled import is_holdout

        while True:
            ids = [f"{self.rng.integers(1 << 62):016x}" for _ in range(n)]
            sides = {is_holdout(f"cam-01/{i}", self.settings.loop_holdout_share) for i in ids}
            if n < 2 or sides == {True, False}:
                return ids

    def upload(self, n: int, shift: Shift = Shift(brightness=70, contrast=0.6)) -> list[str]:
        """n frames as the device uploads them (real API); returns their keys."""
        keys = []
        for frame_id in self.frame_ids(n):
            img, boxes = render_plate(self.rng, 64, shift)
            ok, buf = cv2.imencode(".jpg", img)
            assert ok
            meta = {
                "device_id": "cam-01",
                "frame_id": frame_id,
                "model_version": self.production,
                "reason": "drift",
                "predictions": [{"cls": 1, "name": "spot", "score": 0.31, "box": [4.0, 4.0, 20.0, 20.0]}],
            }
            r = self.client.post(
                "/v1/devices/frames",
                files={"image": ("f.jpg", buf.tobytes(), "image/jpeg")},
                data={"meta": json.dumps(meta)},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            assert r.status_code == 201, r.text
            key = f"cam-01/{frame_id}"
            self.truth[key] = boxes
            keys.append(key)
        return keys

    def runner(self, **overrides):  # noqa: ANN003, ANN201
        from vision.labeling.client import LabelStudioLabeling
        from vision.loop.runner import LoopRunner

        settings = self.settings.model_copy(update=overrides) if overrides else self.settings
        self.ctx.settings = settings
        labeling = LabelStudioLabeling(
            self.label_studio.url, self.label_studio.token, files_root=self.label_studio.files_root
        )
        return LoopRunner(self.ctx, labeling, self.registry)

    def labeler(self):  # noqa: ANN201
        from label_studio_sdk import LabelStudio

        return LabelStudio(base_url=self.label_studio.url, api_key=self.label_studio.token)

    def label(self, project_id: int, frames: list[str] | None = None, *, cls: str | None = None) -> int:
        """The simulated labeler: draws the ground truth of each unlabeled task (optionally as `cls`)."""
        ls = self.labeler()
        done = 0
        for task in ls.tasks.list(project=project_id, fields="all"):
            frame = task.data.get("frame")
            if task.annotations or (frames is not None and frame not in frames):
                continue
            result = [
                {
                    "from_name": "label",
                    "to_name": "image",
                    "type": "rectanglelabels",
                    "value": {
                        "x": b.x1 / 64 * 100,
                        "y": b.y1 / 64 * 100,
                        "width": (b.x2 - b.x1) / 64 * 100,
                        "height": (b.y2 - b.y1) / 64 * 100,
                        "rotation": 0,
                        "rectanglelabels": [cls or CLASSES[b.cls]],
                    },
                }
                for b in self.truth[frame]
            ]
            ls.annotations.create(id=task.id, result=result, was_cancelled=False)
            done += 1
        return done


@pytest.fixture(scope="module")
def central(label_studio, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN001
    home = Path(label_studio.files_root) / f"loop-{uuid.uuid4().hex[:8]}"  # Label Studio serves files under its root
    home.mkdir(parents=True)
    c = Central(home, label_studio)
    yield c
    c.client.__exit__(None, None, None)


def test_push_makes_pre_annotated_tasks_once(central: Central) -> None:
    from vision.labeling.tables import LabelingRecords, LabelingTaskRow

    keys = central.upload(3)
    runner = central.runner()
    [report] = runner.run_once([FLEET])
    assert report.pushed >= 3 and not report.errors
    ls = central.labeler()
    tasks = {t.data["frame"]: t for t in ls.tasks.list(project=report.project_id, fields="all")}
    assert set(keys) <= set(tasks)
    task = tasks[keys[0]]
    assert task.predictions, "the model's detections come as pre-annotations"
    pred = task.predictions[0]
    pred = pred if isinstance(pred, dict) else pred.dict()
    assert pred["model_version"] == central.production
    assert pred["result"][0]["value"]["rectanglelabels"] == ["spot"]
    image = ls._client_wrapper.httpx_client.httpx_client.get(
        central.label_studio.url + task.data["image"], headers={"Authorization": f"Token {central.label_studio.token}"}
    )
    assert image.status_code == 200 and image.content[:3] == b"\xff\xd8\xff", "the labeler's browser gets the frame"

    [again] = runner.run_once([FLEET])
    assert again.pushed == 0
    # A crash after Label Studio made the tasks but before they were recorded: found, not sent twice.
    with central.ctx.metadata.session() as s, s.begin():
        s.query(LabelingTaskRow).filter(LabelingTaskRow.frame.in_(keys)).delete()
    [after_crash] = runner.run_once([FLEET])
    assert after_crash.pushed == 0
    assert set(keys) <= LabelingRecords(central.ctx.metadata).known_frames()
    assert len(list(ls.tasks.list(project=report.project_id))) == len(tasks)


def test_pull_converts_with_our_class_ids_and_versions_the_dataset(central: Central) -> None:
    from vision.datasets.version_store import DatasetVersionStore
    from vision.labeling.tables import LabelingRecords

    keys = central.upload(2)
    runner = central.runner()
    [r] = runner.run_once([FLEET])
    ls = central.labeler()
    tasks = {t.data["frame"]: t for t in ls.tasks.list(project=r.project_id, fields="all")}
    # "crack" is class 2 here; Label Studio's own YOLO export would number it 0 (alphabetical)
    one = {
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "value": {"x": 10, "y": 20, "width": 30, "height": 40, "rotation": 0, "rectanglelabels": ["crack"]},
    }
    ls.annotations.create(id=tasks[keys[0]].id, result=[one], was_cancelled=False)
    ls.annotations.create(id=tasks[keys[1]].id, result=[], was_cancelled=True)  # the labeler skipped it
    [r] = runner.run_once([FLEET])
    by_frame = {t.frame: t for t in LabelingRecords(central.ctx.metadata).tasks(FLEET)}
    assert by_frame[keys[0]].labels == "2 0.250000 0.400000 0.300000 0.400000\n"
    assert by_frame[keys[1]].status == "skipped" and by_frame[keys[1]].labels is None
    first = DatasetVersionStore(central.ctx.metadata).get(r.dataset)
    sources = json.loads((Path(first.data_yaml).parent / "sources.json").read_text())
    assert sources[keys[0]]["task_id"] == tasks[keys[0]].id
    assert sources[keys[0]]["annotation_id"] == by_frame[keys[0]].annotation_id
    assert keys[1] not in sources, "a skipped frame is never trained on"

    # The labeler corrects the pulled task: a new dataset version.
    ann = ls.annotations.list(id=tasks[keys[0]].id)[0]
    ls.annotations.update(id=ann.id, result=[one | {"value": one["value"] | {"rectanglelabels": ["scratch"]}}])
    [r2] = runner.run_once([FLEET])
    assert r2.pulled == 1 and r2.dataset != r.dataset
    assert {t.frame: t for t in LabelingRecords(central.ctx.metadata).tasks(FLEET)}[keys[0]].labels.startswith("0 ")


def test_the_webhook_reads_the_annotation_back_and_takes_only_its_projects_token(central: Central) -> None:
    from vision.labeling.client import WEBHOOK_HEADER, webhook_token
    from vision.labeling.tables import LabelingRecords
    from vision.loop.runner import webhook_secret

    [key] = central.upload(1)
    [r] = central.runner().run_once([FLEET])
    task = next(t for t in central.labeler().tasks.list(project=r.project_id, fields="all") if t.data["frame"] == key)
    central.labeler().annotations.create(id=task.id, result=[], was_cancelled=False)  # "no defect here"
    forged = {"id": 987654, "was_cancelled": True, "result": []}  # what the event claims is not what counts
    event = {
        "action": "ANNOTATION_CREATED",
        "project": {"id": r.project_id},
        "task": {"id": task.id},
        "annotation": forged,
    }
    url, secret = "/v1/labeling/webhook", webhook_secret(central.ctx)
    assert central.client.post(url, json=event).status_code == 401
    assert central.client.post(url, json=event, headers={WEBHOOK_HEADER: secret}).status_code == 401, (
        "not the raw secret"
    )
    other = webhook_token(secret, r.project_id + 1)
    assert central.client.post(url, json=event, headers={WEBHOOK_HEADER: other}).status_code == 401, "another project's"
    ok = central.client.post(url, json=event, headers={WEBHOOK_HEADER: webhook_token(secret, r.project_id)})
    assert ok.status_code == 200 and ok.json()["stored"] is True, ok.text
    row = {t.frame: t for t in LabelingRecords(central.ctx.metadata).tasks(FLEET)}[key]
    assert row.status == "labeled" and row.labels == "", (
        "the annotation in Label Studio counts: an explicit 'no defect'"
    )
    assert row.annotation_id != 987654
    not_ours = event | {"task": {"id": 10**9}}
    answer = central.client.post(url, json=not_ours, headers={WEBHOOK_HEADER: webhook_token(secret, r.project_id)})
    assert answer.status_code == 200 and answer.json()["stored"] is False


def test_invalid_and_deleted_annotations(central: Central) -> None:
    from vision.labeling.tables import LabelingRecords

    a, b = central.upload(2)
    runner = central.runner()
    [r] = runner.run_once([FLEET])
    ls = central.labeler()
    tasks = {t.data["frame"]: t for t in ls.tasks.list(project=r.project_id, fields="all")}
    box = {"x": 10, "y": 10, "width": 20, "height": 20, "rotation": 0}
    bad = {
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "value": box | {"rectanglelabels": ["dent"]},
    }
    ls.annotations.create(id=tasks[a].id, result=[bad], was_cancelled=False)
    good = bad | {"value": box | {"rectanglelabels": ["spot"]}}
    made = ls.annotations.create(id=tasks[b].id, result=[good], was_cancelled=False)
    [r] = runner.run_once([FLEET])
    rows = {t.frame: t for t in LabelingRecords(central.ctx.metadata).tasks(FLEET)}
    assert rows[a].status == "invalid" and rows[a].labels is None and r.invalid >= 1, (
        "an unknown class is not trained on"
    )
    assert rows[b].status == "labeled"
    ls.annotations.delete(id=made.id)  # the labeler takes it back
    runner.run_once([FLEET])
    assert {t.frame: t for t in LabelingRecords(central.ctx.metadata).tasks(FLEET)}[b].status == "pushed"


def test_label_studio_calls_the_webhook_when_a_labeler_submits(central: Central) -> None:
    import time

    from live_server import serve_in_thread

    from vision.labeling.tables import LabelingRecords

    [key] = central.upload(1)
    with serve_in_thread(central.app) as url:
        runner = central.runner(loop_webhook_url=f"{url}/v1/labeling/webhook")
        [r] = runner.run_once([FLEET])  # pushes, and sets the project's webhook
        central.label(r.project_id, [key])  # the labeler submits in Label Studio; nothing pulls
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            row = {t.frame: t for t in LabelingRecords(central.ctx.metadata).tasks(FLEET)}[key]
            if row.status == "labeled":
                break
            time.sleep(0.2)
    assert row.status == "labeled", "Label Studio's webhook reached central and the label was stored"
    assert row.labels is not None and len(row.labels.splitlines()) == len(central.truth[key])


def test_an_outage_during_push_delays_and_loses_nothing(central: Central) -> None:
    from vision.labeling.tables import LabelingRecords

    keys = central.upload(2)
    central.label_studio.stop()
    try:
        [r] = central.runner().run_once([FLEET])
        assert r.errors and "unreachable" in r.errors[0]
        assert not set(keys) & LabelingRecords(central.ctx.metadata).known_frames()
    finally:
        central.label_studio.start()
    [r] = central.runner().run_once([FLEET])
    assert r.pushed == 2 and not r.errors
    assert set(keys) <= LabelingRecords(central.ctx.metadata).known_frames()
    central.label(r.project_id, keys)
    central.label_studio.stop()  # down again after the labelers worked: the labels wait in Label Studio
    try:
        [r] = central.runner().run_once([FLEET])
        assert r.errors
    finally:
        central.label_studio.start()
    [r] = central.runner().run_once([FLEET])
    rows = {t.frame: t for t in LabelingRecords(central.ctx.metadata).tasks(FLEET)}
    assert all(rows[k].status == "labeled" for k in keys), "pulled once it was back"


def test_a_cycle_retrains_judges_promotes_and_devices_get_the_model(central: Central) -> None:
    from vision.labeling.tables import LabelingRecords

    central.upload(8)
    runner = central.runner(loop_gate_min_gain=-1.0, loop_gate_tolerance=1.0, loop_gate_max_class_drop=1.0)
    [r] = runner.run_once([FLEET])
    central.label(r.project_id)
    central.label_studio.restart()  # the server restarted mid-cycle: labels are still there
    [r] = runner.run_once([FLEET])
    assert not r.errors, r.errors
    assert r.cycle and r.cycle["status"] == "promoted", r
    assert r.promoted_version and r.promoted_version != central.production
    mv = central.registry.get(r.promoted_version)
    assert mv.tags["parent_version"] == central.production
    assert mv.tags["labeled_dataset"] == r.dataset
    assert mv.tags["gate.passed"] == "true"
    trained_on = (central.home / "labeling" / FLEET / f"train-{r.cycle['id']}" / "train.txt").read_text()
    assert "/holdout/" not in trained_on and "/images/train/" in trained_on, "held-out frames never reach training"
    from live_server import serve_in_thread

    from edge.updater import ModelUpdater, UpdateStatus

    with serve_in_thread(central.app) as url:  # a device of the fleet polls, over HTTP
        updater = ModelUpdater(
            central.home / "device-models", central=url, token=TOKEN, fleet=FLEET, loader=lambda p: None
        )
        result = updater.check()
    assert result.status == UpdateStatus.UPDATED and updater.current().version == r.promoted_version
    assert LabelingRecords(central.ctx.metadata).cycles(FLEET)[0].status == "promoted"
    from shared.monitoring.status import monitoring_status

    models = monitoring_status(central.ctx.metadata, settings=central.settings)["models"]
    assert {"alias": f"production-{FLEET}", "fleet": FLEET, "version": r.promoted_version} in models
    central.production = r.promoted_version


def test_a_candidate_that_fails_the_gate_is_rejected_with_its_reasons(central: Central) -> None:
    central.upload(8)
    runner = central.runner(loop_gate_min_gain=1.0)  # no model gains a whole mAP point: rejected
    [r] = runner.run_once([FLEET])
    central.label(r.project_id)
    [r] = runner.run_once([FLEET])
    assert r.cycle and r.cycle["status"] == "rejected"
    assert any("new-data mAP50" in why for why in r.rejected)
    assert central.registry.production(FLEET).version == central.production, "production is unchanged"
    assert central.registry.get(r.cycle["candidate_version"]).tags["gate.passed"] == "false"


def test_a_crash_mid_cycle_resumes_at_its_stage(central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    import vision.release

    central.upload(8)
    runner = central.runner(loop_gate_min_gain=-1.0, loop_gate_tolerance=1.0, loop_gate_max_class_drop=1.0)
    [r] = runner.run_once([FLEET])
    central.label(r.project_id)

    monkeypatch.setattr(vision.release, "export_version", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    [r] = runner.run_once([FLEET])
    assert r.errors and "export stage" in r.errors[0]
    monkeypatch.undo()
    versions_before = len(central.registry.versions())
    [r] = runner.run_once([FLEET])
    assert r.cycle["status"] == "promoted", r
    assert len(central.registry.versions()) == versions_before, "the candidate trained before the crash is reused"


def test_loop_run_once_cli_prints_its_report(central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from shared.cli import main

    central.upload(1)
    monkeypatch.setenv("LOOPLINE_HOME", str(central.home))
    monkeypatch.setenv("LOOPLINE_LABEL_STUDIO_URL", central.label_studio.url)
    monkeypatch.setenv("LOOPLINE_LABEL_STUDIO_TOKEN", central.label_studio.token)
    monkeypatch.setenv("LOOPLINE_LOOP_MIN_NEW_LABELS", "1000")
    out = CliRunner().invoke(main, ["loop", "run-once", "--fleet", FLEET, "--json"])
    assert out.exit_code == 0, out.output
    [fleet] = json.loads(out.stdout)["fleets"]
    assert fleet["fleet"] == FLEET and fleet["pushed"] == 1 and fleet["project_id"]
    assert {"pulled", "labeled", "skipped", "dataset", "trigger", "waiting", "cycle", "promoted_version"} <= set(fleet)


def test_frames_in_an_s3_bucket_reach_label_studio_inline(central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from s3_server import new_bucket, s3_credentials, s3_server

    from shared.objectstore import S3ObjectStore
    from vision.labeling.client import LabelStudioLabeling
    from vision.loop.runner import LoopRunner

    s3_credentials(monkeypatch)
    with s3_server() as endpoint:
        objects = S3ObjectStore(new_bucket(endpoint), endpoint_url=endpoint)
        ctx = dataclasses.replace(central.ctx, objects=objects)
        img, _ = render_plate(central.rng, 64, Shift())
        jpg = cv2.imencode(".jpg", img)[1].tobytes()
        [frame_id] = central.frame_ids(1)
        record = {"device_id": "cam-s3", "frame_id": frame_id, "fleet": FLEET, "image": f"cam-s3/{frame_id}.jpg"}
        objects.put(f"frames/cam-s3/{frame_id}.jpg", jpg)
        objects.put(f"frames/cam-s3/{frame_id}.json", json.dumps(record | {"width": 64, "height": 64}).encode())
        labeling = LabelStudioLabeling(
            central.label_studio.url, central.label_studio.token, files_root=central.label_studio.files_root
        )
        [r] = LoopRunner(ctx, labeling, central.registry).run_once([FLEET])
    assert not r.errors and r.pushed == 1
    task = next(
        t
        for t in central.labeler().tasks.list(project=r.project_id, fields="all")
        if t.data["frame"] == f"cam-s3/{frame_id}"
    )
    assert task.data["image"].startswith("data:image/jpeg;base64,"), "a bucket is not on Label Studio's disk"
