"""A private PostgreSQL cluster with wal_level=logical, from the machine's PostgreSQL binaries.

Change data capture needs wal_level=logical, which a shared server may not run (changing it
restarts the server), so the freshness benchmark and the tests start a cluster of their own:
initdb and pg_ctl of the installed PostgreSQL, a temporary folder, a free port, fsync off.
initdb refuses to run as root, so as root it runs as the `postgres` user.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class ClusterUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def server_bindir() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian's layout), if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_owner(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


class LogicalCluster:
    """A started cluster: `dsn` of its `postgres` database (superuser, trust on 127.0.0.1);
    `stop()` and `start()` play an outage."""

    def __init__(self, bindir: Path, root: Path, port: int) -> None:
        self.root, self.port = root, port
        self.data = root / "data"
        self.pg_ctl = str(bindir / "pg_ctl")
        self.dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c wal_level=logical "
            "-c max_replication_slots=16 -c max_wal_senders=16 -c fsync=off"
        )
        subprocess.run(
            _as_owner([self.pg_ctl, "-D", str(self.data), "-w", "-l", str(self.root / "log"), "-o", options, "start"]),
            check=True,
            capture_output=True,
        )

    def stop(self) -> None:
        subprocess.run(_as_owner([self.pg_ctl, "-D", str(self.data), "-w", "-m", "fast", "stop"]), capture_output=True)


@contextmanager
def logical_cluster() -> Iterator[LogicalCluster]:
    """Make and start the cluster; it is stopped and removed afterwards."""
    bindir = server_bindir()
    if bindir is None:
        raise ClusterUnavailable("PostgreSQL server binaries not installed (/usr/lib/postgresql/*/bin)")
    root = Path(tempfile.mkdtemp(prefix="loopline-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    cluster = LogicalCluster(bindir, root, _free_port())
    subprocess.run(
        _as_owner([str(bindir / "initdb"), "-A", "trust", "-U", "postgres", "-D", str(cluster.data)]),
        check=True,
        capture_output=True,
    )
    cluster.start()
    try:
        yield cluster
    finally:
        subprocess.run(
            _as_owner([cluster.pg_ctl, "-D", str(cluster.data), "-m", "immediate", "stop"]), capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)
