"""One cycle of the loop, per fleet: push frames, pull labels, and maybe retrain, judge, promote.

- **Push**: frames the fleet's devices uploaded become tasks in the fleet's labeling
  project, with the model's detections as pre-annotations. The project's tasks are read
  first, so a frame pushed before a crash (task made, row not yet written) is recorded, not
  sent again.
- **Pull**: the annotation that counts for each task is converted to YOLO lines with our
  class ids and stored; a skipped task is kept out of training. The webhook endpoint applies
  the same code as annotations arrive; the pull is the fallback that catches everything.
- **Dataset**: a change in the labels becomes a new version of the fleet's labeled dataset.
- **Trigger**: enough new labels, an open retraining request from the monitoring core, or the
  schedule; requests coalesce into the one cycle they trigger.
- **Retrain → export → evaluate → promote**: each stage is recorded when it ends; a crash
  resumes at the stage it stopped in (a candidate registered before the crash is found by
  its `loop_cycle` tag, not trained twice). A labeling server that is down delays push and
  pull and loses nothing: frames stay stored, annotations stay in Label Studio.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.context import AppContext
from vision.api import drift_stream
from vision.datasets.version_store import DatasetVersionStore
from vision.labeling.client import Annotation, Labeling, LabelingUnavailable
from vision.labeling.convert import LabelError, prediction, yolo_lines
from vision.labeling.tables import INVALID, LABELED, PUSHED, SKIPPED, LabelingRecords, LoopCycle
from vision.loop import labeled as datasets
from vision.loop.gate import GateRules, judge
from vision.registry import ModelRegistry

log = logging.getLogger(__name__)
PUSH_BATCH = 50
MAX_ATTEMPTS = 3  # tries of one stage before its cycle is marked failed


@dataclass
class FleetReport:
    """What one cycle did for one fleet (the JSON of `loopline loop run-once`)."""

    fleet: str
    project_id: int | None = None
    pushed: int = 0
    pulled: int = 0  # annotations new or changed since the last pull
    labeled: int = 0  # frames with a usable label in all
    skipped: int = 0
    invalid: int = 0  # annotations that cannot be YOLO labels (an unknown class, a rotated box): labelers fix them
    dataset: str | None = None
    trigger: str | None = None
    waiting: str | None = None  # why no retraining started, when none did
    cycle: dict | None = None
    promoted_version: str | None = None
    rejected: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def webhook_secret(ctx: AppContext) -> str:
    """The annotation webhook's secret: the setting, or one generated once and kept under home."""
    configured = ctx.settings.loop_webhook_secret
    if configured is not None:
        return configured.get_secret_value()
    path = ctx.settings.home / "labelstudio" / "webhook-secret"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:  # created once, readable by us only; of two processes racing, the first one's secret stands
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):
            secret = path.read_text().strip()
            if secret:
                return secret
            time.sleep(0.02)  # the winner is writing it
        raise RuntimeError(f"{path} is empty: delete it, and the next start makes a new secret") from None
    secret = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    return secret


class LoopRunner:
    """The loop over the composition root's store, alerts and drift monitor, and a labeling port."""

    def __init__(
        self,
        ctx: AppContext,
        labeling: Labeling | None,
        registry: ModelRegistry,
        *,
        on_stage: Callable[[str, str], None] | None = None,
    ) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.labeling = labeling
        self.registry = registry
        self.records = LabelingRecords(ctx.metadata)
        self.frames = ctx.objects.scoped("frames")
        self.frames_dir = self.settings.home / "frames"
        self.on_stage = on_stage or (lambda fleet, what: None)
        self._records_read: dict[str, dict] = {}
        self.rules = GateRules(
            tolerance=self.settings.loop_gate_tolerance,
            min_gain=self.settings.loop_gate_min_gain,
            max_class_drop=self.settings.loop_gate_max_class_drop,
        )

    # --- the cycle -------------------------------------------------------------------
    def run_once(self, fleets: Sequence[str] | None = None) -> list[FleetReport]:
        """One cycle for each fleet (default: every fleet with frames); skipped while another runs."""
        import fcntl

        lock_path = self.settings.home / "labeling" / "loop.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                busy = f"another loop cycle is running on this home ({lock_path}); this one is skipped"
                log.info(busy)
                return [FleetReport(fleet=f, waiting=busy) for f in fleets or ["*"]]
            self._records_read = {}  # each frame record is read once per run, by fleets() or push()
            return self._run_fleets(fleets)

    def _run_fleets(self, fleets: Sequence[str] | None) -> list[FleetReport]:
        reports = []
        for fleet in fleets or self.fleets():
            report = FleetReport(fleet=fleet)
            try:
                self._cycle(fleet, report)
            except Exception as exc:  # one fleet's failure must not stop the others
                log.exception("loop cycle of fleet %s failed", fleet)
                report.errors.append(f"{type(exc).__name__}: {exc}")
            reports.append(report)
        return reports

    def fleets(self) -> list[str]:
        """Fleets whose devices uploaded frames, and fleets with an unfinished cycle."""
        tasks = self.records.tasks()
        found = {t.fleet for t in tasks}  # frames already pushed name their fleet here: not read again
        found |= {rec.get("fleet") for rec in self._frame_records(skip={t.frame for t in tasks})}
        return sorted(f for f in found if f)

    def _cycle(self, fleet: str, report: FleetReport) -> None:
        production = self.registry.production(fleet)
        if production is None:
            report.waiting = "the fleet has no production model yet"
            return
        names = self.classes(production.tags)
        if self.labeling is not None:
            self._exchange(fleet, names, report)
        tasks = self.records.tasks(fleet)
        report.labeled = sum(t.status == LABELED for t in tasks)
        report.skipped = sum(t.status == SKIPPED for t in tasks)
        report.invalid = sum(t.status == INVALID for t in tasks)
        cycle = self.records.open_cycle(fleet)
        if cycle is None:
            if report.labeled == 0:
                report.waiting = "no labeled frames yet"
                return
            with self._timed(report, "dataset"):
                version = datasets.snapshot_labeled(
                    self.settings.home / "labeling" / fleet / "dataset",
                    fleet,
                    tasks,
                    self.frames,
                    names,
                    self.ctx.metadata,
                )
            report.dataset = version.ref
            requests = self.ctx.alerts.open_retraining_requests(drift_stream(fleet))
            trigger, waiting = self._trigger(fleet, tasks, version.record, requests)
            if trigger is None:
                report.waiting = waiting
                return
            cycle = self.records.start_cycle(
                fleet, dataset=version.ref, parent_version=production.version, trigger=trigger
            )
            for req in requests:  # coalesced: this one cycle answers them all
                self.ctx.alerts.consume(req.id, by=f"loop cycle {cycle.id}")
            self.on_stage(fleet, f"cycle {cycle.id} started: {trigger}")
        else:
            report.dataset = cycle.dataset
            for req in self.ctx.alerts.open_retraining_requests(drift_stream(fleet)):
                if _utc(req.created_at) <= _utc(cycle.started_at):  # a crash came between start and consume
                    self.ctx.alerts.consume(req.id, by=f"loop cycle {cycle.id}")
            self.on_stage(fleet, f"cycle {cycle.id} resumes at its {cycle.stage} stage")
        report.trigger = cycle.trigger
        self._advance(cycle, report)
        report.cycle = cycle.to_json()

    def _exchange(self, fleet: str, names: Sequence[str], report: FleetReport) -> None:
        """Push, then pull, each on its own: a failed push (or webhook set-up) never stops the pull."""
        assert self.labeling is not None
        with self._timed(report, "push"):
            try:
                report.project_id = self.labeling.ensure_project(fleet, names)
            except LabelingUnavailable as exc:
                log.warning("labeling is unavailable; frames and labels wait for the next cycle: %s", exc)
                report.errors.append(str(exc))
                return
            try:
                self._webhook(report.project_id)
            except LabelingUnavailable as exc:  # polling still pulls every annotation
                log.warning("annotation webhook not set up (annotations are polled instead): %s", exc)
            try:
                report.pushed = self.push(fleet, report.project_id)
            except LabelingUnavailable as exc:
                log.warning("push failed; the frames stay stored and go next cycle: %s", exc)
                report.errors.append(str(exc))
        with self._timed(report, "pull"):
            try:
                report.pulled = self.pull(report.project_id, names)
            except LabelingUnavailable as exc:
                log.warning("pull failed; the annotations stay in Label Studio for the next cycle: %s", exc)
                report.errors.append(str(exc))

    @contextmanager
    def _timed(self, report: FleetReport, stage: str) -> Iterator[None]:
        """Announce a stage and add its duration to the report."""
        self.on_stage(report.fleet, stage)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            report.seconds[stage] = round(report.seconds.get(stage, 0.0) + time.perf_counter() - t0, 2)

    # --- push and pull ---------------------------------------------------------------
    def _frame_records(self, skip: set[str]) -> list[dict]:
        """The stored frame records not in `skip` (each read from the store once per run)."""
        out = []
        for key in self.frames.list():
            frame = key.removesuffix(".json")
            if not key.endswith(".json") or frame in skip:
                continue
            if frame not in self._records_read:
                try:
                    self._records_read[frame] = json.loads(self.frames.get(key)) | {"_key": frame}
                except (ValueError, OSError) as exc:
                    log.warning("frame record %s unreadable, left out: %s", key, exc)
                    continue
            out.append(self._records_read[frame])
        return out

    def push(self, fleet: str, project_id: int) -> int:
        """Send the fleet's new frames as pre-annotated tasks; returns how many were sent."""
        assert self.labeling is not None
        # Frames recorded already stay put, but for this fleet's still-waiting frames recorded in another
        # project (the labeling server's database was replaced): those go to this project.
        done = {
            t.frame
            for t in self.records.tasks()
            if t.project_id == project_id or not (t.fleet == fleet and t.status == PUSHED)
        }
        new = [r for r in self._frame_records(skip=done) if r.get("fleet") == fleet]
        if not new:
            return 0
        existing = self.labeling.existing_frames(project_id)  # tasks made before a crash: record, don't resend
        sent = 0
        todo = []
        for rec in new:
            if rec["_key"] in existing:
                self._record_task(fleet, project_id, existing[rec["_key"]], rec)
            else:
                todo.append(rec)
        for i in range(0, len(todo), PUSH_BATCH):
            batch, tasks = [], []
            for rec in todo[i : i + PUSH_BATCH]:
                try:
                    tasks.append(self._task(rec))
                    batch.append(rec)
                except (KeyError, TypeError, ValueError, OSError) as exc:  # a frame whose record or image is broken
                    log.error("frame %s cannot become a labeling task, left out: %s", rec.get("_key"), exc)
            if not tasks:
                continue
            ids = self.labeling.push(project_id, tasks, frames_dir=self.frames_dir)
            for rec in batch:
                if rec["_key"] in ids:
                    self._record_task(fleet, project_id, ids[rec["_key"]], rec)
                    sent += 1
        log.info("fleet %s: %d frames pushed to labeling project %s", fleet, sent, project_id)
        return sent

    def _task(self, rec: dict) -> dict:
        assert self.labeling is not None
        data = {
            "image": self.labeling.image_ref(self.frames_dir, rec["image"], read=lambda: self.frames.get(rec["image"])),
            "frame": rec["_key"],
            "fleet": rec.get("fleet"),
            "device": rec.get("device_id"),
            "captured_at": str(rec.get("captured_at") or ""),
            "reason": rec.get("reason"),
            "source": rec.get("source_frame"),  # the device's name for it (a file name)
        }
        pred = prediction(rec.get("predictions") or [], int(rec["width"]), int(rec["height"]), rec.get("model_version"))
        return {"data": data, "predictions": [pred]}

    def _record_task(self, fleet: str, project_id: int, task_id: int, rec: dict) -> None:
        self.records.add_task(
            {
                "frame": rec["_key"],
                "fleet": fleet,
                "project_id": project_id,
                "task_id": task_id,
                "image": rec["image"],
                "model_version": rec.get("model_version"),
                "reason": rec.get("reason"),
                "holdout": datasets.is_holdout(datasets.holdout_group(rec), self.settings.loop_holdout_share),
            }
        )

    def pull(self, project_id: int, names: Sequence[str]) -> int:
        """Store every annotation new or changed since the last pull; returns how many."""
        assert self.labeling is not None
        changed = 0
        for state in self.labeling.task_states(project_id):
            if state.annotation is None:
                changed += self.records.unlabel(project_id, state.task_id)  # its annotations were deleted
            else:
                changed += self.apply(project_id, state.annotation, names)
        return changed

    def apply(self, project_id: int, ann: Annotation, names: Sequence[str]) -> bool:
        """Store one annotation (from a pull or the webhook); True when it changed what we had."""
        task = self.records.task_by_id(project_id, ann.task_id)
        if task is None:
            log.info(
                "annotation %s is on task %s, which the loop did not push: ignored", ann.annotation_id, ann.task_id
            )
            return False
        if ann.cancelled:
            status, labels = SKIPPED, None
        else:
            try:
                status, labels = LABELED, yolo_lines(ann.result, names)
            except LabelError as exc:
                log.warning(
                    "annotation %s of frame %s (task %s) cannot be a label, frame kept out until it is fixed: %s",
                    ann.annotation_id,
                    task.frame,
                    ann.task_id,
                    exc,
                )
                status, labels = INVALID, None
        return self.records.record_label(
            task.frame, status=status, annotation_id=ann.annotation_id, updated_at=ann.updated_at, labels=labels
        )

    def _webhook(self, project_id: int) -> None:
        assert self.labeling is not None
        url = self.settings.loop_webhook_url
        if url:
            self.labeling.ensure_webhook(project_id, url, webhook_secret(self.ctx))

    # --- trigger ---------------------------------------------------------------------
    def _trigger(self, fleet: str, tasks: Sequence, labeled, requests: Sequence) -> tuple[str | None, str | None]:  # noqa: ANN001
        """(why a retraining starts now, None) or (None, what it waits for)."""
        since = self.records.last_cycle_start(fleet)
        fresh = [t for t in tasks if t.status == LABELED and (since is None or _utc(t.labeled_at) > _utc(since))]
        holdout = len(datasets.split_images(labeled, "val"))
        if not fresh:
            return None, "no new labels since the last retraining"
        if holdout < self.settings.loop_min_holdout:
            return (
                None,
                f"{holdout} held-out labeled frames, {self.settings.loop_min_holdout} needed to judge a candidate",
            )
        if requests:
            return f"retraining requested: {requests[0].reason} ({len(fresh)} new labels)", None
        if len(fresh) >= self.settings.loop_min_new_labels:
            return f"{len(fresh)} new labels (threshold {self.settings.loop_min_new_labels})", None
        every = self.settings.loop_retrain_every_s
        if every and (since is None or (datetime.now(UTC) - _utc(since)).total_seconds() >= every):
            return f"schedule: every {every:.0f} s ({len(fresh)} new labels)", None
        return None, f"{len(fresh)} new labels of {self.settings.loop_min_new_labels} needed, no retraining request"

    # --- the stages ------------------------------------------------------------------
    def _advance(self, cycle: LoopCycle, report: FleetReport) -> None:
        stages = {"train": self._train, "export": self._export, "evaluate": self._evaluate, "promote": self._promote}
        while cycle.status == "running" and cycle.stage in stages:
            stage = cycle.stage
            t0 = time.perf_counter()
            self.on_stage(cycle.fleet, stage)
            try:
                stages[stage](cycle)
            except Exception as exc:
                cycle.seconds[stage] = round(time.perf_counter() - t0, 2)
                cycle.attempts += 1
                why = f"cycle {cycle.id} failed at its {stage} stage ({cycle.attempts} of {MAX_ATTEMPTS} tries): {exc}"
                if cycle.attempts >= MAX_ATTEMPTS:  # the same error every time: stop, so a new cycle can start
                    cycle.status, cycle.reason, cycle.finished_at = "failed", why, datetime.now(UTC)
                self.records.save_cycle(cycle)  # else it stays at this stage: the next cycle tries again
                raise RuntimeError(why) from exc
            cycle.seconds[stage] = round(time.perf_counter() - t0, 2)
            report.seconds[stage] = cycle.seconds[stage]
            self.records.save_cycle(cycle)
        if cycle.status == "promoted":
            report.promoted_version = cycle.candidate_version
        elif cycle.status == "rejected":
            report.rejected = list(cycle.gate.get("reasons", [])) or [cycle.reason]

    def _labeled_version(self, cycle: LoopCycle):  # noqa: ANN202
        found = DatasetVersionStore(self.ctx.metadata).get(cycle.dataset)
        if found is None:
            raise LookupError(f"dataset version {cycle.dataset} is not in the metadata store")
        return found

    def _base_version(self, cycle: LoopCycle):  # noqa: ANN202
        parent = self.registry.get(cycle.parent_version or "production")
        ref = parent.tags.get("base_dataset") or parent.tags.get("dataset_version")
        found = DatasetVersionStore(self.ctx.metadata).get(ref) if ref else None
        if found is None:
            raise LookupError(f"version {parent.version} names no dataset version this store knows ({ref!r})")
        return found

    def _train(self, cycle: LoopCycle) -> None:
        from vision.training import train_detector

        adopted = [v for v in self.registry.versions() if v.tags.get("loop_cycle") == str(cycle.id)]
        if adopted:  # trained and registered before a crash: not trained twice
            cycle.candidate_version = adopted[-1].version
            cycle.stage = "export"
            return
        base = self._base_version(cycle)
        data = datasets.retraining_data(
            base, self._labeled_version(cycle), self.settings.home / "labeling" / cycle.fleet / f"train-{cycle.id}"
        )
        parent = self.registry.get(cycle.parent_version or "production")
        result = train_detector(
            self.settings,
            self.ctx.metadata,
            self.registry,
            data=data,
            epochs=self.settings.loop_epochs,
            imgsz=int(parent.tags.get("imgsz", 160)),
            from_version=parent.version,
            extra_tags={  # written with the registration itself: a crash cannot leave a candidate without them
                "loop_cycle": str(cycle.id),
                "fleet": cycle.fleet,
                "parent_version": parent.version,
                "labeled_dataset": cycle.dataset,
                "base_dataset": base.ref,
            },
        )
        cycle.candidate_version = result.version
        cycle.stage = "export"

    def _export(self, cycle: LoopCycle) -> None:
        from vision.release import export_version

        data = self.settings.home / "labeling" / cycle.fleet / f"train-{cycle.id}" / "data.yaml"
        if not data.exists():
            data = datasets.retraining_data(self._base_version(cycle), self._labeled_version(cycle), data.parent)
        export_version(
            self.settings, self.registry, cycle.candidate_version, int8=self.settings.loop_int8, data_yaml=data
        )
        cycle.stage = "evaluate"

    def _model_file(self, version: str) -> Path:
        from vision.training import model_dir

        mv = self.registry.get(version)
        folder = model_dir(self.settings, mv.version)
        precision = mv.tags.get("preferred_precision", "fp32")  # what devices run is what is judged
        for onnx in (folder / f"model.{precision}.onnx", folder / "model.fp32.onnx"):
            if onnx.exists():
                return onnx
        pt = folder / "best.pt"
        return pt if pt.exists() else self.registry.download(mv.version, "weights/best.pt", folder)

    def _evaluate(self, cycle: LoopCycle) -> None:
        from vision.validation import evaluate_detector
        from vision.yolo_env import prepare_ultralytics

        prepare_ultralytics(self.settings.home, self.settings.train_threads)
        clean = self.settings.home / "labeling" / cycle.fleet / f"train-{cycle.id}" / "data.yaml"
        holdout = datasets.holdout_data(self._labeled_version(cycle))
        scores: dict[str, dict[str, Any]] = {}
        for role, version in (("production", cycle.parent_version), ("candidate", cycle.candidate_version)):
            model = self._model_file(str(version))
            scores[role] = {
                "version": version,
                "clean": evaluate_detector(model, clean, split="val"),
                "new": evaluate_detector(model, holdout, split="val") if holdout else None,
            }
        verdict = judge(scores["production"], scores["candidate"], self.rules)
        cycle.gate = verdict.to_json() | {
            "scores": {
                role: {k: (v if k == "version" else _summary(v)) for k, v in s.items()} for role, s in scores.items()
            }
        }
        tags = {"gate.passed": str(verdict.passed).lower(), "gate.reasons": "; ".join(verdict.reasons)[:4000]}
        for role, s in scores.items():
            tags[f"gate.{role}.clean_map50"] = s["clean"]["mAP50"]
            if s["new"] is not None:
                tags[f"gate.{role}.new_map50"] = s["new"]["mAP50"]
        self.registry.set_tags(str(cycle.candidate_version), tags)
        if verdict.passed:
            cycle.stage = "promote"
        else:
            cycle.stage, cycle.status = "done", "rejected"
            cycle.reason = "; ".join(verdict.reasons)
            cycle.finished_at = datetime.now(UTC)
            log.warning("candidate %s of fleet %s rejected: %s", cycle.candidate_version, cycle.fleet, cycle.reason)

    def _promote(self, cycle: LoopCycle) -> None:
        version = str(cycle.candidate_version)
        now = self.registry.production(cycle.fleet)
        if now is not None and now.version not in (cycle.parent_version, version):
            cycle.stage, cycle.status = "done", "rejected"
            cycle.reason = (
                f"production of fleet {cycle.fleet} moved from v{cycle.parent_version} to v{now.version} during the "
                "cycle (a promotion or rollback by hand): not overwritten"
            )
            cycle.finished_at = datetime.now(UTC)
            return
        self.registry.promote(version, fleet=cycle.fleet)
        self.ctx.drift.request_reference(drift_stream(cycle.fleet), label=version)
        cycle.stage, cycle.status = "done", "promoted"
        cycle.reason = f"promoted to production of fleet {cycle.fleet}"
        cycle.finished_at = datetime.now(UTC)
        log.info("fleet %s: version %s promoted (was %s)", cycle.fleet, version, cycle.parent_version)

    def classes(self, tags: dict[str, str]) -> list[str]:
        ref = tags.get("base_dataset") or tags.get("dataset_version")
        found = DatasetVersionStore(self.ctx.metadata).get(ref) if ref else None
        if found is None or not found.classes:
            raise LookupError(f"the production model names no dataset version this store knows ({ref!r})")
        return list(found.classes)


def _summary(result: dict | None) -> dict | None:
    if result is None:
        return None
    return {k: result[k] for k in ("mAP50", "mAP50-95", "precision", "recall", "per_class")}


def _utc(at: datetime | None) -> datetime:
    if at is None:
        return datetime.min.replace(tzinfo=UTC)
    return at if at.tzinfo else at.replace(tzinfo=UTC)
