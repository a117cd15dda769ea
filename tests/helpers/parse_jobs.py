"""Functions the parse-worker tests send to the child process (importable there by name)."""

from __future__ import annotations

import os
import signal
import time

from shared.ingestion import Rejected


def add(a: int, b: int) -> int:
    return a + b


def pid() -> int:
    return os.getpid()


def sleep(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"


def reject(reason: str) -> None:
    raise Rejected(reason)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
