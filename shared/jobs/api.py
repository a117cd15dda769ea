"""The jobs API: submit long work, then follow it by id (admins).

`POST /v1/jobs` answers 202 at once with the job's record; `GET /v1/jobs/{id}` tells its
state (queued, running, succeeded, failed), progress, result or error, and every attempt.
Jobs are for admins only: their parameters name server paths and their results name
every source, whoever may read it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field

from shared.auth import Principal
from shared.context import ApiPlugin, AppContext
from shared.dependencies import ADMIN_ONLY, WITH_BODY, app_context, error, require_admin
from shared.ingestion.roots import PathRefused
from shared.jobs.records import ENDED, QUEUED, RUNNING, Job
from shared.jobs.service import InvalidJob, JobConflict, Jobs, UnknownJobKind

JobState = Literal["queued", "running", "succeeded", "failed"]


class JobIn(BaseModel):
    kind: str = Field(
        description="What to run: one of `GET /v1/jobs/kinds`, e.g. `rag.ingest`.", examples=["rag.ingest"]
    )
    params: dict[str, Any] = Field(default_factory=dict, description="The kind's parameters (its `params_schema`).")


class JobAttempt(BaseModel):
    worker: str
    started_at: str | None = None
    ended_at: str | None = None
    outcome: str | None = Field(None, description="`succeeded`, `failed`, a shutdown's release, or `worker lost …`.")


class JobOut(BaseModel):
    job_id: str
    kind: str
    state: JobState
    queue: str
    owner: str = Field(description="Who submitted it.")
    params: dict[str, Any]
    progress: dict[str, Any] = Field(description="The latest `done`/`total` (and details) the job reported.")
    result: dict[str, Any] | None = Field(None, description="What it produced, once succeeded.")
    error: str | None = Field(None, description="Why it failed (or was given back by a shutdown).")
    attempts: int
    history: list[JobAttempt]
    worker: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    heartbeat_at: datetime | None = None
    finished_at: datetime | None = None

    @classmethod
    def of(cls, job: Job) -> JobOut:
        return cls(
            job_id=job.id,
            kind=job.kind,
            state=job.state,
            queue=job.queue,
            owner=job.owner,
            params=job.params,
            progress=job.progress or {},
            result=job.result,
            error=job.error,
            attempts=job.attempts,
            history=[JobAttempt(**h) for h in job.history or []],
            worker=job.worker,
            created_at=job.created_at,
            started_at=job.started_at,
            heartbeat_at=job.heartbeat_at,
            finished_at=job.finished_at,
        )


class JobKindOut(BaseModel):
    kind: str
    summary: str
    queue: str
    params_schema: dict[str, Any]


def jobs_of(ctx: AppContext = Depends(app_context)) -> Jobs:
    return ctx.jobs


router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=ADMIN_ONLY)


def submit_job(ctx: AppContext, kind: str, params: dict[str, Any], who: Principal) -> Job:
    """Submit for a route: the service's errors as HTTP answers (other routers enqueue through this too)."""
    try:
        return ctx.jobs.submit(kind, params, who, ingest_roots=ctx.settings.ingest_roots, home=ctx.settings.home)
    except (UnknownJobKind, InvalidJob) as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    except PathRefused as exc:
        raise HTTPException(403, detail=str(exc)) from exc
    except JobConflict as exc:
        raise HTTPException(409, detail=str(exc)) from exc


@router.post(
    "",
    status_code=202,
    response_model=JobOut,
    summary="Run long work as a job (admins): answers at once with its id.",
    responses=WITH_BODY
    | error(403, "The caller is not an admin, or a path parameter is not under LOOPLINE_INGEST_ROOTS.")
    | error(409, "A job of this kind runs one at a time and one is queued or running.")
    | error(422, "Unknown kind, or parameters that do not fit it: `detail` names the field."),
)
def submit(req: JobIn, who: Principal = Depends(require_admin), ctx: AppContext = Depends(app_context)) -> JobOut:
    return JobOut.of(submit_job(ctx, req.kind, req.params, who))


@router.get("/kinds", response_model=list[JobKindOut], summary="The kinds of job this service runs (admins).")
def kinds(who: Principal = Depends(require_admin), jobs: Jobs = Depends(jobs_of)) -> list[JobKindOut]:
    return [
        JobKindOut(kind=k.name, summary=k.summary, queue=k.queue, params_schema=k.params.model_json_schema())
        for k in sorted(jobs.kinds.values(), key=lambda k: k.name)
    ]


@router.get("", response_model=list[JobOut], summary="Recent jobs, newest first (admins).")
def recent(
    limit: int = Query(50, ge=1, le=1000),
    kind: str | None = Query(None, description="Only jobs of this kind."),
    state: JobState | None = Query(None, description="Only jobs in this state."),
    who: Principal = Depends(require_admin),
    jobs: Jobs = Depends(jobs_of),
) -> list[JobOut]:
    return [JobOut.of(j) for j in jobs.store.recent(limit, kind=kind, state=state)]


@router.get(
    "/{job_id}",
    response_model=JobOut,
    summary="A job's state, progress, result or error (admins).",
    responses=error(404, "No such job."),
)
def get_job(job_id: str, who: Principal = Depends(require_admin), jobs: Jobs = Depends(jobs_of)) -> JobOut:
    job = jobs.get(job_id)
    if job is None:
        raise HTTPException(404, detail=f"no job {job_id}")
    return JobOut.of(job)


def plugin(ctx: AppContext) -> ApiPlugin:
    """Entry point of the `loopline.api` group: the jobs routes (the composition root owns the queue)."""

    def ready() -> dict:
        counts = ctx.jobs.store.counts()
        return {
            "queue": "broker" if ctx.jobs.queue.remote else "in-process",
            "queued": counts.get(QUEUED, 0),
            "running": counts.get(RUNNING, 0),
        }

    return ApiPlugin(name="jobs", router=router, ready=ready)


__all__ = ["ENDED", "JobOut", "plugin", "router", "submit_job"]
