"""Run `loopline …` with its stderr on a pseudo-terminal, as a user at a terminal sees it."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import threading


def run_in_terminal(*args: str, env: dict[str, str] | None = None) -> tuple[str, str]:
    """`loopline ARGS` in a fresh process whose stderr is a 120x24 pseudo-terminal.

    Returns stdout and what the terminal showed (line ends as written, not as the tty sends them).
    """
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a 0x0 tty hides tqdm bars
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
        env={**os.environ, **(env or {})},
    )
    os.close(slave)
    shown = bytearray()

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the process closed its end of the terminal
                return
            if not data:
                return
            shown.extend(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
        reader.join(timeout=10)
        os.close(master)
    text = shown.decode(errors="replace").replace("\r\n", "\n")
    assert proc.returncode == 0, text
    return out.decode(), text
