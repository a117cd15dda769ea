"""What the loop remembers between cycles: frames sent to labeling, and retraining cycles.

`labeling_tasks` has one row per frame sent to a labeling project: the task it became, the
annotation last pulled for it (converted to YOLO lines with our class ids) and whether the
frame is held out from training. A row is written only after the labeling server
acknowledged the task, and the push reconciles with the server first, so a crash between
the two neither loses a frame nor sends it twice.

`loop_cycles` has one row per retraining cycle: the stage it reached and what each stage
produced (dataset version, candidate version, gate results), so a crash resumes at the stage
it stopped in. Both live on the metadata store (SQLite or PostgreSQL) through its migrations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, Integer, String, Text, UniqueConstraint, select, update
from sqlalchemy.orm import Mapped, mapped_column

from shared.metadata.store import MetadataStore
from shared.metadata.tables import Base, utcnow

# A task's label state: sent and waiting, labeled (boxes or an explicit "no defect"), skipped
# by the labeler, or invalid (an annotation that cannot be a YOLO label: an unknown class, a
# rotated box; the labeler fixes it). Only labeled frames are trained on.
PUSHED, LABELED, SKIPPED, INVALID = "pushed", "labeled", "skipped", "invalid"


class LabelingTaskRow(Base):
    """One frame sent to labeling (`frame` is DEVICE/FRAME_ID, as stored by the device API)."""

    __tablename__ = "labeling_tasks"
    __table_args__ = (UniqueConstraint("project_id", "task_id", name="uq_labeling_tasks_project_task"),)

    frame: Mapped[str] = mapped_column(String(200), primary_key=True)
    fleet: Mapped[str] = mapped_column(String(128), index=True)
    project_id: Mapped[int] = mapped_column(Integer)
    task_id: Mapped[int] = mapped_column(Integer)
    image: Mapped[str] = mapped_column(String(300))  # object key under frames/
    model_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    holdout: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default=PUSHED, index=True)
    annotation_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    annotation_updated_at: Mapped[str | None] = mapped_column(String(64), nullable=True)
    labels: Mapped[str | None] = mapped_column(Text, nullable=True)  # YOLO lines, "" for "no defect"
    pushed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    labeled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class LoopCycleRow(Base):
    """One retraining cycle of a fleet, from the dataset version it starts on to its verdict."""

    __tablename__ = "loop_cycles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    fleet: Mapped[str] = mapped_column(String(128), index=True)
    stage: Mapped[str] = mapped_column(String(16))  # train, export, evaluate, promote, done
    status: Mapped[str] = mapped_column(String(16), default="running", index=True)  # running/promoted/rejected/failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # failed tries of its current stage
    trigger: Mapped[str] = mapped_column(Text, default="")
    dataset: Mapped[str] = mapped_column(String(256))  # name@version of the labeled frames
    parent_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    candidate_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    gate: Mapped[dict] = mapped_column(JSON, default=dict)
    seconds: Mapped[dict] = mapped_column(JSON, default=dict)  # per stage
    reason: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


@dataclass(frozen=True)
class LabelingTask:
    frame: str
    fleet: str
    project_id: int
    task_id: int
    image: str
    model_version: str | None
    reason: str | None
    holdout: bool
    status: str
    annotation_id: int | None
    annotation_updated_at: str | None
    labels: str | None
    labeled_at: datetime | None

    @classmethod
    def of(cls, row: LabelingTaskRow) -> LabelingTask:
        return cls(**{k: getattr(row, k) for k in cls.__dataclass_fields__})


@dataclass
class LoopCycle:
    id: int
    fleet: str
    stage: str
    status: str
    attempts: int
    trigger: str
    dataset: str
    parent_version: str | None
    candidate_version: str | None
    gate: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    reason: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @classmethod
    def of(cls, row: LoopCycleRow) -> LoopCycle:
        return cls(**{k: getattr(row, k) for k in cls.__dataclass_fields__})

    def to_json(self) -> dict:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for k in ("started_at", "finished_at"):
            out[k] = out[k].isoformat() if out[k] else None
        return out


class LabelingRecords:
    """The two tables through the metadata store's sessions."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    # --- tasks -----------------------------------------------------------------------
    def known_frames(self) -> set[str]:
        """Frames recorded as tasks."""
        with self.store.session() as s:
            return set(s.scalars(select(LabelingTaskRow.frame)))

    def add_task(self, task: dict) -> None:
        """Record a task the server acknowledged. A frame recorded in another project (the labeling
        server's database was replaced) and not labeled there moves to this task; others stay."""
        with self.store.session() as s, s.begin():
            row = s.get(LabelingTaskRow, task["frame"])
            if row is None:
                s.add(LabelingTaskRow(pushed_at=utcnow(), status=PUSHED, **task))
            elif row.project_id != task["project_id"] and row.status == PUSHED:
                row.project_id, row.task_id, row.pushed_at = task["project_id"], task["task_id"], utcnow()

    def unlabel(self, project_id: int, task_id: int) -> bool:
        """A task whose annotations were deleted in the labeling tool goes back to waiting."""
        with self.store.session() as s, s.begin():
            row = s.scalar(
                select(LabelingTaskRow).where(
                    LabelingTaskRow.project_id == project_id, LabelingTaskRow.task_id == task_id
                )
            )
            if row is None or row.status == PUSHED:
                return False
            row.status, row.labels, row.annotation_id, row.annotation_updated_at = PUSHED, None, None, None
            row.labeled_at = utcnow()
            return True

    def tasks(self, fleet: str | None = None, *, status: str | None = None) -> list[LabelingTask]:
        with self.store.session() as s:
            q = select(LabelingTaskRow).order_by(LabelingTaskRow.frame)
            if fleet is not None:
                q = q.where(LabelingTaskRow.fleet == fleet)
            if status is not None:
                q = q.where(LabelingTaskRow.status == status)
            return [LabelingTask.of(r) for r in s.scalars(q)]

    def task_by_id(self, project_id: int, task_id: int) -> LabelingTask | None:
        with self.store.session() as s:
            row = s.scalar(
                select(LabelingTaskRow).where(
                    LabelingTaskRow.project_id == project_id, LabelingTaskRow.task_id == task_id
                )
            )
            return LabelingTask.of(row) if row else None

    def record_label(self, frame: str, *, status: str, annotation_id: int, updated_at: str, labels: str | None) -> bool:
        """Store an annotation's outcome; False when this exact annotation was stored already."""
        with self.store.session() as s, s.begin():
            row = s.get(LabelingTaskRow, frame)
            if row is None:
                return False
            if (row.annotation_id, row.annotation_updated_at, row.status, row.labels) == (
                annotation_id,
                updated_at,
                status,
                labels,
            ):
                return False
            row.status, row.annotation_id, row.annotation_updated_at = status, annotation_id, updated_at
            row.labels, row.labeled_at = labels, utcnow()
            return True

    # --- cycles ----------------------------------------------------------------------
    def open_cycle(self, fleet: str) -> LoopCycle | None:
        """The fleet's unfinished cycle (a crash left it), if any."""
        with self.store.session() as s:
            row = s.scalar(
                select(LoopCycleRow)
                .where(LoopCycleRow.fleet == fleet, LoopCycleRow.status == "running")
                .order_by(LoopCycleRow.id.desc())
            )
            return LoopCycle.of(row) if row else None

    def start_cycle(self, fleet: str, *, dataset: str, parent_version: str | None, trigger: str) -> LoopCycle:
        with self.store.session() as s, s.begin():
            row = LoopCycleRow(
                fleet=fleet,
                stage="train",
                status="running",
                attempts=0,
                trigger=trigger,
                dataset=dataset,
                parent_version=parent_version,
                gate={},
                seconds={},
                started_at=utcnow(),
            )
            s.add(row)
            s.flush()
            return LoopCycle.of(row)

    def save_cycle(self, cycle: LoopCycle) -> None:
        """Write the cycle's stage and results (after each stage: what a resume starts from)."""
        values = {
            k: getattr(cycle, k)
            for k in ("stage", "status", "attempts", "candidate_version", "gate", "seconds", "reason", "finished_at")
        }
        with self.store.session() as s, s.begin():
            s.execute(update(LoopCycleRow).where(LoopCycleRow.id == cycle.id).values(**values))

    def cycles(self, fleet: str | None = None, limit: int = 20) -> list[LoopCycle]:
        with self.store.session() as s:
            q = select(LoopCycleRow).order_by(LoopCycleRow.id.desc()).limit(limit)
            if fleet is not None:
                q = q.where(LoopCycleRow.fleet == fleet)
            return [LoopCycle.of(r) for r in s.scalars(q)]

    def last_cycle_start(self, fleet: str) -> datetime | None:
        """When the fleet's last cycle started: its labeled dataset was taken then."""
        with self.store.session() as s:
            return s.scalar(
                select(LoopCycleRow.started_at).where(LoopCycleRow.fleet == fleet).order_by(LoopCycleRow.id.desc())
            )
