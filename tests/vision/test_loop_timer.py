"""The service's loop timer submits each cycle as a `loop.cycle` job: recorded, one at a time, run where jobs run."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import shared.jobs.api
import vision.labeling.api
from shared.auth import KeyRegistry, UserEntry
from shared.config import Settings
from shared.server import create_app

pytest.importorskip("label_studio_sdk")
ADMIN = {"X-API-Key": "test-key-root-0123456789"}


def test_each_tick_of_the_loop_timer_is_a_cycle_job_never_two_at_once(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path / "home",
        label_studio_url="http://127.0.0.1:9",  # configured but away: each cycle records what failed
        label_studio_token="not-a-real-token",
        loop_interval_s=0.2,
    )
    keys = KeyRegistry([UserEntry(name="root", key=ADMIN["X-API-Key"], groups=[], admin=True)])
    app = create_app(settings, plugins=[vision.labeling.api.plugin, shared.jobs.api.plugin], keys=keys)
    overlaps = 0
    with TestClient(app) as client:
        deadline = time.monotonic() + 60
        cycles: list[dict] = []
        while time.monotonic() < deadline and len([c for c in cycles if c["state"] != "queued"]) < 2:
            cycles = client.get("/v1/jobs?kind=loop.cycle", headers=ADMIN).json()
            overlaps += sum(c["state"] in ("queued", "running") for c in cycles) > 1
            time.sleep(0.05)
    assert len(cycles) >= 2, cycles
    assert overlaps == 0
    assert {c["owner"] for c in cycles} == {"loop-timer"} and {c["queue"] for c in cycles} == {"train"}
    assert all(c["state"] in ("succeeded", "failed") for c in cycles[1:]), cycles
    assert cycles[-1]["result"]["fleets"] == []  # no fleet runs a promoted model yet: nothing to cycle
