"""The `loopline` command of the loopline-edge distribution (edge/pyproject.toml): `edge` only.

A device has no `shared/`, so the plugin-loading `loopline` of the main distribution is not
there; this group holds the same `edge` command, so `loopline edge run …` and
`loopline -v edge agent …` read the same on a device as on a full install.
"""

from __future__ import annotations

import logging
import sys

import click

from edge.cli import edge


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="loopline-edge", prog_name="loopline-edge")
def main(verbose: int) -> None:
    """loopline on a device: the edge runtime only (the loopline-edge distribution).

    The central service's commands (rag, vision, monitor, …) come with the loopline distribution.
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


main.add_command(edge)


if __name__ == "__main__":  # pragma: no cover
    main()
