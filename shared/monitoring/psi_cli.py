"""`loopline monitor psi`: PSI of two files of values, for ad-hoc checks (a CLI contract).

Each file holds one value per line (blank lines and lines starting with '#' are skipped).
Numbers are compared over the reference's decile bins; if any line is not a number, both
files are read as categories (or say so with --categorical / --numeric). `--json` prints
`psi` (float), `status` ("ok", "warn" or "alert") and the bins with their counts. The monitor
CLI group registers this command; it reads nothing but the two files.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from shared.monitoring.psi import (
    DEFAULT_ALERT,
    DEFAULT_BINS,
    DEFAULT_SMOOTHING,
    DEFAULT_WARN,
    PsiResult,
    compare_categorical,
    compare_numeric,
    psi_status,
)


def read_values(path: Path) -> list[str]:
    """The file's values, one per line, stripped; blanks and '#' comments skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise click.ClickException(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); give one value per line"
        ) from exc
    return [s for line in text.splitlines() if (s := line.strip()) and not s.startswith("#")]


def _numbers_or_fail(path: Path, values: list[str]) -> list[float]:
    out = []
    for v in values:
        try:
            out.append(float(v))
        except ValueError:
            raise click.ClickException(
                f"{path}: {v!r} is not a number; drop --numeric to compare the files as categories"
            ) from None
    return out


@click.command("psi")
@click.option(
    "--reference",
    "reference_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File of reference values, one per line.",
)
@click.option(
    "--current",
    "current_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File of current values, one per line.",
)
@click.option(
    "--categorical/--numeric",
    "categorical",
    default=None,
    help="Compare as categories or as numbers (default: numbers if every line is one).",
)
@click.option(
    "--bins",
    default=DEFAULT_BINS,
    show_default=True,
    type=click.IntRange(2, 1000),
    help="Quantile bins of numeric values (10: deciles).",
)
@click.option(
    "--smoothing",
    default=DEFAULT_SMOOTHING,
    show_default=True,
    type=click.FloatRange(0, None),
    help="Pseudocount added to every bin before shares are taken.",
)
@click.option(
    "--warn",
    default=DEFAULT_WARN,
    show_default=True,
    type=click.FloatRange(0, None),
    help="PSI from which status is 'warn'.",
)
@click.option(
    "--alert",
    default=DEFAULT_ALERT,
    show_default=True,
    type=click.FloatRange(0, None),
    help="PSI from which status is 'alert'.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: psi, status, bins.")
def psi(
    reference_file: Path,
    current_file: Path,
    categorical: bool | None,
    bins: int,
    smoothing: float,
    warn: float,
    alert: float,
    as_json: bool,
) -> None:
    """PSI of the values in --current against those in --reference."""
    if alert < warn:
        raise click.BadParameter(f"--alert ({alert}) must not be below --warn ({warn})", param_hint="--alert")
    ref_raw, cur_raw = read_values(reference_file), read_values(current_file)
    for path, vals in ((reference_file, ref_raw), (current_file, cur_raw)):
        if not vals:
            raise click.ClickException(f"{path}: no values (expected one number or category per line)")
    if categorical is None:
        categorical = not all(_is_number(v) for v in (*ref_raw, *cur_raw))
    if categorical:
        result = compare_categorical(ref_raw, cur_raw, smoothing=smoothing)
    else:
        ref, cur = _numbers_or_fail(reference_file, ref_raw), _numbers_or_fail(current_file, cur_raw)
        result = compare_numeric(ref, cur, bins=bins, smoothing=smoothing)
    assert result.psi is not None  # both sides have values
    status = psi_status(result.psi, warn, alert)
    if as_json:
        payload = {"psi": round(result.psi, 6), "status": status, "warn": warn, "alert": alert, "smoothing": smoothing}
        click.echo(json.dumps(payload | {k: v for k, v in result.to_json().items() if k != "psi"}, indent=2))
        return
    click.echo(_table(result))
    click.echo(
        f"PSI {result.psi:.4f}: {status} (warn from {warn}, alert from {alert}; "
        f"{result.kind}, {_n(result.reference_n)} reference and {_n(result.current_n)} current values)"
    )


def _is_number(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _n(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:,.1f}"


def _table(result: PsiResult) -> str:
    width = max(12, *(len(b.label) for b in result.bins))
    lines = [f"{'bin':<{width}}  {'reference':>10}  {'current':>10}  {'ref %':>6}  {'cur %':>6}  {'psi':>7}"]
    for b in result.bins:
        lines.append(
            f"{b.label:<{width}}  {_n(b.reference):>10}  {_n(b.current):>10}  {b.reference_share * 100:>6.1f}  "
            f"{b.current_share * 100:>6.1f}  {b.contribution:>7.4f}"
        )
    return "\n".join(lines)


psi_command = psi  # the same command, for code that imports it under a longer name
