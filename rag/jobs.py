"""The documents vertical's jobs: ingest a server path, re-sync the configured folder.

Both run through the same ingestion pipeline as the CLI; a job reports files done out of
files in the run, and the run record it made is its result. A shutdown cuts the ingest
short at the next file (it is then given back to the queue, and the next run finds the
files already indexed unchanged).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import BaseModel, Field, StringConstraints

from rag.models import run_out
from rag.service import RagService
from shared.context import AppContext
from shared.ingestion import Cancelled, RunSummary
from shared.jobs.kinds import JobKind, JobRun

T = TypeVar("T")
Group = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]


class IngestParams(BaseModel):
    path: str = Field(min_length=1, max_length=4096, description="A file or folder on the server.")
    groups: list[Group] = Field(min_length=1, description="Groups that may read what is ingested.")


class SyncParams(BaseModel):
    """No parameters: the folder and its groups are LOOPLINE_SYNC_FOLDER and LOOPLINE_SYNC_GROUPS."""


def groups_of(raw: str | None) -> list[str]:
    groups = sorted({g.strip() for g in (raw or "").split(",") if g.strip()})
    return groups or ["public"]


def service_for(ctx: AppContext) -> RagService:
    """The API's service when this process serves (one ingest lock, one model), else one of the worker's own."""
    api = ctx.services.get("rag")
    if api is not None:
        return api.service
    svc = ctx.services.get("rag.jobs")
    if svc is None:
        from rag.vectorstore import StoreLocked

        try:
            svc = ctx.services["rag.jobs"] = RagService(ctx.settings, metadata=ctx.metadata, objects=ctx.objects)
        except StoreLocked as exc:
            raise RuntimeError(
                f"{exc}. The embedded vector store belongs to one process: with workers, set LOOPLINE_QDRANT_URL "
                "to a Qdrant server for the API and the workers alike"
            ) from exc
    return svc


def recorded_ingest(
    ctx: AppContext, kind: str, ingest: Callable[[], T], run_of: Callable[[T], RunSummary] = lambda r: r
) -> T:
    """Run an ingest and count it in the service's metrics (one that raises counts as failed or interrupted)."""
    t0 = time.perf_counter()
    try:
        result = ingest()
    except Cancelled:
        ctx.metrics.record_ingest(kind, "interrupted", {}, time.perf_counter() - t0)
        raise
    except Exception:
        ctx.metrics.record_ingest(kind, "failed", {}, time.perf_counter() - t0)
        raise
    run = run_of(result)
    ctx.metrics.record_ingest(kind, run.status, run.counts(), run.seconds)
    return result


def _ingest(run: JobRun, path: Path, groups: list[str], kind: str) -> dict:
    svc = service_for(run.ctx)
    run.on_cancel(svc.stop)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder on the server")

    def progress(done: int, total: int, chunks: int) -> None:
        run.progress(done, total, unit="files", chunks=chunks)

    summary = recorded_ingest(run.ctx, kind, lambda: svc.ingest(path, groups, kind=kind, progress=progress))
    return {"run": run_out(summary).model_dump(mode="json")}


def ingest(run: JobRun) -> dict:
    p: IngestParams = run.params  # type: ignore[assignment]
    return _ingest(run, Path(p.path), sorted(set(p.groups)), "ingest")


def sync(run: JobRun) -> dict:
    settings = run.ctx.settings
    if settings.sync_folder is None:
        raise ValueError("no folder source configured: set LOOPLINE_SYNC_FOLDER")
    return _ingest(run, Path(settings.sync_folder), groups_of(settings.sync_groups), "sync")


KINDS = [
    JobKind(
        "rag.ingest",
        "Ingest a file or folder on the server into the index.",
        IngestParams,
        ingest,
        path_params=("path",),
    ),
    JobKind(
        "rag.sync", "Re-sync LOOPLINE_SYNC_FOLDER (removed files leave the index).", SyncParams, sync, exclusive=True
    ),
]
