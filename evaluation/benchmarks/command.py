"""The command line of a benchmark run, as a user would type it again (it goes into every report).

Rebuilt from what click parsed, so it is right however the command was started (its own
module, the `evaluation.benchmarks` group, or click's test runner): the arguments and the
options given on the command line, in the order the command declares them; defaults are left
out, as the user left them out.
"""

from __future__ import annotations

import click
from click.core import ParameterSource


def given_args(ctx: click.Context) -> list[str]:
    """The arguments and options of `ctx` that came from the command line, as argv words."""
    words: list[str] = []
    for param in ctx.command.params:
        if param.name is None or ctx.get_parameter_source(param.name) is not ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[param.name]
        if isinstance(param, click.Argument):
            words.append(str(value))
            continue
        assert isinstance(param, click.Option)
        name = max(param.opts, key=len)  # --verbose rather than -v
        if param.count:
            words += [min(param.opts, key=len)] * int(value)
        elif param.is_flag:
            if value:
                words.append(name)
        else:
            words += [name, str(value)]
    return words
