"""The private wal_level=logical PostgreSQL cluster of the benchmarks, for tests.

The machine's own server runs with wal_level=replica (changing it restarts a server other
things use), so change data capture is tested on a cluster of our own, started from the
installed PostgreSQL (evaluation/benchmarks/pg_cluster.py). Without the binaries the tests
skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from evaluation.benchmarks.pg_cluster import ClusterUnavailable, LogicalCluster
from evaluation.benchmarks.pg_cluster import logical_cluster as _cluster


@contextmanager
def logical_cluster() -> Iterator[LogicalCluster]:
    """The started cluster (`.dsn` of its `postgres` database, as superuser; `stop()`, `start()`)."""
    try:
        with _cluster() as cluster:
            yield cluster
    except ClusterUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires PostgreSQL; {exc}", pytrace=False)
        pytest.skip(str(exc))
