"""The labeling port and its Label Studio adapter (over HTTP, with label-studio-sdk).

The loop needs five things from a labeling tool: a project per fleet whose interface has the
model's classes, tasks pushed with pre-annotations, the tasks already there (to reconcile
after a crash), the annotations made, and a webhook telling it when one is made. The same
adapter serves the local server `loopline labelstudio up` starts and an existing one
(LOOPLINE_LABEL_STUDIO_URL): Label Studio is the labeling engine, nothing is re-implemented.

Images reach the labeler's browser in one of two ways: `local-files` (Label Studio serves the
frame files from the disk they share with the central service, through a local-files storage
on the project; nothing is copied, and Label Studio's own exports see the files) or `inline`
(the JPEG in the task as a data URL: works with any server, costs its size in Label Studio's
database, and Label Studio's YOLO export skips such images — ours does not need it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from vision.labeling.convert import label_config

log = logging.getLogger(__name__)
WEBHOOK_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED")
WEBHOOK_HEADER = "X-Loopline-Webhook-Token"


class LabelingUnavailable(RuntimeError):
    """The labeling server cannot be reached or refused a call: try again later, nothing is lost."""


@dataclass(frozen=True)
class Annotation:
    """The annotation that counts for a task: the latest one not cancelled (or the skip)."""

    task_id: int
    frame: str
    annotation_id: int
    updated_at: str
    cancelled: bool
    result: list[dict[str, Any]]


@dataclass(frozen=True)
class TaskState:
    """A task as the labeling server has it now: its frame and the annotation that counts (None: none)."""

    task_id: int
    frame: str
    annotation: Annotation | None


class Labeling(Protocol):
    """What the loop asks of a labeling tool."""

    url: str

    def ensure_project(self, fleet: str, names: Sequence[str]) -> int: ...

    def image_ref(self, frames_dir: Path, key: str, read: Callable[[], bytes] | None = None) -> str: ...

    def existing_frames(self, project_id: int) -> dict[str, int]: ...

    def push(
        self, project_id: int, tasks: Sequence[dict[str, Any]], *, frames_dir: Path | None = None
    ) -> dict[str, int]: ...

    def task_states(self, project_id: int) -> list[TaskState]: ...

    def task_annotation(self, task_id: int) -> TaskState | None: ...

    def ensure_webhook(self, project_id: int, url: str, secret: str) -> None: ...


def webhook_token(secret: str, project_id: int) -> str:
    """The header value of one project's webhook: a key per project, derived from the service's secret,
    so a project's admin, who can read its webhook, cannot post events for another project."""
    message = f"loopline-labeling-project:{int(project_id)}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def project_title(fleet: str) -> str:
    return f"loopline {fleet} frames"


def pick_annotation(task_id: int, frame: str, annotations: Sequence[dict[str, Any]]) -> Annotation | None:
    """The latest submitted annotation of a task, else its latest skip; None when there is neither."""
    if not annotations:
        return None
    ordered = sorted(annotations, key=lambda a: (str(a.get("updated_at") or ""), int(a.get("id") or 0)))
    done = [a for a in ordered if not a.get("was_cancelled")]
    a = (done or ordered)[-1]
    return Annotation(
        task_id=task_id,
        frame=frame,
        annotation_id=int(a["id"]),
        updated_at=str(a.get("updated_at") or ""),
        cancelled=bool(a.get("was_cancelled")) and not done,
        result=list(a.get("result") or []),
    )


class LabelStudioLabeling:
    """The `Labeling` port on a Label Studio server (1.23), through label-studio-sdk 2.1."""

    def __init__(self, url: str, token: str, *, files_root: Path | None = None, timeout: float = 30.0) -> None:
        from label_studio_sdk import LabelStudio

        self.url = url.rstrip("/")
        self.files_root = files_root.resolve() if files_root else None
        self.client = LabelStudio(base_url=self.url, api_key=token, timeout=timeout)
        self._storage_checked: set[tuple[int, Path]] = set()

    def _call(self, what: str, fn, *args, **kwargs):  # noqa: ANN001, ANN202
        import httpx
        from label_studio_sdk.core.api_error import ApiError

        try:
            return fn(*args, **kwargs)
        except (httpx.HTTPError, OSError) as exc:
            raise LabelingUnavailable(f"Label Studio at {self.url} is unreachable ({what}): {exc}") from exc
        except ApiError as exc:
            body = exc.body if isinstance(exc.body, (str, dict)) else ""
            raise LabelingUnavailable(f"Label Studio at {self.url} refused {what}: {exc.status_code} {body}") from exc

    # --- projects --------------------------------------------------------------------
    def ensure_project(self, fleet: str, names: Sequence[str]) -> int:
        """The fleet's project (found by title, created once); its classes follow the model's."""
        title = project_title(fleet)
        config = label_config(names)
        found = [p for p in self._call("listing projects", self.client.projects.list, title=title) if p.title == title]
        if found:
            project = min(found, key=lambda p: p.id)
            if project.label_config != config:
                self._call("updating the label config", self.client.projects.update, id=project.id, label_config=config)
            return int(project.id)
        project = self._call(
            "creating a project",
            self.client.projects.create,
            title=title,
            description=f"Frames the devices of fleet '{fleet}' selected for labeling (pre-annotated by the model).",
            label_config=config,
        )
        log.info("created Label Studio project %s (%s) for fleet %s", project.id, title, fleet)
        return int(project.id)

    def image_ref(self, frames_dir: Path, key: str, read: Callable[[], bytes] | None = None) -> str:
        """How a task names its image: a local-files URL when Label Studio shares our disk (the frame
        is a file under its root), else the bytes inline (`read` gets them from the object store)."""
        path = (frames_dir / key).resolve()
        if self.files_root is not None and path.is_relative_to(self.files_root) and path.is_file():
            return "/data/local-files/?d=" + quote(path.relative_to(self.files_root).as_posix())
        kind = "png" if key.endswith(".png") else "jpeg"
        data = read() if read is not None else path.read_bytes()
        return f"data:image/{kind};base64," + base64.b64encode(data).decode()

    def _ensure_storage(self, project_id: int, folder: Path) -> None:
        """A local-files storage on one device's frames folder: Label Studio serves only files under one,
        and a project sees the folders of its fleet's devices only."""
        if self.files_root is None or (project_id, folder) in self._storage_checked:
            return
        path = str(folder.resolve())
        storages = self._call("listing storages", self.client.import_storage.local.list, project=project_id)
        if not any(getattr(s, "path", None) == path for s in storages):
            self._call(
                "adding a frames storage",
                self.client.import_storage.local.create,
                project=project_id,
                path=path,
                title=f"loopline frames: {folder.name}",
                use_blob_urls=False,
            )
        self._storage_checked.add((project_id, folder))

    # --- tasks -----------------------------------------------------------------------
    def _tasks(self, project_id: int) -> list[Any]:
        pager = self._call("listing tasks", self.client.tasks.list, project=project_id, fields="all", page_size=100)
        return self._call("listing tasks", list, pager)

    def existing_frames(self, project_id: int) -> dict[str, int]:
        """frame → task id of the tasks already in the project."""
        return {
            str(t.data.get("frame")): int(t.id)
            for t in self._tasks(project_id)
            if isinstance(t.data, dict) and t.data.get("frame")
        }

    def push(
        self, project_id: int, tasks: Sequence[dict[str, Any]], *, frames_dir: Path | None = None
    ) -> dict[str, int]:
        """Import tasks ({"data": {"image", "frame", …}, "predictions": [...]}); frame → new task id."""
        if not tasks:
            return {}
        if frames_dir is not None:
            for device in sorted({str(t["data"].get("device") or "") for t in tasks} - {""}):
                if (frames_dir / device).is_dir():  # frames on this disk (not in a bucket) are served from it
                    self._ensure_storage(project_id, frames_dir / device)
        answer = self._call(
            "importing tasks",
            self.client.projects.import_tasks,
            id=project_id,
            request=list(tasks),
            return_task_ids=True,
        )
        ids = list(answer.task_ids or [])
        if len(ids) != len(tasks):  # the server did not say which is which: ask it
            existing = self.existing_frames(project_id)
            return {t["data"]["frame"]: existing[t["data"]["frame"]] for t in tasks if t["data"]["frame"] in existing}
        return {t["data"]["frame"]: int(i) for t, i in zip(tasks, ids, strict=True)}

    def task_states(self, project_id: int) -> list[TaskState]:
        """Every task of the project the loop pushed, with the annotation that counts for it."""
        return [state for t in self._tasks(project_id) if (state := _state_of(t)) is not None]

    def task_annotation(self, task_id: int) -> TaskState | None:
        """One task as the server has it now (a webhook event is only a hint: this is the truth)."""
        return _state_of(self._call("reading a task", self.client.tasks.get, id=str(task_id)))

    def ensure_webhook(self, project_id: int, url: str, secret: str) -> None:
        """Annotation events of the project go to `url` with the project's token (once); hooks of ours
        that point elsewhere (an old address of this service) are removed, so they stop getting it."""
        hooks = self._call("listing webhooks", self.client.webhooks.list, project=project_id)
        headers = {WEBHOOK_HEADER: webhook_token(secret, project_id)}
        found = False
        for hook in hooks:
            if hook.url != url:
                if WEBHOOK_HEADER in (hook.headers or {}):
                    self._call("removing an old webhook", self.client.webhooks.delete, id=hook.id)
                continue
            found = True
            if (hook.headers or {}) != headers or not hook.is_active:
                self._call(
                    "updating the webhook",
                    self.client.webhooks.update,
                    id=hook.id,
                    url=url,
                    headers=headers,
                    is_active=True,
                    actions=list(WEBHOOK_ACTIONS),
                )
        if found:
            return
        self._call(
            "adding the webhook",
            self.client.webhooks.create,
            url=url,
            project=project_id,
            actions=list(WEBHOOK_ACTIONS),
            headers=headers,
            send_payload=True,
            send_for_all_actions=False,
            is_active=True,
        )
        log.info("Label Studio project %s sends annotation events to %s", project_id, url)


def _state_of(task: Any) -> TaskState | None:
    data = task.data if isinstance(task.data, dict) else {}
    frame = data.get("frame")
    if not frame:
        return None  # not a task the loop pushed
    anns = [a if isinstance(a, dict) else a.dict() for a in (task.annotations or [])]
    return TaskState(task_id=int(task.id), frame=str(frame), annotation=pick_annotation(int(task.id), str(frame), anns))


def labeling_from_settings(settings) -> LabelStudioLabeling | None:  # noqa: ANN001
    """The configured Label Studio (LOOPLINE_LABEL_STUDIO_URL), or the local one if it runs; else None."""
    from vision.labeling.local_server import connection

    info = connection(settings)
    if info is None:
        return None
    return LabelStudioLabeling(info.url, info.token, files_root=getattr(info, "files_root", None))
