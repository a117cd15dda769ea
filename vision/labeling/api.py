"""Label Studio's annotation webhook, and the periodic loop the central service runs.

`POST /v1/labeling/webhook` takes Label Studio's annotation events; it is authenticated by
the project's token Label Studio sends in a header (derived per project from the service's
secret and set on the webhook when the loop creates it), never by a user's API key. An event
is a hint: the task's annotations are read back from Label Studio and stored through the same
code as the pull, so a forged or stale payload changes nothing; the periodic pull still
catches anything a lost event missed.

With a Label Studio configured (LOOPLINE_LABEL_STUDIO_URL) or running locally (`loopline
labelstudio up`), `loopline serve` runs a loop cycle every LOOPLINE_LOOP_INTERVAL_S seconds
in a background thread; `stop()` ends it between cycles.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Body, Depends, Header, HTTPException
from pydantic import BaseModel, Field

from shared.context import ApiPlugin, AppContext
from shared.dependencies import app_context, error
from vision.labeling.client import WEBHOOK_HEADER, LabelingUnavailable, webhook_token

log = logging.getLogger(__name__)
NAMES_TTL_S = 60.0


class WebhookOut(BaseModel):
    stored: bool = Field(description="The annotation changed what the loop had for its frame.")
    detail: str


@dataclass
class LabelingApi:
    """What the webhook depends on: the loop's records and classes, and the labeling server to ask."""

    ctx: AppContext
    runner_factory: Any  # () -> LoopRunner with the configured labeling server (None without one)
    _names: dict[str, tuple[float, list[str]]] = field(default_factory=dict)  # fleet → (read at, classes)
    _runner: Any = None

    def runner(self):  # noqa: ANN201
        if self._runner is None:
            self._runner = self.runner_factory()
        return self._runner

    def names(self, fleet: str) -> list[str]:
        cached = self._names.get(fleet)
        if cached and time.monotonic() - cached[0] < NAMES_TTL_S:
            return cached[1]
        runner = self.runner()
        production = runner.registry.production(fleet)
        if production is None:
            raise HTTPException(409, detail=f"fleet '{fleet}' has no production model: its classes are unknown")
        names = runner.classes(production.tags)
        self._names[fleet] = (time.monotonic(), names)
        return names


def labeling_api(ctx: AppContext = Depends(app_context)) -> LabelingApi:
    return ctx.services["labeling"]


router = APIRouter(prefix="/v1/labeling", tags=["labeling"])
EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED")


@router.post(
    "/webhook",
    response_model=WebhookOut,
    summary="Label Studio's annotation events (ANNOTATION_CREATED, ANNOTATION_UPDATED, ANNOTATIONS_DELETED).",
    description="Authenticated by the project's token in the header (derived from the service's secret per "
    "project). The event only names the project and task: the annotation that counts is read from Label Studio "
    "itself, so a forged or stale event cannot change a label.",
    responses=error(401, "The header is missing or not this project's token.")
    | error(409, "The frame's fleet has no production model.")
    | error(503, "No Label Studio is configured to read the task from; the periodic pull will."),
)
def webhook(
    payload: dict[str, Any] = Body(..., examples=[{"action": "ANNOTATION_CREATED", "project": {"id": 1}, "task": {}}]),
    token: str | None = Header(None, alias=WEBHOOK_HEADER, description="The project's webhook token."),
    api: LabelingApi = Depends(labeling_api),
) -> WebhookOut:
    from vision.loop.runner import webhook_secret

    project_id = _project_id(payload)
    if project_id is None:
        raise HTTPException(401, detail="an event must name its project: no project, no token to check")
    expected = webhook_token(webhook_secret(api.ctx), project_id)
    if token is None or not hmac.compare_digest(token.encode(), expected.encode()):
        raise HTTPException(401, detail=f"missing or wrong {WEBHOOK_HEADER} header for project {project_id}")
    action = str(payload.get("action") or "")
    if action not in EVENTS:
        return WebhookOut(stored=False, detail=f"action {action or '(none)'} ignored")
    tasks = _task_ids(payload)
    if not tasks:
        raise HTTPException(422, detail="an annotation event needs its 'task' (or 'annotations' with tasks)")
    runner = api.runner()
    if runner.labeling is None:
        raise HTTPException(503, detail="no Label Studio configured to read the task from; the periodic pull will")
    stored = 0
    for task_id in tasks:
        known = runner.records.task_by_id(project_id, task_id)
        if known is None:
            continue  # not a task the loop pushed to this project
        try:
            state = runner.labeling.task_annotation(task_id)
        except LabelingUnavailable as exc:
            raise HTTPException(503, detail=f"{exc}; the periodic pull will get it") from exc
        if state is None or state.frame != known.frame:
            log.warning(
                "webhook: task %s of project %s is not frame %s any more: ignored", task_id, project_id, known.frame
            )
            continue
        if state.annotation is None:
            stored += runner.records.unlabel(project_id, task_id)
        else:
            stored += runner.apply(project_id, state.annotation, api.names(known.fleet))
    log.info("webhook %s on project %s: %d of %d tasks changed", action, project_id, stored, len(tasks))
    return WebhookOut(stored=bool(stored), detail=f"{stored} of {len(tasks)} task(s) changed")


def _project_id(payload: dict[str, Any]) -> int | None:
    """The project an event is about: `project.id`, else the project its annotation or task names."""
    for part, key in (("project", "id"), ("annotation", "project"), ("task", "project")):
        obj = payload.get(part)
        value = obj.get(key) if isinstance(obj, dict) else None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _task_ids(payload: dict[str, Any]) -> list[int]:
    """The tasks an event is about: `task.id`, or the tasks of its `annotations` (bulk deletes)."""
    ids = []
    task = payload.get("task")
    if isinstance(task, dict) and isinstance(task.get("id"), int):
        ids.append(task["id"])
    annotation = payload.get("annotation")
    if isinstance(annotation, dict) and isinstance(annotation.get("task"), int):
        ids.append(annotation["task"])
    for a in payload.get("annotations") or []:
        if isinstance(a, dict) and isinstance(a.get("task"), int):
            ids.append(a["task"])
    return sorted(set(ids))[:1000]


class PeriodicLoop:
    """Every `interval` seconds, while a labeling server is configured, submits a `loop.cycle` job.

    As a job the cycle runs where jobs run (in this process by default, on a trainer with a
    queue) and at most one at a time across API replicas (the kind is exclusive): a timer
    that fires while the last cycle still runs is skipped.
    """

    def __init__(self, ctx: AppContext, interval: float) -> None:
        self.ctx = ctx
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="loopline-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from shared.auth import Principal
        from shared.jobs.service import JobConflict
        from vision.labeling.client import labeling_from_settings

        timer = Principal(name="loop-timer", admin=True, local=True)
        while not self._stop.wait(self.interval):
            try:
                if labeling_from_settings(self.ctx.settings) is None:
                    log.debug("no Label Studio configured or running: loop cycle skipped")
                    continue
                job = self.ctx.jobs.submit("loop.cycle", {}, timer)
                log.info("loop cycle submitted as job %s", job.id)
            except JobConflict as exc:
                log.info("loop cycle skipped: %s", exc)
            except ImportError as exc:
                log.error("the periodic loop needs label-studio-sdk: pip install 'loopline[label]' (%s)", exc)
            except Exception:  # the thread outlives any one bad cycle
                log.exception("submitting a loop cycle failed; the next tick retries")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def plugin(ctx: AppContext) -> ApiPlugin:
    """Entry point of the `loopline.api` group: the webhook route and the periodic loop."""

    def runner_factory():  # noqa: ANN202
        from vision.labeling.client import labeling_from_settings
        from vision.loop.runner import LoopRunner
        from vision.registry import ModelRegistry

        try:
            labeling = labeling_from_settings(ctx.settings)
        except Exception as exc:  # noqa: BLE001 - the webhook then answers 503; polling still works
            log.warning("webhook cannot read tasks from Label Studio: %s", exc)
            labeling = None
        return LoopRunner(ctx, labeling, ModelRegistry.from_settings(ctx.settings))

    ctx.services["labeling"] = LabelingApi(ctx=ctx, runner_factory=runner_factory)
    loop = PeriodicLoop(ctx, ctx.settings.loop_interval_s)
    return ApiPlugin(name="labeling", router=router, start=loop.start, stop=loop.stop)
