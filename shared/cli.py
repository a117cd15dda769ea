"""The `loopline` command: sub-commands contributed by each installed package.

Verticals register click groups in the `loopline.commands` entry-point group; they are
imported only when used, so `loopline --help` stays fast and a vertical whose extra is
missing says which extra to install instead of failing with a traceback.
"""

from __future__ import annotations

import logging
import sys
from importlib.metadata import entry_points

import click

SHUTDOWN_GRACE_S = 15  # seconds open requests get to finish after SIGTERM


class PluginGroup(click.Group):
    """A group whose sub-commands come from entry points, loaded lazily."""

    def _plugins(self) -> dict:
        return {ep.name: ep for ep in entry_points(group="loopline.commands")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._plugins()))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if cmd is not None:
            return cmd
        ep = self._plugins().get(name)
        if ep is None:
            return None
        try:
            return ep.load()
        except ImportError as exc:
            return _missing_extra(name, exc)


# The extra (pyproject.toml's optional-dependencies) that installs what each command or API
# plugin needs, by its entry-point name. `monitor`/`monitoring` have no extra of their own:
# numpy and httpx come with `rag` (`monitor report` also draws with matplotlib, from `eval`).
EXTRAS = {
    "rag": "rag",
    "vision": "vision",
    "edge": "edge",
    "eval": "eval",
    "monitor": "rag",
    "monitoring": "rag",
    # Labeling talks to Label Studio with label-studio-sdk (the server has its own venv).
    "labelstudio": "label",
    "loop": "label",
    "demo": "label",
    "labeling": "vision",  # the webhook route and the periodic loop (MLflow for the classes)
    "worker": "queue",  # Celery, for jobs on a broker
}


def extra_for(name: str) -> str:
    """The extra to install for the command or API plugin `name` (`all` for one we do not know)."""
    return EXTRAS.get(name, "all")


def _missing_extra(name: str, exc: ImportError) -> click.Command:
    extra = extra_for(name)

    @click.command(
        name, help=f"(unavailable: install the '{extra}' extra)", context_settings={"ignore_unknown_options": True}
    )
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def unavailable(args: tuple[str, ...]) -> None:
        raise click.ClickException(
            f"'loopline {name}' needs the '{extra}' extra, which is not installed here "
            f"({exc.name or exc}). Install it with: pip install 'loopline[{extra}]'"
        )

    return unavailable


@click.group(cls=PluginGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="loopline")
def main(verbose: int) -> None:
    """loopline: keeps production AI fresh by closing its feedback loop.

    State lives under LOOPLINE_HOME (default ./.loopline); every setting is a LOOPLINE_*
    environment variable (see README).
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@main.command()
@click.option("--host", default=None, help="Interface to bind (LOOPLINE_HOST, default 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (LOOPLINE_PORT, default 8000).")
def serve(host: str | None, port: int | None) -> None:
    """Start the API (OpenAPI docs at /docs); CLI commands then hand their work to it."""
    try:
        import uvicorn

        from shared.server import create_app
    except ImportError as exc:
        raise click.ClickException(f"serving needs the 'rag' extra: pip install 'loopline[rag]' ({exc})") from exc
    from shared.config import Settings
    from shared.runtime import ServiceInfo, announce, withdraw

    settings = Settings()
    host = host or settings.host
    port = port or settings.port
    info = ServiceInfo.new(f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}")
    logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))
    app = create_app(settings, local_token=info.token)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame) -> None:  # noqa: ANN001
            app.state.ctx.stop()  # long ingests stop now instead of holding the shutdown
            super().handle_exit(sig, frame)

        async def shutdown(self, sockets=None) -> None:  # noqa: ANN001
            await super().shutdown(sockets)
            withdraw(settings.home, info)  # uvicorn re-raises the signal after this: no `finally` runs

    server = Server(
        uvicorn.Config(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=SHUTDOWN_GRACE_S)
    )
    announce(settings.ensure_home(), info)
    try:
        server.run()
    finally:
        withdraw(settings.home, info)


if __name__ == "__main__":  # pragma: no cover
    main()
