"""`loopline rag consume-events`: index document events from NATS JetStream, once or following.

Without `--follow` it takes what is pending and exits with the counts (`--json`: one JSON
object, like `rag ingest --json`); with it, it runs until SIGINT or SIGTERM, which finish the
batch in hand. It works on this machine's stores: while `loopline serve` owns them, the service
consumes the events itself (LOOPLINE_NATS_URL).
"""

from __future__ import annotations

import json

import click

from shared.config import Settings


@click.command("consume-events")
@click.option("--url", default=None, help="NATS server (default LOOPLINE_NATS_URL), e.g. nats://127.0.0.1:4222.")
@click.option("--durable", default=None, help="Durable consumer name (default PREFIX-rag-documents).")
@click.option("--follow", is_flag=True, help="Keep consuming until stopped (SIGINT/SIGTERM).")
@click.option(
    "--max-deliver",
    type=click.IntRange(1),
    default=None,
    help="Deliveries of a failing event before it is dead-lettered (default LOOPLINE_NATS_MAX_DELIVER).",
)
@click.option(
    "--groups", default="public", show_default=True, help="Comma-separated readers of events that name no groups."
)
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def consume_events(
    url: str | None, durable: str | None, follow: bool, max_deliver: int | None, groups: str, as_json: bool
) -> None:
    """Index document events from PREFIX.documents.SOURCE (upserts and deletes, source events:SOURCE).

    Events that do not fit the schema, that the ingest refuses, or that fail on every delivery go
    to PREFIX.dlq.SUBJECT and are recorded as dead letters.
    """
    from rag.events import document_consumer, report
    from rag.jobs import groups_of
    from rag.service import RagService
    from rag.vectorstore import StoreLocked
    from shared.ingestion.jetstream import StreamUnavailable, from_settings, run_until_signalled
    from shared.objectstore import open_object_store

    settings = Settings()
    try:
        from_settings(settings, url)  # no server configured: said before the index is opened
    except StreamUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    group_list = groups_of(groups)
    try:
        service = RagService(settings, objects=open_object_store(settings))
    except StoreLocked as exc:
        raise click.ClickException(
            f"{exc}. A running `loopline serve` owns the index: set LOOPLINE_NATS_URL for it and it consumes the "
            "events itself"
        ) from exc
    with service:
        try:
            consumer = document_consumer(
                service, settings, url=url, durable=durable, max_deliver=max_deliver, groups=group_list
            )
            run_until_signalled(consumer, follow=follow)
        except (StreamUnavailable, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
    out = report(consumer)
    if as_json:
        click.echo(json.dumps(out))
        return
    click.echo(
        f"{out['received']} events in {out['seconds']:.1f}s: {out['added']} added, {out['updated']} updated, "
        f"{out['unchanged']} unchanged, {out['deleted']} deleted, {out['dead_lettered']} dead-lettered "
        f"({out['retried']} retried, {out['chunks']} chunks)"
    )
    for dl in out["dead_letters"]:
        click.echo(f"  dead letter {dl['ref']} ({dl['subject']}): {dl['reason']}")
