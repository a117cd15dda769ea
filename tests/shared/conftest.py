"""Fixtures of the shared-core tests: a metadata store on SQLite and on PostgreSQL.

PostgreSQL tests each get a fresh, uniquely named database (created from template0 through
an AUTOCOMMIT connection and dropped afterwards), so they never see each other's rows.
The server is `LOOPLINE_TEST_POSTGRES_URL` (default: the local `test` database as
`postgres`). When it cannot be reached the PostgreSQL params are skipped, except under
`CI=true`, where they fail: CI must really exercise PostgreSQL.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from shared.metadata.store import MetadataStore

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """URL of a PostgreSQL database we may run CREATE/DROP DATABASE from."""
    url = os.environ.get("LOOPLINE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        where = make_url(url).render_as_string(hide_password=True)
        reason = f"PostgreSQL not reachable at {where}: {str(exc).splitlines()[0]}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires PostgreSQL; {reason}", pytrace=False)
        pytest.skip(reason)
    finally:
        engine.dispose()
    return url


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database, dropped after the test."""
    name = f"loopline_test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE template0'))
        yield make_url(postgres_admin_url).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'metadata.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest) -> Iterator[MetadataStore]:
    """A metadata store on an empty database of each backend."""
    url = request.getfixturevalue(f"{request.param}_url")
    st = MetadataStore(url)
    yield st
    st.close()


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[MetadataStore]:
    st = MetadataStore(sqlite_url)
    yield st
    st.close()
