"""The local Label Studio on PostgreSQL (LOOPLINE_LABEL_STUDIO_DATABASE_URL), for real.

One fresh database per module on the PostgreSQL of tests/conftest.py (skipped where it is not
reachable, failed under CI=true), dropped at the end. The server starts through
`loopline labelstudio up` in a subprocess, as a person runs it; its first start migrates the
empty database (no template to copy here: that migration is what is tested).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from labelstudio import FIRST_START_TIMEOUT_S, executable, free_port
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from vision.labeling.local_server import DATABASE, LabelStudioError, LocalLabelStudio, PostgresDatabase

DECOY_PASSWORD = "pg-decoy-Password-7f3a"  # trust auth ignores it; no output may show it
PNG_1PX = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def loopline(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", "labelstudio", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def ls_database(postgres_admin_url: str) -> Iterator[tuple[str, str]]:
    """(URL for Label Studio, URL to query it from the test) of a fresh database, dropped afterwards."""
    name = f"loopline_ls_{uuid.uuid4().hex[:12]}"
    admin_url = make_url(postgres_admin_url)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE template0'))
    try:
        query_url = admin_url.set(database=name)
        ls_url = query_url.set(drivername="postgresql", password=admin_url.password or DECOY_PASSWORD)
        yield ls_url.render_as_string(hide_password=False), query_url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_the_database_url_becomes_label_studios_own_settings() -> None:
    db = PostgresDatabase.from_url("postgresql+psycopg://ls%40team:p%3Ass@db.internal:6543/labels?sslmode=require")
    assert db.child_env() == {
        "DJANGO_DB": "default",
        "POSTGRE_NAME": "labels",
        "POSTGRE_USER": "ls@team",
        "POSTGRE_PASSWORD": "p:ss",
        "POSTGRE_HOST": "db.internal",
        "POSTGRE_PORT": "6543",
        "PGSSLMODE": "require",
    }
    assert db.describe() == "postgresql://ls%40team@db.internal:6543/labels"
    assert "p:ss" not in repr(db)
    socket_db = PostgresDatabase.from_url("postgresql:///labels?host=/var/run/postgresql")
    assert socket_db.child_env()["POSTGRE_HOST"] == "/var/run/postgresql"
    assert socket_db.child_env()["POSTGRE_PORT"] == "5432"
    for bad, why in (
        ("mysql://root@localhost/labels", "postgresql://"),
        ("postgresql://localhost:5432/", "names no database"),
        ("postgresql://localhost/labels?target_session_attrs=any", "target_session_attrs"),
    ):
        with pytest.raises(LabelStudioError, match=why):
            LocalLabelStudio(Path("/nonexistent"), database_url=bad)


@pytest.mark.postgres
def test_a_missing_database_is_a_clear_error_before_label_studio_runs(tmp_path: Path, postgres_admin_url: str) -> None:
    pytest.importorskip("psycopg")  # loopline checks the database with it (the `rag` extra brings it)
    fake = tmp_path / "label-studio"
    fake.write_text(f"#!/bin/sh\ntouch '{tmp_path}/ran'\nsleep 60\n")
    fake.chmod(0o755)
    missing = make_url(postgres_admin_url).set(drivername="postgresql", database=f"loopline_absent_{uuid.uuid4().hex}")
    server = LocalLabelStudio(
        tmp_path / "home",
        executable=str(fake),
        port=free_port(),
        database_url=missing.render_as_string(hide_password=False),
    )
    with pytest.raises(LabelStudioError, match="does not exist"):
        server.up(timeout=30)
    assert not (tmp_path / "ran").exists()
    assert not (tmp_path / "home" / "labelstudio" / "credentials.json").exists()


@pytest.mark.slow
@pytest.mark.postgres
def test_label_studio_keeps_its_projects_in_postgresql(tmp_path: Path, ls_database: tuple[str, str]) -> None:
    from vision.labeling.client import LabelStudioLabeling

    ls_url, query_url = ls_database
    password = make_url(ls_url).password
    exe = executable()
    home, port = tmp_path / "home", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
    env.update(
        LOOPLINE_HOME=str(home),
        LOOPLINE_LABEL_STUDIO_PORT=str(port),
        LOOPLINE_LABEL_STUDIO_BIN=exe,
        LOOPLINE_LABEL_STUDIO_DATABASE_URL=ls_url,
    )
    shown = PostgresDatabase.from_url(ls_url).describe()
    state = home / "labelstudio" / "server.json"

    try:
        started = time.monotonic()
        up = loopline(
            "up", "--json", "--timeout", str(FIRST_START_TIMEOUT_S), env=env, timeout=FIRST_START_TIMEOUT_S + 60
        )
        print(f"first start on an empty PostgreSQL database: {time.monotonic() - started:.1f}s")
        assert up.returncode == 0, up.stderr
        st = json.loads(up.stdout)
        assert st["running"] is True and st["first_start"] is True and st["database"] == shown
        assert "First start" in up.stderr and shown in up.stderr
        assert password not in up.stdout + up.stderr + state.read_text()
        assert not (home / "labelstudio" / "data" / DATABASE).exists(), "no SQLite database beside PostgreSQL"

        creds = json.loads((home / "labelstudio" / "credentials.json").read_text())
        labeling = LabelStudioLabeling(st["url"], creds["token"])
        project_id = labeling.ensure_project("pg-fleet", ["plate"])
        image = labeling.image_ref(tmp_path, "cam-01/f1.png", read=lambda: PNG_1PX)
        pushed = labeling.push(project_id, [{"data": {"image": image, "frame": "cam-01/f1.png", "device": "cam-01"}}])
        assert labeling.existing_frames(project_id) == pushed and list(pushed) == ["cam-01/f1.png"]

        # The rows are PostgreSQL's: what any other client of that database sees.
        engine = create_engine(query_url)
        try:
            with engine.connect() as conn:
                title = conn.execute(text("SELECT title FROM project WHERE id = :id"), {"id": project_id}).scalar_one()
                frames = conn.execute(
                    text("SELECT data->>'frame' FROM task WHERE project_id = :id"), {"id": project_id}
                ).scalars()
                assert (title, list(frames)) == ("loopline pg-fleet frames", ["cam-01/f1.png"])
        finally:
            engine.dispose()

        down = loopline("down", "--json", env=env, timeout=60)
        assert down.returncode == 0 and json.loads(down.stdout)["stopped_pid"] == st["pid"], down.stderr
        started = time.monotonic()
        again = loopline("up", "--json", env=env, timeout=360)
        print(f"restart on the migrated PostgreSQL database: {time.monotonic() - started:.1f}s")
        assert again.returncode == 0, again.stderr
        st2 = json.loads(again.stdout)
        assert st2["started"] is True and st2["first_start"] is False and "First start" not in again.stderr
        assert json.loads((home / "labelstudio" / "credentials.json").read_text()) == creds, "the account is reused"

        labeling = LabelStudioLabeling(st2["url"], creds["token"])
        assert labeling.ensure_project("pg-fleet", ["plate"]) == project_id
        assert labeling.existing_frames(project_id) == pushed
        status = loopline("status", "--json", env=env, timeout=60)
        s = json.loads(status.stdout)
        assert (s["running"], s["projects"], s["database"]) == (True, 1, shown)
        assert password not in status.stdout
        assert "Database: " + shown in loopline("status", env=env, timeout=60).stdout

        assert loopline("down", env=env, timeout=60).returncode == 0
        assert password not in (home / "labelstudio" / "labelstudio.log").read_text(errors="replace")
        assert not (home / "labelstudio" / "data" / DATABASE).exists()
    finally:  # a failure above must not leave the server running on a dropped database
        LocalLabelStudio(home, executable=exe, port=port, database_url=ls_url).down()
