"""Kinds of job: what each package can run as a job, found through entry points.

A package names a list of `JobKind` in the `loopline.jobs` entry-point group (rag: ingest and
sync; vision: training, export, evaluation and loop cycles). A kind has a pydantic model of
its parameters, checked when the job is submitted (a bad request is a 422 then, not a failed
job later), the queue it goes to (`train` for the work that wants a trainer's GPU), and the
function that runs it. The core never imports a vertical by name.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from shared.context import AppContext

JOBS_GROUP = "loopline.jobs"
DEFAULT_QUEUE, TRAIN_QUEUE = "default", "train"
QUEUES = (DEFAULT_QUEUE, TRAIN_QUEUE)


@dataclass
class JobRun:
    """What a running job gets: the composition root, its parameters, and a way to report progress.

    `progress(done, total, **details)` is cheap to call often: the worker writes the latest
    figures to the job record with its next lease renewal. `cancelled` is set when the
    process shuts down; long work checks it (or is cut by its plugin's `stop`) and the job is
    given back to the queue instead of failing.
    """

    ctx: AppContext
    params: BaseModel
    job_id: str
    cancelled: threading.Event = field(default_factory=threading.Event)
    _progress: dict[str, Any] = field(default_factory=dict)
    _on_cancel: list[Callable[[], None]] = field(default_factory=list)

    def on_cancel(self, fn: Callable[[], None]) -> None:
        """Call `fn` when the process shuts down (e.g. a service's `stop`, which cuts its work short)."""
        self._on_cancel.append(fn)
        if self.cancelled.is_set():
            fn()

    def cancel(self) -> None:
        self.cancelled.set()
        for fn in self._on_cancel:
            fn()

    def progress(self, done: int, total: int | None = None, **details: Any) -> None:
        self._progress = {"done": done, "total": total, **details}

    def snapshot(self) -> dict[str, Any]:
        return dict(self._progress)


@dataclass(frozen=True)
class JobKind:
    """One kind of job: its name (`package.verb`), parameters, queue and the function that runs it."""

    name: str
    summary: str
    params: type[BaseModel]
    run: Callable[[JobRun], dict[str, Any]]
    queue: str = DEFAULT_QUEUE
    # Parameters naming paths on the server: a network caller may name only paths under
    # LOOPLINE_INGEST_ROOTS (the machine's own CLI may name any it can read).
    path_params: tuple[str, ...] = ()
    # At most one job of this kind queued or running at a time (a second request is refused).
    exclusive: bool = False

    def __post_init__(self) -> None:
        if self.queue not in QUEUES:
            raise ValueError(f"job kind {self.name}: queue {self.queue!r} is not one of {QUEUES}")


@lru_cache(maxsize=1)
def job_kinds() -> dict[str, JobKind]:
    """Every installed package's job kinds, by name; a package whose extra is missing adds none."""
    found: dict[str, JobKind] = {}
    for ep in sorted(entry_points(group=JOBS_GROUP), key=lambda e: e.name):
        try:
            kinds = ep.load()
        except ImportError:
            continue
        for kind in kinds:
            if kind.name in found:
                raise ValueError(f"job kind {kind.name} is defined twice (entry point {ep.name})")
            found[kind.name] = kind
    return found
