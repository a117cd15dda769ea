"""`jobs.probe`: a job that does nothing but prove a worker takes jobs from a queue.

An operator submits one after deploying workers (`POST /v1/jobs {"kind": "jobs.probe"}`,
`jobs.probe-train` for the trainers' queue): its result names the host and process that
ran it. With `seconds` it holds its worker that long, reporting progress each second,
which is how a lost worker and the job's retry are tried without real work.
"""

from __future__ import annotations

import math
import os
import socket
from typing import Any

from pydantic import BaseModel, Field

from shared.ingestion import Cancelled
from shared.jobs.kinds import TRAIN_QUEUE, JobKind, JobRun


class ProbeParams(BaseModel):
    seconds: float = Field(0.0, ge=0, le=600, description="How long the job holds its worker.")


def run_probe(run: JobRun) -> dict[str, Any]:
    seconds: float = run.params.seconds  # type: ignore[attr-defined]
    steps = math.ceil(seconds)
    for step in range(steps):
        run.progress(step, steps)
        if run.cancelled.wait(min(1.0, seconds - step)):
            raise Cancelled("the worker is stopping")
    run.progress(steps, steps)
    return {"host": socket.gethostname(), "pid": os.getpid()}


KINDS = [
    JobKind("jobs.probe", "Prove that a worker takes jobs (optionally hold it some seconds).", ProbeParams, run_probe),
    JobKind("jobs.probe-train", "The same on the train queue (a trainer).", ProbeParams, run_probe, queue=TRAIN_QUEUE),
]
