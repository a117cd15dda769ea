"""`loopline loop …`: run the labeling and retraining loop by hand, and see what it did.

`run-once` is a contract used by outside checks: one cycle (push, pull, maybe retrain,
evaluate, promote) for every fleet, printing what it did; `--json` prints
`{"fleets": [{fleet, project_id, pushed, pulled, labeled, skipped, dataset, trigger, waiting,
cycle, promoted_version, rejected, errors, seconds}]}`. Progress goes to stderr.
"""

from __future__ import annotations

import json
import logging
import sys

import click

from shared.config import Settings

log = logging.getLogger(__name__)


@click.group("loop")
def loop() -> None:
    """The closed loop: frames to Label Studio, labels back, retraining, the gate, promotion."""


@loop.command("run-once")
@click.option(
    "--fleet", "fleets", multiple=True, help="Only this fleet (repeatable); default: every fleet with frames."
)
@click.option("--json", "as_json", is_flag=True, help="Print the cycle's report as one JSON object.")
def run_once(fleets: tuple[str, ...], as_json: bool) -> None:
    """One cycle: push new frames, pull annotations, and retrain, judge and promote when triggered.

    Works without Label Studio too (then only an unfinished retraining resumes). A Label Studio
    that is down delays push and pull; nothing is lost.
    """
    from shared.context import AppContext
    from vision.labeling.client import labeling_from_settings
    from vision.loop.runner import LoopRunner
    from vision.registry import ModelRegistry

    settings = Settings()
    try:
        labeling = labeling_from_settings(settings)
    except ImportError as exc:
        raise click.ClickException(
            f"the loop talks to Label Studio with label-studio-sdk: pip install 'loopline[label]' ({exc})"
        ) from exc
    except RuntimeError as exc:  # LabelStudioError: a URL without a token, unreadable credentials
        raise click.ClickException(str(exc)) from exc
    if labeling is None:
        click.echo(
            "no Label Studio: start one with `loopline labelstudio up`, or set LOOPLINE_LABEL_STUDIO_URL and "
            "LOOPLINE_LABEL_STUDIO_TOKEN; only unfinished retrainings run",
            err=True,
        )

    def progress(fleet: str, what: str) -> None:
        click.echo(f"[{fleet}] {what} …", err=True)

    ctx = AppContext.build(settings)
    try:
        runner = LoopRunner(ctx, labeling, ModelRegistry.from_settings(settings), on_stage=progress)
        reports = runner.run_once(list(fleets) or None)
    finally:
        ctx.close()
    if as_json:
        click.echo(json.dumps({"fleets": [r.to_json() for r in reports]}, default=str))
    else:
        if not reports:
            click.echo("no fleet has uploaded frames yet")
        for r in reports:
            click.echo(_describe(r))
    if any(r.errors for r in reports):
        sys.exit(1)


def _describe(r) -> str:  # noqa: ANN001
    lines = [
        f"fleet {r.fleet}: {r.pushed} frames pushed, {r.pulled} annotations pulled; {r.labeled} labeled, {r.skipped} skipped"
    ]
    if r.dataset:
        lines.append(f"  labeled dataset {r.dataset}")
    if r.cycle:
        c = r.cycle
        lines.append(
            f"  cycle {c['id']} ({c['trigger']}): {c['status']} at {c['stage']}; candidate {c['candidate_version']}"
        )
    if r.promoted_version:
        lines.append(f"  promoted version {r.promoted_version}: devices of {r.fleet} update at their next poll")
    for why in r.rejected:
        lines.append(f"  rejected: {why}")
    if r.waiting:
        lines.append(f"  waiting: {r.waiting}")
    for e in r.errors:
        lines.append(f"  error: {e}")
    return "\n".join(lines)
