"""`loopline labelstudio up|down|status`: the local Label Studio where labelers annotate frames.

Stdout carries the result only (`--json`: one object with at least url, running, pid and
port); progress of a start goes to stderr. No output ever carries the API token or the
password: they stay in LOOPLINE_HOME/labelstudio/credentials.json, where
`vision.labeling.local_server.connection` reads them; `database` shows a PostgreSQL database
(LOOPLINE_LABEL_STUDIO_DATABASE_URL) without its password. The server itself is
`vision.labeling.local_server.LocalLabelStudio`; this module only parses and prints.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from shared.config import Settings
from vision.labeling.local_server import LabelStudioError, LocalLabelStudio, remote_status

json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object (never the token).")


def _local(settings: Settings, port: int | None = None) -> LocalLabelStudio:
    try:
        return LocalLabelStudio(
            settings.home,
            executable=settings.label_studio_bin,
            port=port or settings.label_studio_port,
            files_root=settings.home / "frames",
            database_url=settings.label_studio_database_url,
        )
    except LabelStudioError as exc:  # a malformed LOOPLINE_LABEL_STUDIO_DATABASE_URL
        raise click.ClickException(str(exc)) from exc


def _refuse_remote(settings: Settings, what: str) -> None:
    if settings.label_studio_url:
        raise click.ClickException(
            f"LOOPLINE_LABEL_STUDIO_URL is set ({settings.label_studio_url}): loopline uses that server and does not "
            f"{what} it. `loopline labelstudio {what}` manages the local server only: unset LOOPLINE_LABEL_STUDIO_URL "
            "to use one."
        )


def _print(obj: dict[str, Any], as_json: bool, text: str) -> None:
    click.echo(json.dumps(obj, default=str) if as_json else text)


def _describe(st: dict[str, Any]) -> str:
    if not st["running"]:
        note = f" ({st['note']})" if st.get("note") else ""
        return f"Label Studio is not running{note}. Start it with: loopline labelstudio up"
    where = f"pid {st['pid']}, " if st.get("pid") else ""
    projects = f"{st['projects']} project(s)" if st.get("projects") is not None else "projects unknown"
    lines = [f"Label Studio runs at {st['url']} ({where}{projects})."]
    if st.get("database"):
        lines.append(f"Database: {st['database']}.")
    if st.get("managed"):
        lines.append(f"Log in as {st['username']}; the password is in {st['credentials_file']}.")
        lines.append(f"Log: {st['log_file']}. Stop it with: loopline labelstudio down")
    return "\n".join(lines)


@click.group("labelstudio")
def labelstudio() -> None:
    """The local Label Studio, where labelers annotate the frames devices kept.

    `up` starts it on 127.0.0.1 (data, account and log under LOOPLINE_HOME/labelstudio), `status`
    says whether it answers, `down` stops it. With LOOPLINE_LABEL_STUDIO_URL set, loopline uses
    that existing server instead (and `status` reports on it).
    """


@labelstudio.command()
@click.option("--port", type=int, default=None, help="Port on 127.0.0.1 (LOOPLINE_LABEL_STUDIO_PORT, default 8090).")
@click.option(
    "--timeout",
    type=float,
    default=300.0,
    show_default=True,
    help="Seconds to wait until it answers (the first start migrates a database: 1-2 minutes).",
)
@click.option(
    "--progress/--no-progress", default=None, help="Show progress on stderr (default: when stderr is a terminal)."
)
@json_option
def up(port: int | None, timeout: float, progress: bool | None, as_json: bool) -> None:
    """Start the local Label Studio unless it runs, and wait until it answers.

    Idempotent: a running server is left as it is. A busy port is an error (Label Studio would
    otherwise move to another port on its own). The first start creates the account
    `loopline@localhost` with a generated password and API token, kept in
    LOOPLINE_HOME/labelstudio/credentials.json (readable by you only); later starts reuse them.
    Its projects live in SQLite under LOOPLINE_HOME/labelstudio/data, or in the PostgreSQL database
    LOOPLINE_LABEL_STUDIO_DATABASE_URL names (which must exist; the first start migrates it).
    """
    settings = Settings()
    _refuse_remote(settings, "start")
    server = _local(settings, port)
    show = sys.stderr.isatty() if progress is None else progress
    first = server.credentials() is None

    def say(line: str) -> None:
        # The first start's warning is always shown: a minute or two of silence looks like a hang.
        if show or line.startswith("First start"):
            click.echo(line, err=True)

    was = server.info()
    try:
        info = server.up(timeout=timeout, progress=say)
    except LabelStudioError as exc:
        raise click.ClickException(str(exc)) from exc
    st = server.status()
    st["started"] = was is None or was.pid != info.pid
    st["first_start"] = first
    _print(st, as_json, _describe(st))


@labelstudio.command()
@json_option
def down(as_json: bool) -> None:
    """Stop the local Label Studio (its data stays; `up` starts it again on the same data)."""
    settings = Settings()
    _refuse_remote(settings, "stop")
    server = _local(settings)
    try:
        pid = server.down()
    except LabelStudioError as exc:
        raise click.ClickException(str(exc)) from exc
    st = server.status()
    st["stopped_pid"] = pid
    text = f"Stopped Label Studio (pid {pid})." if pid else "Label Studio was not running."
    _print(st, as_json, text)


@labelstudio.command()
@json_option
def status(as_json: bool) -> None:
    """Whether Label Studio answers, where, and how many projects it has (exit code 0 either way)."""
    settings = Settings()
    if settings.label_studio_url:
        token = settings.label_studio_token.get_secret_value() if settings.label_studio_token else None
        st = remote_status(settings.label_studio_url, token)
    else:
        st = _local(settings).status()
    _print(st, as_json, _describe(st))
