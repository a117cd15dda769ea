"""`loopline rag …`: ingest folders and ask questions from the shell.

When a `loopline serve` owns the embedded stores, these commands hand their work to it
over HTTP (with the local admin token of service.json) instead of failing on the lock.
Output contract: `--json` prints one JSON object (per question with `--batch`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from shared.config import Settings


def _split_groups(raw: str | None) -> list[str]:
    groups = sorted({g.strip() for g in (raw or "").split(",") if g.strip()})
    return groups or ["public"]


class _Remote:
    """The same calls as RagService, sent to a running service."""

    def __init__(self, url: str, token: str) -> None:
        import httpx

        self.client = httpx.Client(base_url=url, headers={"X-API-Key": token}, timeout=httpx.Timeout(10.0, read=3600.0))

    def _post(self, path: str, body: dict) -> dict:
        import httpx

        try:
            resp = self.client.post(path, json=body)
        except httpx.HTTPError as exc:
            raise click.ClickException(f"the running service did not answer: {exc}") from exc
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:  # a proxy's or a crash's plain-text page
                detail = resp.text[:500]
            raise click.ClickException(f"service answered {resp.status_code}: {detail}")
        return resp.json()

    def ingest(self, path: Path, groups: list[str]) -> dict:
        return self._post("/v1/admin/ingest", {"path": str(path.resolve()), "groups": groups})

    def ask(self, question: str, user: str | None, top_k: int | None) -> dict:
        return self._post("/v1/query", {"question": question, "as_user": user, "top_k": top_k})


@contextmanager
def open_backend(settings: Settings) -> Iterator[tuple[str, object]]:
    """('local', RagService) or ('remote', _Remote) when a service owns the stores."""
    from rag.service import RagService
    from rag.vectorstore import StoreLocked
    from shared.runtime import running_service

    try:
        service = RagService(settings)
    except StoreLocked as exc:
        info = running_service(settings.home)
        if info is None:
            raise click.ClickException(f"{exc}; no running service announced in {settings.home}/service.json") from exc
        click.echo(f"handing the work to the running service at {info.url}", err=True)
        yield "remote", _Remote(info.url, info.token)
        return
    try:
        yield "local", service
    finally:
        service.close()


@click.group()
def rag() -> None:
    """Document Q&A: ingest folders, ask questions with citations."""


@rag.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--groups", default="public", show_default=True, help="Comma-separated groups that may read these documents."
)
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
def ingest(path: Path, groups: str, as_json: bool) -> None:
    """Ingest a file or (re-)sync a folder tree into the index.

    Unchanged documents are skipped, changed ones replaced, files removed from the folder
    leave the index; broken files are reported as dead letters and the rest goes on.
    """
    from tqdm import tqdm

    settings = Settings()
    group_list = _split_groups(groups)
    with open_backend(settings) as (kind, backend):
        if kind == "remote":
            summary = backend.ingest(path, group_list)  # type: ignore[attr-defined]
        else:
            bar = tqdm(total=0, unit="doc", desc="ingest", disable=not sys.stderr.isatty(), file=sys.stderr)

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.n = done
                bar.refresh()

            try:
                run = backend.ingest(path, group_list, progress=progress)  # type: ignore[attr-defined]
            finally:
                bar.close()
            summary = {
                "run_id": run.run_id,
                "source": run.source,
                "status": run.status,
                **run.counts(),
                "seconds": round(run.seconds, 3),
                "dead_letters": run.dead_letters,
            }
    if as_json:
        click.echo(json.dumps(summary))
        return
    click.echo(
        f"run #{summary['run_id']} {summary['status']}: {summary['added']} added, {summary['updated']} updated, "
        f"{summary['unchanged']} unchanged, {summary['deleted']} deleted, {summary['failed']} failed "
        f"({summary['chunks']} chunks, {summary['seconds']:.1f}s)"
    )
    for dl in summary["dead_letters"]:
        click.echo(f"  dead letter: {dl['path']}: {dl['reason']}")


@rag.command()
@click.argument("question", required=False)
@click.option(
    "--user", default=None, help="Answer as this user (from the API keys file) would see it; default: local admin."
)
@click.option("--top-k", type=click.IntRange(1, 50), default=None, help="Chunks to retrieve (default LOOPLINE_TOP_K).")
@click.option(
    "--batch",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='JSONL file of {"id", "question"} lines.',
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object per question).")
def ask(question: str | None, user: str | None, top_k: int | None, batch: Path | None, as_json: bool) -> None:
    """Answer QUESTION with citations from the documents the user may read."""
    from shared.auth import KeyRegistry, local_admin

    if bool(question) == bool(batch):
        raise click.UsageError("give either a QUESTION or --batch FILE.jsonl")
    settings = Settings()
    items: list[dict] = [{"id": None, "question": question}] if question else _read_batch(batch)  # type: ignore[arg-type]
    with open_backend(settings) as (kind, backend):
        who = local_admin()
        if kind == "local":  # a running service resolves `--user` itself
            keys_file = settings.resolved_api_keys_file
            try:
                who = KeyRegistry.from_file(keys_file).principal_for(user, source=keys_file)
            except ValueError as exc:
                raise click.ClickException(str(exc)) from exc
        for item in items:
            if kind == "remote":
                out = backend.ask(item["question"], user, top_k)  # type: ignore[attr-defined]
            else:
                out = backend.ask(item["question"], who, top_k=top_k).model_dump()  # type: ignore[attr-defined]
            out["id"] = item["id"]
            _print_answer(out, as_json)


def _read_batch(path: Path) -> list[dict]:
    from pydantic import BaseModel, ConfigDict, Field

    from shared.ingestion import SchemaError, validate_record

    class BatchLine(BaseModel):
        model_config = ConfigDict(extra="allow")
        id: str | int
        question: str = Field(min_length=1)

    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = validate_record(BatchLine, json.loads(line))
        except json.JSONDecodeError as exc:
            raise click.ClickException(f"{path}:{n}: not valid JSON ({exc.msg})") from exc
        except SchemaError as exc:
            raise click.ClickException(f"{path}:{n}: {exc}") from exc
        items.append({"id": rec.id, "question": rec.question})
    return items


def _print_answer(out: dict, as_json: bool) -> None:
    if as_json:
        keep = ("id", "question", "answer", "mode", "abstained", "citations", "timings")
        click.echo(json.dumps({k: out.get(k) for k in keep}))
        return
    click.echo(click.style(out["question"], bold=True))
    click.echo(out["answer"])
    for c in out["citations"]:
        section = f" — {c['section']}" if c.get("section") and c["section"] != c["title"] else ""
        click.echo(f"  [{c['n']}] {c['source']}: {c['title']}{section} (score {c['score']:.2f})")
    click.echo(f"  ({out['mode']} answer{', abstained' if out['abstained'] else ''})")
