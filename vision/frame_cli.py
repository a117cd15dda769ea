"""`loopline vision consume-frames`: store frame announcements from NATS JetStream, once or following.

Without `--follow` it takes what is pending and exits with the counts (`--json`: one JSON
object); with it, it runs until SIGINT or SIGTERM, which finish the batch in hand. Frames land
in the same store as `POST /v1/devices/frames` (LOOPLINE_OBJECT_STORE_URL or the home folder).
"""

from __future__ import annotations

import json

import click

from shared.config import Settings


@click.command("consume-frames")
@click.option("--url", default=None, help="NATS server (default LOOPLINE_NATS_URL), e.g. nats://127.0.0.1:4222.")
@click.option("--durable", default=None, help="Durable consumer name (default PREFIX-vision-frames).")
@click.option("--follow", is_flag=True, help="Keep consuming until stopped (SIGINT/SIGTERM).")
@click.option(
    "--max-deliver",
    type=click.IntRange(1),
    default=None,
    help="Deliveries of a failing announcement before it is dead-lettered (default LOOPLINE_NATS_MAX_DELIVER).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def consume_frames(url: str | None, durable: str | None, follow: bool, max_deliver: int | None, as_json: bool) -> None:
    """Store frame announcements from PREFIX.frames.DEVICE (registered devices only).

    Announcements that do not fit the schema or that the frame checks refuse (type, size,
    pixels, decode, another image under the frame id) go to PREFIX.dlq.SUBJECT and are recorded
    as dead letters.
    """
    from shared.context import AppContext
    from shared.ingestion.jetstream import StreamUnavailable, from_settings, run_until_signalled
    from vision.api import plugin
    from vision.frame_events import INCOMING, frame_consumer, report

    settings = Settings()
    try:
        from_settings(settings, url)  # no server configured: said before the stores are opened
    except StreamUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    ctx = AppContext.build(settings, metrics=False)
    try:
        plugin(ctx)  # the same frame store, decoder limits and drift feed as the API
        try:
            consumer = frame_consumer(
                ctx.services["vision"],
                settings,
                url=url,
                durable=durable,
                max_deliver=max_deliver,
                incoming=ctx.objects.scoped(INCOMING),
                dead_letters=ctx.metadata,
            )
            run_until_signalled(consumer, follow=follow)
        except (StreamUnavailable, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
    finally:
        ctx.close()
    out = report(consumer)
    if as_json:
        click.echo(json.dumps(out))
        return
    click.echo(
        f"{out['received']} announcements in {out['seconds']:.1f}s: {out['stored']} stored, "
        f"{out['duplicates']} duplicates, {out['dead_lettered']} dead-lettered ({out['retried']} retried)"
    )
    for dl in out["dead_letters"]:
        click.echo(f"  dead letter {dl['ref']} ({dl['subject']}): {dl['reason']}")
