"""The document Q&A router: query (plain and streamed), documents, sync, feedback.

Every handler resolves the caller from their API key first; retrieval is filtered by the
caller's groups inside the vector store, and documents outside them answer 404 exactly as
missing ones do. Uploads are size- and type-checked and stored under sanitized names.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Response, UploadFile
from fastapi.responses import StreamingResponse

from rag.events import background_consumer
from rag.jobs import groups_of, recorded_ingest
from rag.loaders import SUPPORTED_SUFFIXES
from rag.models import (
    Answer,
    DeadLetterOut,
    DocumentOut,
    FeedbackIn,
    FeedbackOut,
    IngestPathIn,
    MeOut,
    QueryRequest,
    RunOut,
    RunRecordOut,
    SyncFinished,
    SyncStarted,
    UploadOut,
    run_out,
)
from rag.service import AccessDenied, RagService, UploadConflict
from rag.vectorstore import EmbeddingMismatch
from shared.auth import Principal
from shared.context import WAITING_FOR, ApiPlugin, AppContext, Warmup
from shared.dependencies import (
    ADMIN_ONLY,
    UNAUTHENTICATED,
    WITH_BODY,
    app_context,
    error,
    require_admin,
    require_user,
)
from shared.ingestion import Cancelled, RunSummary, source_name
from shared.ingestion.roots import PathRefused, check_ingest_path, parse_roots
from shared.jobs.api import JobOut, submit_job
from shared.jobs.records import FAILED, SUCCEEDED, Job
from shared.jobs.service import JobConflict
from shared.metadata.store import DocumentInfo
from shared.monitoring.freshness import VisibleSource, visible_source_freshness
from shared.monitoring.monitoring_config import load_monitoring_config

if TYPE_CHECKING:
    from rag.table_sources import FollowedTables
    from shared.monitoring.rules import Monitor

log = logging.getLogger(__name__)
T = TypeVar("T")


def _doc_out(d: DocumentInfo) -> DocumentOut:
    return DocumentOut(
        id=d.id,
        source=source_name(d.source),
        path=d.path,
        title=d.title,
        groups=list(d.groups),
        chunks=d.chunk_count,
        size_bytes=d.size_bytes,
        content_hash=d.content_hash,
        updated_at=d.updated_at,
    )


@dataclass
class RagApi:
    """What the Q&A routes depend on: the service and the root."""

    service: RagService
    ctx: AppContext
    warmup: Warmup | None = None

    def recorded_ingest(self, kind: str, ingest: Callable[[], T], run_of: Callable[[T], RunSummary] = lambda r: r) -> T:
        """Run an ingest here and now (uploads), counted in the metrics; a shutdown's interruption is a 503."""
        try:
            return recorded_ingest(self.ctx, kind, ingest, run_of)
        except Cancelled as exc:
            raise HTTPException(503, detail=f"ingest interrupted: {exc}") from exc

    def effective(self, req: QueryRequest, who: Principal) -> Principal:
        """Who the answer is for: the caller, or (admins only) the user named in `as_user`."""
        if not req.as_user:
            return who
        if not who.admin:
            raise HTTPException(403, detail="only admins may ask as another user")
        other = self.ctx.keys.user(req.as_user)
        if other is None:
            raise HTTPException(404, detail=f"unknown user '{req.as_user}'")
        return other


def rag_api(ctx: AppContext = Depends(app_context)) -> RagApi:
    return ctx.services["rag"]


router = APIRouter(prefix="/v1", tags=["documents Q&A"], responses=UNAUTHENTICATED)

AS_USER = error(403, "`as_user` is for admins only.") | error(404, "`as_user` names no known user.")
INTERRUPTED = error(503, "The service is shutting down: the ingest stopped (recorded as interrupted).")
# Documents are typed by the extension of the file name sent: OpenAPI can only show it on the part's
# Content-Disposition; the content types are what the extensions stand for.
DOCUMENT_PARTS = {
    "file": {
        "contentType": "text/markdown, text/plain, text/html, application/pdf, "
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "headers": {
            "Content-Disposition": {
                "description": "The file name's extension decides the type: "
                f"{', '.join(sorted(SUPPORTED_SUFFIXES))}, in any case (415 otherwise).",
                "schema": {"type": "string"},
                "example": 'form-data; name="file"; filename="handbook.md"',
            }
        },
    }
}


def _event(name: str, required: dict[str, dict]) -> dict:
    return {
        "type": "object",
        "required": ["type", *required],
        "properties": {"type": {"const": name}, **required},
    }


# One server-sent event: its name and its JSON data (OpenAPI 3.1 describes each event of a stream).
STREAM_EVENT = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["citations", "token", "done", "error"]},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {
                "oneOf": [
                    _event(
                        "citations",
                        {"citations": {"type": "array", "items": {"$ref": "#/components/schemas/Citation"}}},
                    ),
                    _event("token", {"text": {"type": "string"}}),
                    _event("done", {"answer": {"$ref": "#/components/schemas/Answer"}}),
                    _event("error", {"detail": {"type": "string"}}),
                ]
            },
        },
    },
}


@router.post(
    "/query",
    response_model=Answer,
    summary="Answer a question with citations.",
    responses=WITH_BODY
    | AS_USER
    | error(409, "The index was built with another embedding model than the service's: re-ingest."),
)
def query(req: QueryRequest, who: Principal = Depends(require_user), api: RagApi = Depends(rag_api)) -> Answer:
    try:
        answer = api.service.ask(req.question, api.effective(req, who), top_k=req.top_k)
    except EmbeddingMismatch as exc:
        raise HTTPException(409, detail=str(exc)) from exc
    api.ctx.metrics.record_answer(answer.mode, answer.abstained)
    return answer


@router.post(
    "/query/stream",
    summary="Answer as server-sent events: citations, token…, done.",
    description="Events `citations`, then `token`…, then `done` with the whole answer; "
    "a failure once the stream has started is an `error` event.",
    response_class=StreamingResponse,
    responses={
        200: {"description": "The event stream.", "content": {"text/event-stream": {"schema": STREAM_EVENT}}},
        **WITH_BODY,
        **AS_USER,
    },
)
def query_stream(
    req: QueryRequest, who: Principal = Depends(require_user), api: RagApi = Depends(rag_api)
) -> StreamingResponse:
    as_who = api.effective(req, who)

    def events() -> Iterator[str]:
        try:
            for ev in api.service.ask_stream(req.question, as_who, top_k=req.top_k):
                if ev["type"] == "done":
                    api.ctx.metrics.record_answer(ev["answer"]["mode"], ev["answer"]["abstained"])
                yield f"event: {ev['type']}\ndata: {json.dumps(ev, default=str)}\n\n"
        except Exception as exc:  # the stream has started: report in-band
            log.exception("streamed answer failed")
            yield f"event: error\ndata: {json.dumps({'type': 'error', 'detail': str(exc)})}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


@router.get("/documents", response_model=list[DocumentOut], summary="Documents you may read.")
def list_documents(who: Principal = Depends(require_user), api: RagApi = Depends(rag_api)) -> list[DocumentOut]:
    return [_doc_out(d) for d in api.service.list_documents(who)]


@router.get(
    "/sources",
    response_model=list[VisibleSource],
    summary="How fresh the sources you can read are.",
    responses=error(503, "The monitoring configuration (freshness SLOs) cannot be read."),
)
def sources(who: Principal = Depends(require_user), api: RagApi = Depends(rag_api)) -> list[VisibleSource]:
    """Sources of the documents you may read, with the age of their last successful sync and its SLO."""
    try:
        slos = load_monitoring_config(api.service.settings).freshness
    except ValueError as exc:
        raise HTTPException(503, detail=f"source freshness unavailable: {exc}") from exc
    found = visible_source_freshness(api.service.metadata, slos, groups=who.readable_groups)
    return [f.model_copy(update={"source": source_name(f.source)}) for f in found]


@router.get(
    "/documents/{doc_id}",
    response_model=DocumentOut,
    summary="One document you may read.",
    responses=error(404, "No such document, or not one you may read."),
)
def get_document(doc_id: str, who: Principal = Depends(require_user), api: RagApi = Depends(rag_api)) -> DocumentOut:
    doc = api.service.get_document(doc_id, who)
    if doc is None:
        raise HTTPException(404, detail=f"no document {doc_id}")
    return _doc_out(doc)


@router.delete(
    "/documents/{doc_id}",
    status_code=204,
    summary="Remove a document from the index (admins).",
    responses=ADMIN_ONLY | error(404, "No such document, or not one you may read."),
)
def delete_document(doc_id: str, who: Principal = Depends(require_user), api: RagApi = Depends(rag_api)) -> None:
    try:
        found = api.service.delete_document(doc_id, who)
    except AccessDenied as exc:
        raise HTTPException(403, detail=str(exc)) from exc
    if not found:
        raise HTTPException(404, detail=f"no document {doc_id}")


@router.post(
    "/documents",
    status_code=201,
    response_model=UploadOut,
    summary="Upload a document (admins), readable by `groups`.",
    responses=ADMIN_ONLY
    | WITH_BODY
    | INTERRUPTED
    | error(409, "An upload of this name exists for other groups: send `replace=true` to replace it.")
    | error(413, "The file is over LOOPLINE_UPLOAD_MAX_BYTES.")
    | error(415, "The file name has no supported extension.")
    | error(422, "The file could not be read (no text, corrupt, over a limit): the reason is in `detail`."),
    openapi_extra={"requestBody": {"content": {"multipart/form-data": {"encoding": DOCUMENT_PARTS}}}},
)
def upload(
    file: UploadFile = File(
        ...,
        description=f"The document; its file name's extension decides its type ({', '.join(sorted(SUPPORTED_SUFFIXES))}).",
    ),
    groups: str = Form("public", description="Comma-separated groups that may read it."),
    replace: bool = Form(
        False,
        description="Replace an upload of the same name that other groups may read (otherwise 409). "
        "The same name with the same groups is always a new version.",
    ),
    who: Principal = Depends(require_admin),
    api: RagApi = Depends(rag_api),
) -> UploadOut:
    name = file.filename or "upload"
    suffix = Path(name).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise HTTPException(
            415,
            detail=f"unsupported file type '{suffix or name}'; supported: {', '.join(sorted(SUPPORTED_SUFFIXES))}",
        )
    limit = api.service.settings.upload_max_bytes
    data = file.file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, detail=f"file is over the upload limit of {limit:,} bytes")
    try:
        doc, run = api.recorded_ingest(
            "upload",
            lambda: api.service.ingest_upload(name, data, groups_of(groups), replace=replace),
            run_of=lambda r: r[1],
        )
    except UploadConflict as exc:
        raise HTTPException(409, detail=f"{name}: {exc}") from exc
    if run.failed or doc is None:
        reason = run.dead_letters[0]["reason"] if run.dead_letters else run.error
        raise HTTPException(422, detail=f"{name}: {reason}")
    log.info("user %s uploaded %s as %s", who.name, name, doc.path)
    return UploadOut(document=_doc_out(doc), run=run_out(run))


def finished_run(ctx: AppContext, job: Job) -> RunOut:
    """Wait for an ingest job and answer with its run: 503 if a shutdown gave it back, 500 if it failed."""
    done = ctx.jobs.wait(job.id)
    if done.state == SUCCEEDED and done.result:
        return RunOut(**done.result["run"])
    if done.state == FAILED:
        raise HTTPException(500, detail=f"the ingest failed (job {job.id}): {done.error}")
    raise HTTPException(
        503, detail=f"ingest interrupted; job {job.id} runs again at the next start: {done.error or ''}"
    )


@router.post(
    "/sync",
    status_code=202,
    response_model=SyncStarted | SyncFinished,
    summary="Re-sync the configured folder source (admins): a job, or its run with `wait=true`.",
    responses=ADMIN_ONLY
    | INTERRUPTED
    | error(409, "No sync folder is configured or it is missing, or a sync is already queued or running."),
)
def sync(
    wait: bool = Query(False, description="Answer when the sync ended, with its run."),
    who: Principal = Depends(require_admin),
    api: RagApi = Depends(rag_api),
) -> SyncStarted | SyncFinished:
    folder = api.service.settings.sync_folder
    if folder is None:
        raise HTTPException(409, detail="no folder source configured: set LOOPLINE_SYNC_FOLDER")
    if not Path(folder).is_dir():
        raise HTTPException(409, detail=f"the sync folder {folder} does not exist or is not a folder")
    try:
        job = api.ctx.jobs.submit("rag.sync", {}, who)
    except JobConflict as exc:
        raise HTTPException(409, detail=f"a sync is already {exc.job.state} (job {exc.job.id})") from exc
    log.info("user %s started a sync of %s (job %s)", who.name, folder, job.id)
    if wait:
        return SyncFinished(status="finished", run=finished_run(api.ctx, job))
    return SyncStarted(status="started", folder=str(folder), job_id=job.id)


@router.post(
    "/admin/ingest",
    status_code=202,
    response_model=None,
    summary="Ingest a path on the server (admins: under LOOPLINE_INGEST_ROOTS; the local CLI: anything it can read).",
    description="Answers 202 with the job at once (`GET /v1/jobs/{job_id}` follows it), or with `wait=true` "
    "200 and the run once it ended.",
    responses={
        200: {"model": RunOut, "description": "The finished run (`wait=true`)."},
        202: {"model": JobOut, "description": "The ingest's job, queued."},
    }
    | ADMIN_ONLY
    | WITH_BODY
    | INTERRUPTED
    | error(403, "The caller is not an admin, or the path is not under LOOPLINE_INGEST_ROOTS.")
    | error(404, "No such file or folder on the server.")
    | error(500, "The ingest failed (`wait=true`): `detail` has the job's error."),
)
def ingest_path(
    req: IngestPathIn,
    response: Response,
    wait: bool = Query(False, description="Answer when the ingest ended, with its run."),
    who: Principal = Depends(require_admin),
    api: RagApi = Depends(rag_api),
) -> JobOut | RunOut:
    path = Path(req.path)
    if not who.local:  # a network caller: only under the configured roots, never the service's own home
        try:
            path = check_ingest_path(
                req.path, parse_roots(api.ctx.settings.ingest_roots), protected=[api.ctx.settings.home]
            )
        except PathRefused as exc:
            log.warning("user %s was refused ingesting %s: %s", who.name, req.path, exc)
            raise HTTPException(403, detail=str(exc)) from exc
    if not path.exists():
        raise HTTPException(404, detail=f"{req.path}: no such file or folder on the server")
    job = submit_job(api.ctx, "rag.ingest", {"path": str(path), "groups": req.groups}, who)
    if wait:
        response.status_code = 200
        return finished_run(api.ctx, job)
    return JobOut.of(job)


@router.get(
    "/runs", response_model=list[RunRecordOut], summary="Recent ingest and sync runs (admins).", responses=ADMIN_ONLY
)
def runs(
    limit: int = Query(20, ge=1, le=1000),
    who: Principal = Depends(require_admin),
    api: RagApi = Depends(rag_api),
) -> list[RunRecordOut]:
    return [
        RunRecordOut(
            run_id=r.id,
            source=r.source,
            kind=r.kind,
            status=r.status,
            started_at=r.started_at,
            finished_at=r.finished_at,
            added=r.added,
            updated=r.updated,
            unchanged=r.unchanged,
            deleted=r.deleted,
            failed=r.failed,
            error=r.error,
        )
        for r in api.service.metadata.recent_runs(limit)
    ]


@router.get("/me", response_model=MeOut, summary="Who this key is: name, groups, admin.")
def me(who: Principal = Depends(require_user)) -> MeOut:
    return MeOut(name=who.name, groups=sorted(who.groups), admin=who.admin)


@router.get(
    "/dead-letters",
    response_model=list[DeadLetterOut],
    summary="Inputs the ingests could not take, newest first (admins).",
    responses=ADMIN_ONLY,
)
def dead_letters(
    limit: int = Query(50, ge=1, le=1000),
    run_id: int | None = Query(None, description="Only this run's."),
    who: Principal = Depends(require_admin),
    api: RagApi = Depends(rag_api),
) -> list[DeadLetterOut]:
    return [
        DeadLetterOut(id=d.id, run_id=d.run_id, source=d.source, path=d.path, reason=d.reason, created_at=d.created_at)
        for d in api.service.metadata.dead_letters(run_id=run_id, limit=limit)
    ]


@router.post("/feedback", status_code=201, response_model=FeedbackOut, summary="Rate an answer.", responses=WITH_BODY)
def feedback(fb: FeedbackIn, who: Principal = Depends(require_user), api: RagApi = Depends(rag_api)) -> FeedbackOut:
    fid = api.service.add_feedback(who, question=fb.question, answer=fb.answer, rating=fb.rating, comment=fb.comment)
    return FeedbackOut(id=fid)


def plugin(ctx: AppContext, service: RagService | None = None) -> ApiPlugin:
    """Entry point of the `loopline.api` group; tests pass a ready `service`.

    The embedding model loads in the background once the app starts serving (`RagService.warm_up`),
    so the first question is not the one that waits for it; `/readyz` answers 503 until it is loaded.
    """
    svc = service or _service_with_drift(ctx)
    warmup = Warmup(
        f"loading the embedding model {svc.settings.embedding_model}", svc.warm_up, name="loopline-rag-warmup"
    )
    ctx.services["rag"] = RagApi(svc, ctx, warmup=warmup)
    tables, monitor = _followed_tables(ctx, svc)
    events = background_consumer(ctx, svc)  # document events on NATS JetStream (LOOPLINE_NATS_URL), else None

    def start() -> None:
        warmup.start()
        if tables is not None:
            tables.start()
        if events is not None:
            events.start()

    def stop() -> None:
        if tables is not None:
            tables.stop(timeout=0)
        if events is not None:
            events.stop()  # no new batch; the one in hand is cut short by svc.stop, nak'ed, and redelivered later
        svc.stop()

    def close() -> None:
        warmup.join(timeout=120)  # a model still loading must finish before the stores close and the process exits
        if tables is not None:
            tables.stop()
        if events is not None:
            events.stop()
            events.join(timeout=30)
        if monitor is not None:
            monitor.close()
        svc.close()

    def ready() -> dict:
        details = {
            "documents": svc.metadata.count_documents(),
            "chunks": svc.store.count(),
            WAITING_FOR: warmup.waiting_for(),
        }
        if tables is not None:
            # the state only: the reasons (hosts, errors) go to the log and the alerts, not to anonymous callers
            details["tables"] = {table: state.split(":")[0] for table, state in tables.states.items()}
        if events is not None:
            details["events"] = events.state.split(":")[0]
        return details

    return ApiPlugin(
        name="rag",
        router=router,
        ready=ready,
        start=start,
        close=close,
        stop=stop,
        max_body_bytes=svc.settings.upload_max_bytes,
    )


def _followed_tables(ctx: AppContext, svc: RagService) -> tuple[FollowedTables | None, Monitor | None]:
    """The tables of LOOPLINE_TABLE_SOURCES_FILE, followed on threads of the service, and the
    monitor whose alert manager (webhooks, actions) tells of a stopped one; (None, None) without the file."""
    path = ctx.settings.table_sources_file
    if path is None:
        return None, None
    from rag.table_sources import FollowedTables, load_table_sources
    from shared.monitoring.rules import Monitor

    configs = load_table_sources(path)
    monitor = Monitor(ctx.metadata, ctx.monitoring)  # its alert manager: webhooks and actions as configured
    log.info("following %d table(s) of %s", len(configs), path)
    return FollowedTables(configs, svc, monitor.manager), monitor


def _service_with_drift(ctx: AppContext) -> RagService:
    """The service on the root's stores, recording its answers for drift monitoring."""
    from rag.service import DRIFT_STREAM, drift_reference_label
    from shared.monitoring.drift import BufferedRecorder

    label = drift_reference_label(ctx.settings)
    if ctx.drift.reference_label(DRIFT_STREAM) != label:  # first start, or another model: its answers become the normal
        ctx.drift.request_reference(DRIFT_STREAM, label=label)
    return RagService(ctx.settings, metadata=ctx.metadata, drift=BufferedRecorder(ctx.drift), objects=ctx.objects)
