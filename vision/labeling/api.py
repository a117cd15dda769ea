"""Label Studio's annotation webhook, and the periodic loop the central service runs.

`POST /v1/labeling/webhook` takes Label Studio's ANNOTATION_CREATED/UPDATED events; it is
authenticated by the shared secret Label Studio sends in a header (set on the webhook when
the loop creates it), never by a user's API key. The annotation is stored at once, through
the same code as the pull; the periodic pull still catches anything a lost event missed.

With a Label Studio configured (LOOPLINE_LABEL_STUDIO_URL) or running locally (`loopline
labelstudio up`), `loopline serve` runs a loop cycle every LOOPLINE_LOOP_INTERVAL_S seconds
in a background thread; `stop()` ends it between cycles.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Body, Depends, Header, HTTPException
from pydantic import BaseModel, Field

from shared.context import ApiPlugin, AppContext
from shared.dependencies import app_context, error
from vision.labeling.client import WEBHOOK_HEADER, pick_annotation

log = logging.getLogger(__name__)
NAMES_TTL_S = 60.0


class WebhookOut(BaseModel):
    stored: bool = Field(description="The annotation changed what the loop had for its frame.")
    detail: str


@dataclass
class LabelingApi:
    ctx: AppContext
    runner_factory: Any  # () -> LoopRunner without a labeling client (the webhook only stores)
    _names: dict[str, tuple[float, list[str]]]
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
        names = runner._classes(production.tags)
        self._names[fleet] = (time.monotonic(), names)
        return names


def labeling_api(ctx: AppContext = Depends(app_context)) -> LabelingApi:
    return ctx.services["labeling"]


router = APIRouter(prefix="/v1/labeling", tags=["labeling"])


@router.post(
    "/webhook",
    response_model=WebhookOut,
    summary="Label Studio's annotation events (ANNOTATION_CREATED, ANNOTATION_UPDATED).",
    responses=error(401, "The webhook secret header is missing or wrong.")
    | error(409, "The frame's fleet has no production model."),
)
def webhook(
    payload: dict[str, Any] = Body(..., examples=[{"action": "ANNOTATION_CREATED", "annotation": {}, "task": {}}]),
    token: str | None = Header(None, alias=WEBHOOK_HEADER, description="The secret the loop set on the webhook."),
    api: LabelingApi = Depends(labeling_api),
) -> WebhookOut:
    from vision.loop.runner import webhook_secret

    if token is None or not hmac.compare_digest(token.encode(), webhook_secret(api.ctx).encode()):
        raise HTTPException(401, detail=f"missing or wrong {WEBHOOK_HEADER} header")
    action = str(payload.get("action") or "")
    if action not in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
        return WebhookOut(stored=False, detail=f"action {action or '(none)'} ignored")
    annotation, task = payload.get("annotation"), payload.get("task")
    if not isinstance(annotation, dict) or not isinstance(task, dict) or "id" not in task:
        raise HTTPException(422, detail="an annotation event needs 'annotation' and 'task' objects")
    data = task.get("data") if isinstance(task.get("data"), dict) else {}
    frame, fleet = data.get("frame"), data.get("fleet")
    project = payload.get("project")
    project_id = project.get("id") if isinstance(project, dict) else annotation.get("project") or task.get("project")
    if not frame or not fleet or project_id is None:
        return WebhookOut(stored=False, detail="not a task the loop pushed (no frame/fleet in its data)")
    picked = pick_annotation(int(task["id"]), str(frame), [annotation])
    if picked is None:
        return WebhookOut(stored=False, detail="no annotation in the event")
    runner = api.runner()
    stored = runner.apply(int(project_id), picked, api.names(str(fleet)))
    log.info("webhook: annotation %s of frame %s %s", picked.annotation_id, frame, "stored" if stored else "known")
    return WebhookOut(stored=stored, detail="stored" if stored else "already known, or not a task the loop pushed")


class PeriodicLoop:
    """Runs `run_once` every `interval` seconds in a thread, while a labeling server is configured."""

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
        from vision.labeling.client import labeling_from_settings
        from vision.loop.runner import LoopRunner
        from vision.registry import ModelRegistry

        while not self._stop.wait(self.interval):
            labeling = labeling_from_settings(self.ctx.settings)
            if labeling is None:
                log.debug("no Label Studio configured or running: loop cycle skipped")
                continue
            try:
                runner = LoopRunner(self.ctx, labeling, ModelRegistry.from_settings(self.ctx.settings))
                for report in runner.run_once():
                    log.info("loop cycle, fleet %s: %s", report.fleet, report.to_json())
            except Exception:
                log.exception("loop cycle failed; the next one retries")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def plugin(ctx: AppContext) -> ApiPlugin:
    """Entry point of the `loopline.api` group: the webhook route and the periodic loop."""

    def runner_factory():  # noqa: ANN202
        from vision.loop.runner import LoopRunner
        from vision.registry import ModelRegistry

        return LoopRunner(ctx, None, ModelRegistry.from_settings(ctx.settings))

    ctx.services["labeling"] = LabelingApi(ctx=ctx, runner_factory=runner_factory, _names={})
    loop = PeriodicLoop(ctx, ctx.settings.loop_interval_s)
    return ApiPlugin(name="labeling", router=router, start=loop.start, stop=loop.stop)
