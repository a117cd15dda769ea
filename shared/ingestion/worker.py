"""A child process that parses one file at a time under a time limit, killed when over it.

Parsing untrusted files (a PDF's content streams, a DOCX's XML, a huge Markdown file) can
take unbounded time and memory. In a child, a file over the limit costs only that child,
which is killed and replaced; the parent (the API's event loop, health checks and queries)
never waits on it, not even for the GIL. Children are forked from a forkserver that imports
the parse module once, so a replacement starts in milliseconds and no fork copies the
parent's threads. What this module does not do: decide what a parse is (the vertical passes
a picklable function) or which limits apply to a file's content (the parse function's job).
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from shared.ingestion.pipeline import Cancelled, Rejected

log = logging.getLogger(__name__)
T = TypeVar("T")
_POLL_S = 0.2


def _serve(conn: Connection) -> None:
    """The child's loop: run each (function, args) sent, answer ("ok", value) or ("error", exc)."""
    while True:
        try:
            fn, args = conn.recv()
        except EOFError:  # the parent closed its end
            return
        try:
            reply = ("ok", fn(*args))
        except Exception as exc:  # sent back and raised in the parent
            reply = ("error", exc)
        try:
            conn.send(reply)
        except Exception as exc:  # an unpicklable value or exception
            conn.send(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))


class ParseWorker:
    """Runs `fn(*args)` in a child process, one call at a time, for at most `timeout_s`.

    A call over the limit, or whose child dies (the kernel's OOM killer), raises `Rejected`
    naming what happened; `stop()` (service shutdown) makes a running call raise `Cancelled`
    at once. The child is started on first use and kept between calls.
    """

    def __init__(
        self, timeout_s: float, *, preload: Sequence[str] = (), limit_name: str = "LOOPLINE_PARSE_TIMEOUT_S"
    ) -> None:
        self.timeout_s = timeout_s
        self.limit_name = limit_name
        self._context = multiprocessing.get_context("forkserver")
        if preload:
            self._context.set_forkserver_preload(list(preload))
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            if self._stopped.is_set():
                raise Cancelled("the parse worker is stopped (the service is shutting down)")
            conn = self._ensure_child()
            try:
                conn.send((fn, args))
                deadline = time.monotonic() + self.timeout_s
                while not conn.poll(_POLL_S):
                    if self._stopped.is_set():
                        self._kill()
                        raise Cancelled("parsing abandoned: the service is shutting down")
                    if not self._process.is_alive():  # type: ignore[union-attr]
                        raise EOFError
                    if time.monotonic() > deadline:
                        self._kill()
                        raise Rejected(
                            f"took longer than {self.timeout_s:g} s to load and chunk (raise {self.limit_name} to allow more)"
                        )
                status, value = conn.recv()
            except (EOFError, OSError):  # the child died: out of memory, or it could not even start
                code = self._process.exitcode if self._process is not None else None
                self._kill()
                log.error("the parse worker died (exit code %s); its error output is above", code)
                raise Rejected(
                    f"the parser process died (exit code {code}); the file may need more memory than is available"
                ) from None
        if status == "error":
            raise value
        return value

    def stop(self) -> None:
        """Abandon a running parse now and refuse new ones (a shutting-down service)."""
        self._stopped.set()

    def close(self) -> None:
        self.stop()
        with self._lock:
            self._kill()

    def _ensure_child(self) -> Connection:
        if self._process is not None and self._process.is_alive() and self._conn is not None:
            return self._conn
        self._kill()
        parent, child = self._context.Pipe()
        proc = self._context.Process(target=_serve, args=(child,), name="loopline-parse", daemon=True)
        proc.start()
        child.close()
        self._process, self._conn = proc, parent
        log.debug("parse worker started (pid %s)", proc.pid)
        return parent

    def _kill(self) -> None:
        proc, conn = self._process, self._conn
        self._process = self._conn = None
        if conn is not None:
            conn.close()
        if proc is not None:
            if proc.is_alive():
                proc.kill()
            proc.join(timeout=5)
