"""Where a running loopline service announces itself, so the CLI can hand it work.

The embedded stores are owned by one process. `loopline serve` writes
`LOOPLINE_HOME/service.json` (URL, pid and a local admin token, mode 0600); a CLI command
that finds the store locked reads it and sends its work over HTTP instead of failing.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

SERVICE_FILE = "service.json"


@dataclass(frozen=True)
class ServiceInfo:
    url: str
    pid: int
    token: str

    @staticmethod
    def new(url: str) -> ServiceInfo:
        return ServiceInfo(url=url, pid=os.getpid(), token=secrets.token_urlsafe(32))


def announce(home: Path, info: ServiceInfo) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / SERVICE_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(info), fh)
    tmp.replace(path)
    return path


def withdraw(home: Path, info: ServiceInfo) -> None:
    current = running_service(home)
    if current and current.token == info.token:
        (home / SERVICE_FILE).unlink(missing_ok=True)


def running_service(home: Path) -> ServiceInfo | None:
    """The service announced under `home`, if its process is still alive."""
    path = home / SERVICE_FILE
    try:
        info = ServiceInfo(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return info
