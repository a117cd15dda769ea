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


@contextmanager
def logical_cluster() -> Iterator[str]:
    """Start the cluster; yields a libpq DSN of its `postgres` database (superuser, trust on 127.0.0.1)."""
    bindir = server_bindir()
    if bindir is None:
        raise ClusterUnavailable("PostgreSQL server binaries not installed (/usr/lib/postgresql/*/bin)")
    root = Path(tempfile.mkdtemp(prefix="loopline-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    data, port = root / "data", _free_port()
    subprocess.run(
        _as_owner([str(bindir / "initdb"), "-A", "trust", "-U", "postgres", "-D", str(data)]),
        check=True,
        capture_output=True,
    )
    options = (
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c wal_level=logical "
        "-c max_replication_slots=16 -c max_wal_senders=16 -c fsync=off"
    )
    pg_ctl = str(bindir / "pg_ctl")
    subprocess.run(
        _as_owner([pg_ctl, "-D", str(data), "-w", "-l", str(root / "log"), "-o", options, "start"]),
        check=True,
        capture_output=True,
    )
    try:
        yield f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
    finally:
        subprocess.run(_as_owner([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
