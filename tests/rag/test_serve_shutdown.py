"""Stopping mid-ingest: SIGTERM ends `loopline serve` promptly, and no run stays `running` forever.

Found by a probe: during a long ingest SIGTERM did not stop the service (kill -9 was needed),
and the run record stayed `running` after the restart. Both tests run the real command in a
child process, as an operator would.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from live_server import free_port

from rag.service import RagService
from shared.config import Settings

pytestmark = pytest.mark.slow


def many_documents(folder: Path, n: int = 400) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        (folder / f"note-{i:04d}.md").write_text(
            f"# Note {i}\n\nWarehouse note {i}: crates of kind {i} go to aisle {i % 13}, shelf {i % 7}.\n"
        )
    return folder


def child_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
    return env | {"LOOPLINE_HOME": str(home), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **extra}


def runs(settings: Settings) -> list[tuple[int, str, str, str | None]]:
    """(id, kind, status, error) of every run, read-only: the child owns the schema."""
    db = settings.home / "metadata.db"
    if not db.exists():
        return []
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
            return conn.execute("SELECT id, kind, status, error FROM ingest_runs ORDER BY id").fetchall()
    except sqlite3.OperationalError:  # the child is still creating its tables
        return []


def wait_for_running_run(settings: Settings, proc: subprocess.Popen, timeout: float = 90) -> int:
    """The id of the ingest run the child has started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the child exited early ({proc.returncode})"
        running = [r for r in runs(settings) if r[1] == "ingest" and r[2] == "running"]
        if running:
            return running[0][0]
        time.sleep(0.2)
    raise AssertionError("no ingest run started")


def run_status(settings: Settings, run_id: int) -> tuple[str, str | None]:
    return next((status, error) for rid, _, status, error in runs(settings) if rid == run_id)


def test_sigterm_stops_serve_during_an_ingest_and_records_it_interrupted(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    folder = many_documents(tmp_path / "notes")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "serve", "--port", str(port)],
        env=child_env(settings.home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "serve did not start"
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        token = json.loads((settings.home / "service.json").read_text())["token"]
        answers: list[httpx.Response | Exception] = []

        def ingest() -> None:  # the CLI hand-off: the local token may ingest any readable folder
            try:
                answers.append(
                    httpx.post(
                        f"{url}/v1/admin/ingest?wait=true",
                        json={"path": str(folder), "groups": ["public"]},
                        headers={"X-API-Key": token},
                        timeout=300,
                    )
                )
            except httpx.HTTPError as exc:
                answers.append(exc)

        caller = threading.Thread(target=ingest, daemon=True)
        caller.start()
        run_id = wait_for_running_run(settings, proc)
        time.sleep(1.0)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=40)
        stopped_in = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert stopped_in < 30, f"serve took {stopped_in:.0f} s to stop"
    status, error = run_status(settings, run_id)
    assert status == "interrupted", (status, error)
    caller.join(timeout=10)
    if answers and isinstance(answers[0], httpx.Response):
        assert answers[0].status_code == 503 and "interrupted" in answers[0].json()["detail"]
    assert not (settings.home / "service.json").exists()


def test_a_run_left_running_by_a_killed_process_is_interrupted_at_the_next_start(tmp_path: Path, embedder) -> None:
    settings = Settings(home=tmp_path / "home")
    folder = many_documents(tmp_path / "notes")
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "rag", "ingest", str(folder), "--groups", "public", "--json"],
        env=child_env(settings.home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        run_id = wait_for_running_run(settings, proc)
        proc.kill()  # kill -9: nothing gets to record anything
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert run_status(settings, run_id)[0] == "running"

    from shared.metadata import MetadataStore

    other = MetadataStore(settings.resolved_database_url)
    train_id = other.start_run("train:/data/plates.yaml", kind="train")  # another pipeline's run: not ours to judge
    other.close()

    svc = RagService(settings, embedder_factory=lambda: embedder)
    try:
        status, error = run_status(settings, run_id)
        assert status == "interrupted" and "stopped" in (error or "")
        assert run_status(settings, train_id)[0] == "running"
        resumed = svc.ingest(folder, ["public"])
        assert resumed.status == "succeeded" and resumed.added + resumed.unchanged == 400
    finally:
        svc.close()
