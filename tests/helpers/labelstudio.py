"""A real Label Studio for the tests, fast: its database is migrated once, then copied.

A first start migrates Label Studio's database (half a minute to two minutes); a start on a
migrated copy takes seconds. `template(exe)` makes that migrated data folder once per
installed version, outside the repository (`~/.cache/loopline-tests/labelstudio-<version>/`,
or under LOOPLINE_TEST_CACHE), under a file lock so parallel sessions wait for the first one;
`seed(home, exe)` copies it (data and the account's credentials) to `home/labelstudio/`, where
`LocalLabelStudio(home)` finds it; `LabelStudioServer` runs one on a free port.

The executable is LOOPLINE_LABEL_STUDIO_BIN or the checkout's `.venv-labelstudio` (made by
`make`). Where neither exists the tests skip, except under CI=true, where they fail: CI must
really exercise Label Studio (as with PostgreSQL, tests/conftest.py).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from live_server import free_port

from vision.labeling.local_server import DATABASE, LocalLabelStudio, installed_version

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("LOOPLINE_TEST_CACHE") or Path.home() / ".cache" / "loopline-tests")
FIRST_START_TIMEOUT_S = 600  # a first start on two busy cores
START_TIMEOUT_S = 180


def executable() -> str:
    """The `label-studio` to test with; skips (fails under CI=true) where it is not installed."""
    exe = os.environ.get("LOOPLINE_LABEL_STUDIO_BIN") or str(ROOT / ".venv-labelstudio" / "bin" / "label-studio")
    if shutil.which(exe) is None:
        reason = f"Label Studio is not installed ({exe} not found; `make` installs .venv-labelstudio)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires Label Studio; {reason}", pytrace=False)
        pytest.skip(reason)
    return exe


def _complete(folder: Path) -> bool:
    return (folder / "labelstudio" / "credentials.json").exists() and (
        folder / "labelstudio" / "data" / DATABASE
    ).exists()


def template(exe: str) -> Path:
    """The migrated template for `exe`'s version (made on first use): a folder holding `labelstudio/`."""
    version = installed_version(exe) or "unknown"
    dest = CACHE / f"labelstudio-{version}"
    if _complete(dest):
        return dest
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"labelstudio-{version}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _complete(dest):  # another session made it while we waited
            return dest
        work = Path(tempfile.mkdtemp(prefix=f"labelstudio-{version}-", dir=CACHE))
        server = LocalLabelStudio(work, executable=exe, port=free_port())
        try:
            server.up(timeout=FIRST_START_TIMEOUT_S)
        finally:
            server.down()
        for name in ("server.json", "labelstudio.log", "lock"):
            (work / "labelstudio" / name).unlink(missing_ok=True)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(work, dest)
    return dest


def seed(home: Path, exe: str) -> Path:
    """Copy the migrated template into `home/labelstudio/`; returns `home`."""
    shutil.copytree(template(exe) / "labelstudio", Path(home) / "labelstudio", dirs_exist_ok=True)
    return Path(home)


class LabelStudioServer:
    """A real Label Studio on a migrated copy, on a free port of 127.0.0.1 (kept across restarts).

    `url`, `token` (the account's legacy API token), `username`, `home`, `files_root` (the folder
    it serves as local files: `home/frames`), `port`, `pid`; `start()`, `stop()` and `restart()` (stop
    and start on the same data and port, e.g. a server restarted mid-cycle).
    """

    def __init__(self, home: Path, exe: str, *, port: int | None = None, files_root: Path | None = None) -> None:
        self.home = seed(home, exe)
        self.server = LocalLabelStudio(self.home, executable=exe, port=port or free_port(), files_root=files_root)
        creds = self.server.credentials()
        assert creds is not None, "the template has no credentials.json"
        self.token: str = creds["token"]
        self.username: str = creds["username"]
        self.files_root: Path = self.server.files_root
        self.port: int = self.server.port
        self.url: str = self.server.url

    @property
    def pid(self) -> int | None:
        info = self.server.info()
        return info.pid if info else None

    def start(self) -> None:
        self.server.up(timeout=START_TIMEOUT_S)

    def stop(self) -> None:
        self.server.down()

    def restart(self) -> None:
        self.stop()
        self.start()

    def __repr__(self) -> str:
        return f"LabelStudioServer(url={self.url!r}, home={str(self.home)!r})"
