"""The local Label Studio that loopline starts, checks and stops (`loopline labelstudio …`).

Label Studio runs from a venv of its own (`.venv-labelstudio`, made by `make`: it pins Django
and numpy versions the ML stack must not inherit) as a detached process bound to 127.0.0.1.
Everything it keeps lives under `home/labelstudio/`:

- `data/`: its SQLite database and media (LABEL_STUDIO_BASE_DATA_DIR); with
  LOOPLINE_LABEL_STUDIO_DATABASE_URL set, the database is that PostgreSQL one instead (`data/`
  keeps the media), handed to Label Studio as its own DJANGO_DB and POSTGRE_* settings;
- `credentials.json` (0600): the account and API token generated on the first start; restarts
  reuse them, since Label Studio only creates the account once;
- `server.json`: the running server (url, port, pid, files root, database without its password,
  started_at), removed by `down`;
- `labelstudio.log`: its output, whose tail comes with every start failure.

The child gets an environment built from scratch (PATH, HOME, LANG and its own settings):
Label Studio falls back from `LABEL_STUDIO_X` to a bare `X`, so a stray USERNAME, PASSWORD,
HOST or PORT of the caller's shell would otherwise reach it. A busy port is an error here:
Label Studio itself would silently move to the next free one.

Deliberately not here: projects, tasks and annotations (`vision.labeling.client`), exposing
the server beyond this machine (run your own Label Studio and set LOOPLINE_LABEL_STUDIO_URL),
and anything that imports Label Studio: it is only ever an HTTP server to loopline.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

log = logging.getLogger(__name__)

CHECKOUT = Path(__file__).resolve().parents[2]
LOCAL_VENV = CHECKOUT / ".venv-labelstudio"
LOCAL_USER = "loopline@localhost"  # the account loopline creates on its local server
HOST = "127.0.0.1"
STOP_GRACE_S = 10.0  # seconds between SIGTERM and SIGKILL
POLL_S = 0.5
LOG_TAIL_LINES = 30
DATABASE = "label_studio.sqlite3"  # what Label Studio names its SQLite file in its data dir
POSTGRES_SCHEMES = ("postgresql", "postgres")  # also with a driver: postgresql+psycopg://
# Connection parameters a database URL may carry in its query, and the libpq variables that pass
# them to Label Studio (its settings have no place for them; psycopg reads these).
LIBPQ_ENV = {
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "application_name": "PGAPPNAME",
}


class LabelStudioError(RuntimeError):
    """The local Label Studio cannot start, or the server that answers is not the one we started."""


@dataclass(frozen=True)
class LabelStudioInfo:
    """How to reach a Label Studio: its URL and our API token (a legacy token: `Authorization: Token …`).

    `pid`, `port`, `files_root` and `started_at` are known for the local server only; `files_root`
    is the folder it serves to labelers as local files (its LOCAL_FILES_DOCUMENT_ROOT).
    """

    url: str
    token: str = field(repr=False)
    pid: int | None = None
    port: int | None = None
    files_root: Path | None = None
    started_at: str | None = None
    managed: bool = False  # True: the local server `loopline labelstudio` runs

    def public(self) -> dict[str, Any]:
        """Everything but the token, JSON-ready."""
        out = asdict(self)
        del out["token"]
        out["files_root"] = str(self.files_root) if self.files_root else None
        return out


@dataclass(frozen=True)
class PostgresDatabase:
    """The PostgreSQL database the local Label Studio keeps its projects in (LOOPLINE_LABEL_STUDIO_DATABASE_URL).

    Empty `user`, `password` or `host` leave them to libpq (the OS user, ~/.pgpass, the Unix socket).
    `params` are libpq parameters from the URL's query (`?sslmode=require`).
    """

    name: str
    user: str = ""
    password: str = field(default="", repr=False)
    host: str = ""
    port: int = 5432
    params: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_url(cls, url: str) -> PostgresDatabase:
        """Parse `postgresql://user:password@host:port/name` (`postgres://`, `postgresql+driver://` too)."""
        parts = urlsplit(url)
        if parts.scheme.split("+", 1)[0] not in POSTGRES_SCHEMES:
            raise LabelStudioError(
                f"LOOPLINE_LABEL_STUDIO_DATABASE_URL must be a postgresql:// URL, not {parts.scheme or 'no'} scheme "
                "(unset it to keep Label Studio on SQLite)"
            )
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        host = query.pop("host", None) or unquote(parts.hostname or "")
        unknown = sorted(set(query) - set(LIBPQ_ENV))
        if unknown:
            raise LabelStudioError(
                f"LOOPLINE_LABEL_STUDIO_DATABASE_URL has parameters Label Studio cannot be given: {', '.join(unknown)} "
                f"(supported: host, {', '.join(LIBPQ_ENV)})"
            )
        name = unquote(parts.path.lstrip("/"))
        try:
            port = parts.port or 5432
        except ValueError as exc:
            raise LabelStudioError(f"LOOPLINE_LABEL_STUDIO_DATABASE_URL has an invalid port: {exc}") from None
        if not name:
            raise LabelStudioError("LOOPLINE_LABEL_STUDIO_DATABASE_URL names no database (…:5432/NAME)")
        return cls(
            name=name,
            user=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            host=host,
            port=port,
            params=tuple(sorted(query.items())),
        )

    def describe(self) -> str:
        """The database as a URL without its password: what logs, server.json and `status` show."""
        user = f"{quote(self.user, safe='')}@" if self.user else ""
        socket_dir = self.host if self.host.startswith("/") else ""
        host = "" if socket_dir else self.host
        return f"postgresql://{user}{host}:{self.port}/{self.name}" + (f"?host={socket_dir}" if socket_dir else "")

    def child_env(self) -> dict[str, str]:
        """Label Studio's own settings for it: DJANGO_DB=default selects its POSTGRE_* database."""
        env = {
            "DJANGO_DB": "default",
            "POSTGRE_NAME": self.name,
            "POSTGRE_USER": self.user,
            "POSTGRE_PASSWORD": self.password,  # empty: libpq looks in ~/.pgpass (HOME is passed on)
            "POSTGRE_HOST": self.host,
            "POSTGRE_PORT": str(self.port),
        }
        env.update({LIBPQ_ENV[key]: value for key, value in self.params})
        return env

    def holds_label_studio(self) -> bool | None:
        """Whether Label Studio has migrated this database before; None where psycopg is not installed here.

        Also the early check that the database exists and answers: Label Studio itself would only
        leave a traceback in its log.
        """
        try:
            import psycopg
        except ImportError:
            return None
        kwargs = {"dbname": self.name, "port": self.port, "connect_timeout": 5, **dict(self.params)}
        kwargs.update({k: v for k, v in (("user", self.user), ("password", self.password), ("host", self.host)) if v})
        try:
            with psycopg.connect(**kwargs) as conn:
                row = conn.execute("SELECT to_regclass('django_migrations') IS NOT NULL").fetchone()
        except psycopg.Error as exc:
            reason = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
            raise LabelStudioError(
                f"Label Studio's PostgreSQL database {self.describe()} cannot be used ({reason}). "
                "It must exist before the first start (e.g. `createdb`); check LOOPLINE_LABEL_STUDIO_DATABASE_URL."
            ) from None
        return bool(row and row[0])


def default_executable() -> str:
    """The checkout's `.venv-labelstudio/bin/label-studio` if `make` made it, else `label-studio` on PATH."""
    local = LOCAL_VENV / "bin" / "label-studio"
    return str(local) if local.exists() else "label-studio"


def installed_version(executable: str) -> str | None:
    """The version of Label Studio behind `executable`, read from its venv's metadata.

    Never by running it: `label-studio --version` starts a server.
    """
    path = shutil.which(executable)
    if path is None:
        return None
    for info in sorted(Path(path).parent.parent.glob("lib/python*/site-packages/label_studio-*.dist-info")):
        return info.name.removeprefix("label_studio-").removesuffix(".dist-info")
    return None


def port_in_use(port: int, host: str = HOST) -> bool:
    """Whether something answers on, or holds, `host:port` (as Label Studio's own check, plus a bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        if s.connect_ex((host, port)) == 0:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: TIME_WAIT is no obstacle
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


# --- HTTP, with the standard library only (no proxy: the server is on this machine) --------
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get_json(url: str, token: str | None = None, timeout: float = 3.0) -> Any:
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Token {token}"
    with _OPENER.open(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
        return json.loads(resp.read().decode("utf-8"))


def healthy(url: str, timeout: float = 3.0) -> bool:
    """Whether `url` answers Label Studio's `GET /health` with UP."""
    try:
        return _get_json(f"{url}/health", timeout=timeout).get("status") == "UP"
    except (OSError, ValueError, AttributeError):
        return False


def whoami(url: str, token: str, timeout: float = 5.0) -> dict[str, Any] | None:
    """The account `token` belongs to on `url`, or None when the server refuses the token."""
    try:
        return _get_json(f"{url}/api/current-user/whoami", token, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return None
        raise


def project_count(url: str, token: str, timeout: float = 3.0) -> int | None:
    """How many projects the account sees; None when that cannot be asked cheaply."""
    try:
        body = _get_json(f"{url}/api/projects/?page_size=1", token, timeout)
    except (OSError, ValueError):
        return None
    if isinstance(body, dict) and isinstance(body.get("count"), int):
        return body["count"]
    return len(body) if isinstance(body, list) else None


# --- processes -------------------------------------------------------------------------
def _alive(pid: int) -> bool:
    """Whether process `pid` runs (a child of ours that exited is reaped; a zombie is not alive)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child: ask the kernel
    else:
        return done == 0
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _is_label_studio(pid: int) -> bool:
    """Whether `pid` still is a Label Studio process (and not another that reused the pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return _alive(pid)  # no /proc (not Linux): trust the pid
    return b"label-studio" in cmdline or b"label_studio" in cmdline


def _write_private(path: Path, obj: dict) -> None:
    """Write JSON readable by its owner only, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


class LocalLabelStudio:
    """One local Label Studio whose data lives in `home/labelstudio/`.

    `executable`: the `label-studio` program (default: `default_executable()`); `port`: where it
    listens on 127.0.0.1; `files_root`: the folder it may serve to labelers as local files
    (default: `home/frames`, where the device API stores frames — never the whole home, which
    holds credentials and databases a Label Studio user could otherwise add as a storage).
    Sign-up without an invitation link is off: accounts are made by whoever runs it.
    `database_url`: a PostgreSQL database for its projects (LOOPLINE_LABEL_STUDIO_DATABASE_URL;
    None: SQLite in `data/`); a malformed one is a LabelStudioError here.
    """

    def __init__(
        self,
        home: Path,
        *,
        executable: str | None = None,
        port: int = 8090,
        files_root: Path | None = None,
        database_url: str | None = None,
    ) -> None:
        self.home = Path(home).resolve()
        self.dir = self.home / "labelstudio"
        self.data_dir = self.dir / "data"
        self.log_file = self.dir / "labelstudio.log"
        self.state_file = self.dir / "server.json"
        self.credentials_file = self.dir / "credentials.json"
        self.executable = executable or default_executable()
        self.port = port
        self.files_root = Path(files_root or self.home / "frames").resolve()
        self.postgres = PostgresDatabase.from_url(database_url) if database_url else None

    @classmethod
    def from_settings(cls, settings: Any) -> LocalLabelStudio:
        """The local server as `Settings` describe it (home, port, executable, database)."""
        return cls(
            settings.home,
            executable=settings.label_studio_bin,
            port=settings.label_studio_port,
            database_url=settings.label_studio_database_url,
        )

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def database(self) -> str:
        """Where its projects live, as a URL without password: the PostgreSQL database or the SQLite file."""
        return self.postgres.describe() if self.postgres else f"sqlite:///{self.data_dir / DATABASE}"

    # --- state -----------------------------------------------------------------------------
    def _state(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.state_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError:
            log.warning("%s is not valid JSON; ignoring it", self.state_file)
            return None

    def credentials(self) -> dict[str, str] | None:
        """The account and token of the local server (None before its first start)."""
        try:
            return json.loads(self.credentials_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def _ensure_credentials(self, migrated: bool | None) -> dict[str, str]:
        """The account to start with: the one kept, else a new one, unless the database has an account of its own.

        `migrated`: whether the database already holds Label Studio's tables (None: unknown).
        """
        creds = self.credentials()
        if creds is not None:
            return creds
        if migrated:
            afresh = (
                "point LOOPLINE_LABEL_STUDIO_DATABASE_URL at an empty database to start afresh"
                if self.postgres
                else f"move {self.data_dir} away to start afresh (its projects and annotations stay in the moved folder)"
            )
            raise LabelStudioError(
                f"{self.database} holds a Label Studio database, but {self.credentials_file} (its account's "
                f"password and token) is gone, so loopline cannot use it. Restore that file, or {afresh}."
            )
        creds = {"username": LOCAL_USER, "password": secrets.token_urlsafe(18), "token": secrets.token_hex(20)}
        _write_private(self.credentials_file, creds)
        log.info("generated the local Label Studio's account %s (credentials in %s)", LOCAL_USER, self.credentials_file)
        return creds

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One `up` or `down` at a time per home (a second waits for the first)."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.dir / "lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def info(self) -> LabelStudioInfo | None:
        """The running local server (its state says so and its process is alive), or None. No HTTP."""
        state = self._state()
        creds = self.credentials()
        if state is None or creds is None or not _alive(int(state["pid"])):
            return None
        return self._info(state, creds)

    @staticmethod
    def _info(state: dict[str, Any], creds: dict[str, str]) -> LabelStudioInfo:
        return LabelStudioInfo(
            url=state["url"],
            token=creds["token"],
            pid=int(state["pid"]),
            port=int(state["port"]),
            files_root=Path(state["files_root"]) if state.get("files_root") else None,
            started_at=state.get("started_at"),
            managed=True,
        )

    # --- up --------------------------------------------------------------------------------
    def child_env(self, creds: dict[str, str]) -> dict[str, str]:
        """The whole environment of the server: nothing of the caller's but PATH, HOME and LANG."""
        return {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": os.environ.get("HOME", str(self.dir)),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "PYTHONUNBUFFERED": "1",
            "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir.resolve()),
            **(self.postgres.child_env() if self.postgres else {"DJANGO_DB": "sqlite"}),
            "LABEL_STUDIO_USERNAME": creds["username"],
            "LABEL_STUDIO_PASSWORD": creds["password"],
            "LABEL_STUDIO_USER_TOKEN": creds["token"],
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
            "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
            "LABEL_STUDIO_SENTRY_DSN": "",
            "LABEL_STUDIO_FRONTEND_SENTRY_DSN": "",
            # Webhooks to loopline on 127.0.0.1 must pass: this server is bound to this machine only.
            "SSRF_PROTECTION_ENABLED": "false",
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(self.files_root),
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        }

    def up(self, timeout: float = 300, *, progress: Callable[[str], None] | None = None) -> LabelStudioInfo:
        """Start the server if it is not running, wait until it answers with our token, and describe it.

        Idempotent: a running server is returned as it is. `progress` gets a line now and then
        while it starts (the first start migrates a database: one to two minutes).
        """
        say = progress or (lambda _line: None)
        with self._locked():
            state = self._state()
            creds = self.credentials()
            if state is not None:
                pid = int(state["pid"])
                if _alive(pid) and _is_label_studio(pid) and creds is not None:
                    if not healthy(state["url"]):  # an earlier `up` was interrupted while it started
                        say(f"Label Studio (pid {pid}) is still starting; waiting for it…")
                        self._await_ready(pid, state["url"], creds, timeout, say)
                    elif not self._answers_as_ours(state["url"], creds):
                        raise self._not_ours(pid, state["url"], creds)
                    log.info("Label Studio already runs at %s (pid %s)", state["url"], pid)
                    if state.get("database", self.database) != self.database:
                        log.warning(
                            "Label Studio runs on the database %s, not %s as asked: `loopline labelstudio down` "
                            "first to change that",
                            state.get("database"),
                            self.database,
                        )
                    if int(state["port"]) != self.port or state.get("files_root") != str(self.files_root):
                        log.warning(
                            "Label Studio runs on port %s serving %s, not port %s serving %s as asked: "
                            "`loopline labelstudio down` first to change that",
                            state["port"],
                            state.get("files_root"),
                            self.port,
                            self.files_root,
                        )
                    return self._info(state, creds)
                log.info("the last Label Studio (pid %s) is gone; starting a new one", pid)
                self.state_file.unlink(missing_ok=True)
            return self._start(timeout, say)

    def _answers_as_ours(self, url: str, creds: dict[str, str]) -> bool:
        if not healthy(url):
            return False
        try:
            me = whoami(url, creds["token"])
        except OSError:
            return False
        return bool(me) and me.get("email") == creds["username"]

    def _start(self, timeout: float, say: Callable[[str], None]) -> LabelStudioInfo:
        exe = shutil.which(self.executable)
        if exe is None:
            raise LabelStudioError(
                f"Label Studio is not installed here ({self.executable!r} not found). Run `make` in the loopline "
                "checkout (it installs .venv-labelstudio), or point LOOPLINE_LABEL_STUDIO_BIN at a `label-studio` "
                "executable, or use an existing server with LOOPLINE_LABEL_STUDIO_URL and LOOPLINE_LABEL_STUDIO_TOKEN."
            )
        if port_in_use(self.port):
            raise LabelStudioError(
                f"port {self.port} on {HOST} is already in use by another program, so Label Studio is not started "
                "(it would silently move to another port). Free that port, or choose another one with "
                "`loopline labelstudio up --port N` or LOOPLINE_LABEL_STUDIO_PORT."
            )
        migrated = self.postgres.holds_label_studio() if self.postgres else (self.data_dir / DATABASE).exists()
        creds = self._ensure_credentials(migrated)
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.files_root.mkdir(parents=True, exist_ok=True)  # Label Studio refuses a root that does not exist
        first = migrated is False
        if first:
            say(f"First start: Label Studio creates and migrates its database {self.database} (about 1-2 minutes)…")
        elif migrated is None:
            say(f"Label Studio migrates its database {self.database} if it is new (about 1-2 minutes then)…")
        cmd = [exe, "start", "--no-browser", "--internal-host", HOST, "--port", str(self.port)]
        with open(self.log_file, "ab") as logf:
            offset = logf.tell()
            logf.write(f"\n=== loopline: {' '.join(cmd)} at {_now()} ===\n".encode())
            logf.flush()
            proc = subprocess.Popen(
                cmd,
                cwd=self.dir,
                env=self.child_env(creds),
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: `down` stops it and anything it spawned
            )
        state = {
            "url": self.url,
            "port": self.port,
            "pid": proc.pid,
            "files_root": str(self.files_root),
            "started_at": _now(),
            "executable": exe,
            "database": self.database,
        }
        _write_private(self.state_file, state)
        log.info(
            "started Label Studio (pid %s) on %s with the database %s; log: %s",
            proc.pid,
            self.url,
            self.database,
            self.log_file,
        )
        self._await_ready(proc.pid, self.url, creds, timeout, say, offset, first)
        return self._info(state, creds)

    def _await_ready(
        self,
        pid: int,
        url: str,
        creds: dict[str, str],
        timeout: float,
        say: Callable[[str], None],
        offset: int = 0,
        first: bool = False,
    ) -> None:
        """Wait until `pid` answers /health at `url` and accepts our token; stop it and explain if not."""
        started = time.monotonic()
        next_note = started + 15
        while not healthy(url, timeout=2.0):
            if not _alive(pid):
                self.state_file.unlink(missing_ok=True)
                raise LabelStudioError(
                    f"Label Studio (pid {pid}) exited while starting. The end of {self.log_file}:\n"
                    + self._log_tail(offset)
                )
            now = time.monotonic()
            if now - started > timeout:
                self._stop(pid, STOP_GRACE_S)
                self.state_file.unlink(missing_ok=True)
                raise LabelStudioError(
                    f"Label Studio did not answer at {url}/health within {timeout:.0f}s and was stopped "
                    f"(a slow first start? give it more with --timeout). The end of {self.log_file}:\n"
                    + self._log_tail(offset)
                )
            if now >= next_note:
                say(f"still starting ({now - started:.0f}s)…")
                next_note = now + 15
            time.sleep(POLL_S)
        if not self._answers_as_ours(url, creds) or not _alive(pid):
            if _alive(pid):
                self._stop(pid, STOP_GRACE_S)
            self.state_file.unlink(missing_ok=True)
            raise self._not_ours(pid, url, creds)
        log.info(
            "Label Studio is up at %s after %.1fs (%s)",
            url,
            time.monotonic() - started,
            "first start" if first else "start",
        )

    def _not_ours(self, pid: int, url: str, creds: dict[str, str]) -> LabelStudioError:
        afresh = (
            "point LOOPLINE_LABEL_STUDIO_DATABASE_URL at an empty database"
            if self.postgres
            else f"move {self.data_dir} away"
        )
        return LabelStudioError(
            f"the server answering at {url} does not accept the token of {creds['username']} from "
            f"{self.credentials_file}: it is not the Label Studio loopline started (pid {pid}), or its database "
            f"{self.database} was made with other credentials ({afresh} to start afresh)."
        )

    def _log_tail(self, offset: int = 0) -> str:
        try:
            with open(self.log_file, "rb") as f:
                f.seek(offset)
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-LOG_TAIL_LINES:]) or "(empty log)"

    # --- down ------------------------------------------------------------------------------
    def down(self, grace: float = STOP_GRACE_S) -> int | None:
        """Stop the server (SIGTERM to its process group, SIGKILL after `grace` seconds); the pid stopped, or None."""
        with self._locked():
            state = self._state()
            if state is None:
                return None
            pid = int(state["pid"])
            stopped = None
            if _alive(pid) and _is_label_studio(pid):
                self._stop(pid, grace)
                stopped = pid
                log.info("stopped Label Studio (pid %s)", pid)
            else:
                log.info("Label Studio pid %s was no longer running", pid)
            self.state_file.unlink(missing_ok=True)
            return stopped

    @staticmethod
    def _stop(pid: int, grace: float) -> None:
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pid, sig)  # started with start_new_session: its group id is its pid
            except ProcessLookupError:
                return
            except PermissionError:
                os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not _alive(pid):
                    return
                time.sleep(0.1)
        if _alive(pid):
            raise LabelStudioError(f"Label Studio pid {pid} survived SIGKILL")

    # --- status ----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Whether it runs and answers, where, and (cheaply) how many projects it has. Never the token."""
        state = self._state()
        creds = self.credentials()
        out: dict[str, Any] = {
            "running": False,
            "managed": True,
            "url": None,
            "pid": None,
            "port": self.port,
            "started_at": None,
            "projects": None,
            "username": creds["username"] if creds else None,
            "credentials_file": str(self.credentials_file),
            "data_dir": str(self.data_dir),
            "database": self.database,
            "log_file": str(self.log_file),
            "files_root": str(self.files_root),
        }
        if state is None:
            return out
        pid = int(state["pid"])
        if not _alive(pid):
            out["note"] = f"pid {pid} of the last start is gone (`loopline labelstudio up` starts a new one)"
            return out
        out.update(
            url=state["url"],
            pid=pid,
            port=int(state["port"]),
            started_at=state.get("started_at"),
            files_root=state.get("files_root"),
            database=state.get("database", self.database),  # what it was started with
        )
        out["running"] = healthy(state["url"])
        if not out["running"]:
            out["note"] = "the process runs but does not answer /health yet (starting?)"
        elif creds:
            out["projects"] = project_count(state["url"], creds["token"])
        return out


def remote_status(url: str, token: str | None) -> dict[str, Any]:
    """`status` of an existing server loopline does not manage (LOOPLINE_LABEL_STUDIO_URL)."""
    url = url.rstrip("/")
    running = healthy(url)
    return {
        "running": running,
        "managed": False,
        "url": url,
        "pid": None,
        "port": urlsplit(url).port,
        "projects": project_count(url, token) if running and token else None,
    }


def connection(settings: Any) -> LabelStudioInfo | None:
    """The Label Studio to use: the configured existing server, else the local one if it runs, else None."""
    if settings.label_studio_url:
        if settings.label_studio_token is None:
            raise LabelStudioError(
                "LOOPLINE_LABEL_STUDIO_URL is set but LOOPLINE_LABEL_STUDIO_TOKEN is not: set it to the API token "
                "of that server's account (Label Studio: Account & Settings → Legacy Token)."
            )
        return LabelStudioInfo(
            url=settings.label_studio_url.rstrip("/"), token=settings.label_studio_token.get_secret_value()
        )
    return LocalLabelStudio.from_settings(settings).info()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
