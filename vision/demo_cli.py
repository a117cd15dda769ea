"""`loopline demo`: the closed loop on one machine, ending with a before/after table.

A contract used by outside checks: `--shift SPEC` (the syntax of `vision dataset synth
--shift`) sets the shift the stream undergoes; `--json` prints one object with at least
`before.map50_shifted`, `after.map50_shifted`, `before.map50_clean`, `after.map50_clean`,
`frames.streamed`, `frames.sent`, `frames.labeled`, `promoted_version`,
`device_model_version`, `labelstudio.url` and `labelstudio.project_id`. Progress lines go to
stderr; stdout carries the result only.
"""

from __future__ import annotations

import json
import logging
import os

import click

from shared.config import Settings


def _shift(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from vision.datasets.synth import Shift

    try:
        Shift.parse(value)
    except (ValueError, TypeError) as exc:
        raise click.BadParameter(str(exc)) from None
    return value


@click.command("demo")
@click.option(
    "--shift",
    "shift_spec",
    default="brightness=70,contrast=0.6",
    show_default=True,
    callback=_shift,
    help="The shift the device's stream undergoes part-way, e.g. brightness=-60,blur=2 "
    "(knobs: brightness, contrast, blur, defect_look).",
)
@click.option(
    "--epochs",
    default=lambda: int(os.environ.get("LOOPLINE_DEMO_EPOCHS", "15")),
    show_default="15, or LOOPLINE_DEMO_EPOCHS",
    type=click.IntRange(1),
    help="Epochs of the production model's training from scratch.",
)
@click.option("--retrain-epochs", default=10, show_default=True, type=click.IntRange(1), help="Fine-tuning epochs.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
def demo(shift_spec: str, epochs: int, retrain_epochs: int, as_json: bool) -> None:
    """The closed loop: train, stream, drift alarm, Label Studio, retrain, gate, promote, update.

    Runs in LOOPLINE_HOME/demo-loop (wiped first) with a Label Studio of its own there, left
    running for you to look at the project (the last lines say how to log in and stop it). A
    simulated labeler stands in for people. About 5 minutes on 2 cores.
    """
    from vision.loop.demo import run_demo

    logging.getLogger("vision.loop").setLevel(logging.WARNING)
    logging.getLogger("shared.server").setLevel(logging.ERROR)  # the demo's central has no API keys, on purpose
    result = run_demo(
        Settings(),
        shift_spec=shift_spec,
        epochs=epochs,
        retrain_epochs=retrain_epochs,
        say=lambda line: click.echo(click.style("· ", fg="cyan") + line, err=True),
    )
    if as_json:
        click.echo(json.dumps(result.to_json(), default=str))
        return
    b, a = result.before, result.after
    rows = [
        ("mAP50, held-out shifted plates", b.get("map50_shifted"), a.get("map50_shifted")),
        ("mAP50, clean validation plates", b.get("map50_clean"), a.get("map50_clean")),
        ("mean top confidence, shifted", b.get("mean_confidence_shifted"), a.get("mean_confidence_shifted")),
        ("mean top confidence, clean", b.get("mean_confidence_clean"), a.get("mean_confidence_clean")),
    ]
    before_psi, after_psi = result.psi.get("before", {}), result.psi.get("after", {})
    rows.append(
        ("brightness PSI, shifted plates vs the model's reference", before_psi.get("shifted"), after_psi.get("shifted"))
    )
    rows.append(
        ("brightness PSI, clean plates (the noise floor of 60 plates)", before_psi.get("clean"), after_psi.get("clean"))
    )
    click.echo(click.style(f"\nclosed loop under the shift {result.shift}", bold=True))
    click.echo(
        f"{'':58} {'before (v' + str(b.get('version')) + ')':>14} {'after (v' + str(a.get('version')) + ')':>14}"
    )
    for label, x, y in rows:
        click.echo(f"{label:58} {_fmt(x):>14} {_fmt(y):>14}")
    f = result.frames
    click.echo(
        f"\nframes: {f.get('streamed')} streamed, {f.get('sent')} sent ({f.get('sent_per_1000')} per 1,000; "
        f"{f.get('sent_wrong')} of them the production model got wrong), {f.get('labeled')} labeled; by reason "
        f"{f.get('by_reason')}"
    )
    click.echo(f"drift alarm: {result.drift_alert['message'] if result.drift_alert else 'none raised'}")
    verdict = "promoted" if result.promoted_version else "not promoted"
    click.echo(f"candidate {verdict}: gate {', '.join(result.gate.get('reasons') or ['passed every check'])}")
    click.echo(f"device runs version {result.device_model_version}")
    click.echo("time per stage: " + ", ".join(f"{k} {v:.0f}s" for k, v in result.seconds.items()))
    ls = result.labelstudio
    click.echo(f"Label Studio: {ls.get('project_url')} (log in as {ls.get('login')}; stop it: {ls.get('stop')})")
    if result.report:
        click.echo(f"report: {result.report}")


def _fmt(x: object) -> str:
    return f"{x:.3f}" if isinstance(x, float) else str(x)
