"""Fixtures shared by the whole suite: offline settings, one loaded embedder, services."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from shared.metadata.store import MetadataStore

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
for var in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_MODEL"):
    os.environ.pop(var, None)  # a developer's endpoint must not leak into the tests


@pytest.fixture(scope="session")
def embedder():
    """The real bundled MiniLM model on the default runtime (ONNX INT8), loaded once; its export
    lands in the user's cache once per machine (about 15 s)."""
    pytest.importorskip("onnxruntime")
    from rag.embeddings import make_embedder
    from shared.config import Settings

    return make_embedder(Settings())


@pytest.fixture
def make_service(tmp_path: Path, embedder) -> Iterator[Callable[..., object]]:
    """Build RagServices on embedded stores under tmp_path, sharing the loaded model."""
    from rag.service import RagService
    from shared.config import Settings

    made = []

    def factory(home: Path | None = None, **overrides) -> RagService:
        settings = Settings(home=home or tmp_path / "home", **overrides)
        svc = RagService(settings, embedder_factory=lambda: embedder)
        made.append(svc)
        return svc

    yield factory
    for svc in made:
        try:
            svc.close()
        except Exception:
            pass


@pytest.fixture
def handbook(tmp_path: Path) -> tuple[Path, dict[str, list[str]]]:
    """The fictional company handbook of rag.samples, written under tmp_path/handbook."""
    from rag.samples import write_handbook

    root = tmp_path / "handbook"
    return root, write_handbook(root)


# --- metadata store on SQLite and PostgreSQL (moved from tests/shared) -------------------
# Fixtures of the shared-core tests: a metadata store on SQLite and on PostgreSQL.
#
# PostgreSQL tests each get a fresh, uniquely named database (created from template0 through
# an AUTOCOMMIT connection and dropped afterwards), so they never see each other's rows.
# The server is `LOOPLINE_TEST_POSTGRES_URL` (default: the local `test` database as
# `postgres`). When it cannot be reached the PostgreSQL params are skipped, except under
# `CI=true`, where they fail: CI must really exercise PostgreSQL.


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


# --- servers of streamed sources --------------------------------------------------------
# NATS with JetStream (the machine's, or LOOPLINE_TEST_NATS_URL) and a private PostgreSQL
# cluster with wal_level=logical (tests/helpers/pg_logical.py): one per test module.


@pytest.fixture(scope="module")
def connection():
    """A `shared.ingestion.jetstream.Connection` to the test NATS (skipped without one, failed under CI=true)."""
    from nats_server import nats_connection

    return nats_connection()


@pytest.fixture
def topology(connection):
    """Streams and subjects under a prefix of this test's own, deleted afterwards."""
    from nats_server import fresh_topology

    with fresh_topology(connection) as topo:
        yield topo


@pytest.fixture(scope="module")
def pg():
    """A `LogicalCluster` (evaluation/benchmarks/pg_cluster.py): PostgreSQL with wal_level=logical for this module (its `stop()`/`start()` play outages)."""
    from tests.helpers.pg_logical import logical_cluster

    with logical_cluster() as cluster:
        yield cluster
