"""Where dataset versions are recorded: vision's `dataset_versions` table on the metadata database.

One row per immutable version of a training dataset (`name@version`), with its counts,
classes and manifest. The table lives on the shared declarative `Base`, so the metadata
database's migrations (shared/metadata/migrations/) create and change it; this module never
creates tables. It imports only SQLAlchemy and the shared core (no OpenCV, no ultralytics),
so the migrations can load it. Hashing and checking the data is `versions.py`'s work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import JSON, DateTime, Integer, String, UniqueConstraint, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from shared.metadata.store import MetadataStore
from shared.metadata.tables import Base, utcnow


class DatasetVersionRow(Base):
    """One immutable version of a training dataset: a content hash over its valid files.

    (name, version) is unique, so snapshotting unchanged data again finds this row instead
    of adding one. `run_id` is a plain integer, not a foreign key, so purging runs never
    orphans or blocks a version a model still names.
    """

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_dataset_versions_name_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(256), index=True)
    version: Mapped[str] = mapped_column(String(64), index=True)
    data_yaml: Mapped[str] = mapped_column(String(1024))  # the derived, trainable data.yaml
    source_yaml: Mapped[str] = mapped_column(String(1024), default="")  # the data.yaml snapshotted
    run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    counts: Mapped[dict] = mapped_column(JSON, default=dict)  # {split: {images, boxes, excluded}}
    classes: Mapped[list] = mapped_column(JSON, default=list)
    manifest: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


@dataclass(frozen=True)
class DatasetVersionInfo:
    """A detached, read-only view of a dataset version row."""

    id: int
    name: str
    version: str
    data_yaml: str
    source_yaml: str
    run_id: int | None
    counts: dict
    classes: tuple[str, ...]
    manifest: dict
    created_at: datetime

    @property
    def ref(self) -> str:
        """`name@version`: how a model names the data it was trained on."""
        return f"{self.name}@{self.version}"

    @classmethod
    def of(cls, row: DatasetVersionRow) -> DatasetVersionInfo:
        return cls(
            id=row.id,
            name=row.name,
            version=row.version,
            data_yaml=row.data_yaml,
            source_yaml=row.source_yaml,
            run_id=row.run_id,
            counts=dict(row.counts or {}),
            classes=tuple(row.classes or ()),
            manifest=dict(row.manifest or {}),
            created_at=row.created_at,
        )


class DatasetVersionStore:
    """Dataset versions in a metadata store's database (its engine and sessions)."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    def add(
        self,
        *,
        name: str,
        version: str,
        data_yaml: str,
        source_yaml: str = "",
        run_id: int | None = None,
        counts: dict | None = None,
        classes: Sequence[str] = (),
        manifest: dict | None = None,
    ) -> DatasetVersionInfo:
        """Store a version; an existing (name, version) is returned as it is, never duplicated."""
        existing = self._find(name, version)
        if existing is not None:
            return existing
        try:
            with self.store.session() as s, s.begin():
                row = DatasetVersionRow(
                    name=name,
                    version=version,
                    data_yaml=data_yaml,
                    source_yaml=source_yaml,
                    run_id=run_id,
                    counts=counts or {},
                    classes=list(classes),
                    manifest=manifest or {},
                    created_at=utcnow(),
                )
                s.add(row)
                s.flush()
                return DatasetVersionInfo.of(row)
        except IntegrityError:  # a concurrent snapshot of the same data won the insert
            found = self._find(name, version)
            if found is None:
                raise
            return found

    def get(self, name_or_id: str | int) -> DatasetVersionInfo | None:
        """By id (an int or digits), by `name@version`, or the latest version of `name`."""
        with self.store.session() as s:
            if isinstance(name_or_id, int) or str(name_or_id).isdigit():
                row = s.get(DatasetVersionRow, int(name_or_id))
                return DatasetVersionInfo.of(row) if row else None
        name, sep, version = str(name_or_id).rpartition("@")
        if sep:
            return self._find(name, version)
        latest = self.versions(version)
        return latest[0] if latest else None

    def versions(self, name: str | None = None) -> list[DatasetVersionInfo]:
        """Versions, newest first; only those of `name` when given."""
        with self.store.session() as s:
            q = select(DatasetVersionRow).order_by(DatasetVersionRow.id.desc())
            if name is not None:
                q = q.where(DatasetVersionRow.name == name)
            return [DatasetVersionInfo.of(r) for r in s.scalars(q)]

    def purge(self) -> None:
        """Delete every version record (tests); the version folders on disk are left alone."""
        with self.store.session() as s, s.begin():
            s.execute(delete(DatasetVersionRow))

    def _find(self, name: str, version: str) -> DatasetVersionInfo | None:
        with self.store.session() as s:
            row = s.scalar(
                select(DatasetVersionRow).where(DatasetVersionRow.name == name, DatasetVersionRow.version == version)
            )
            return DatasetVersionInfo.of(row) if row else None
