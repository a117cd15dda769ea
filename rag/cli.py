"""`loopline rag …`: ingest folders and ask questions from the shell.

When a `loopline serve` owns the embedded stores, these commands hand their work to it
over HTTP (with the local admin token of service.json) instead of failing on the lock.
Output contract: `--json` prints one JSON object (per question with `--batch`). A local
ingest shows a progress bar on stderr when stderr is a terminal and `--json` is not given
(`--progress/--no-progress` decide otherwise); stdout carries only the run summary.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from rag.event_cli import consume_events
from rag.table_cli import ingest_table
from shared.config import Settings

if TYPE_CHECKING:
    from rag.ray_ingest import RayOptions
    from rag.service import RagService
    from shared.ingestion import RunSummary
    from shared.ingestion.pipeline import ProgressCallback

LOCAL_RAY = "local"  # `--ray` given without an address


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
        return self._post("/v1/admin/ingest?wait=true", {"path": str(path.resolve()), "groups": groups})

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
    """Document Q&A: ingest folders and tables, ask questions with citations."""


rag.add_command(ingest_table)
rag.add_command(consume_events)


class _IngestBar:
    """A progress callback drawing files done/total, chunks so far and chunks/s on stderr."""

    FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} files [{elapsed}<{remaining}{postfix}]"

    def __init__(self, label: str) -> None:
        from tqdm import tqdm

        # Until the first report (model loaded, files hashed) there is nothing to count yet.
        self.bar = tqdm(desc=label, bar_format="{desc}: scanning …", file=sys.stderr, smoothing=0)
        self.started: float | None = None

    def __call__(self, done: int, total: int, chunks: int) -> None:
        now = time.perf_counter()
        if self.started is None:
            # Rates count from here: files found unchanged (or unreadable) are not work done.
            self.started = now
            self.bar.reset(total=total)
            self.bar.bar_format = self.FORMAT
            self.bar.initial = done
        self.bar.n = done
        elapsed = now - self.started
        rate = f", {chunks / elapsed:.1f} chunks/s" if elapsed > 0 and chunks else ""
        self.bar.set_postfix_str(f"{chunks:,} chunks{rate}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _progress_wanted(flag: bool | None, as_json: bool) -> bool:
    """As asked; by default only for a person: stderr is a terminal and the output is not --json."""
    return flag if flag is not None else not as_json and sys.stderr.isatty()


@rag.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--groups", default="public", show_default=True, help="Comma-separated groups that may read these documents."
)
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show a progress bar on stderr (default: when stderr is a terminal and --json is not given).",
)
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value=LOCAL_RAY,
    default=None,
    metavar="[ADDRESS]",
    help="Load, chunk and embed on Ray (pip install 'loopline[ray]'): alone, on a local Ray started for the run; "
    "with auto, HOST:PORT or ray://HOST:10001, on that cluster.",
)
@click.option(
    "--ray-actors",
    type=click.IntRange(1),
    default=2,
    show_default=True,
    help="With --ray: embedding actors, each holding one model and claiming half a CPU (one torch thread).",
)
def ingest(
    path: Path, groups: str, as_json: bool, progress: bool | None, ray_address: str | None, ray_actors: int
) -> None:
    """Ingest a file or (re-)sync a folder tree into the index.

    Unchanged documents are skipped, changed ones replaced, files removed from the folder
    leave the index; broken files are reported as dead letters and the rest goes on.
    """
    settings = Settings()
    group_list = _split_groups(groups)
    show = _progress_wanted(progress, as_json)
    ray = _ray_options(ray_address, ray_actors) if ray_address else None
    with open_backend(settings) as (kind, backend):
        if kind == "remote":
            if ray is not None:
                raise click.ClickException("a running service owns the stores: stop it to ingest with --ray here")
            if show:
                click.echo("the service runs the ingest; its summary follows when the run ends", err=True)
            summary = backend.ingest(path, group_list)  # type: ignore[attr-defined]
        else:
            run = _ingest_here(backend, path, group_list, show, ray)
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


def _ray_options(address: str, actors: int) -> RayOptions:
    """What `--ray [ADDRESS]` asks for, checked before any work: the address's form, and Ray installed."""
    from rag.ray_ingest import RayOptions, RayUnavailable, check_address, import_ray

    try:
        options = RayOptions(address=None if address == LOCAL_RAY else check_address(address), actors=actors)
        import_ray()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ray") from exc
    except RayUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    return options


def _ingest_here(
    service: RagService, path: Path, groups: list[str], show: bool, ray: RayOptions | None = None
) -> RunSummary:
    """Run the ingest in this process (its parsing and embedding on Ray with `ray`), with a progress bar when `show`."""

    def run(progress: ProgressCallback | None) -> RunSummary:
        if ray is None:
            return service.ingest(path, groups, progress=progress)
        from rag.ray_ingest import RayUnavailable, ingest_with_ray

        try:
            return ingest_with_ray(service, path, groups, options=ray, progress=progress)
        except RayUnavailable as exc:
            raise click.ClickException(str(exc)) from exc

    if not show:
        return run(None)
    from tqdm.contrib.logging import logging_redirect_tqdm

    bar = _IngestBar(f"ingest {path.resolve().name or path}")
    try:
        with logging_redirect_tqdm():  # dead-letter warnings print above the bar, not through it
            return run(bar)
    finally:
        bar.close()


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


@rag.command("embedding-model")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def embedding_model(as_json: bool) -> None:
    """Show the embedding model this configuration uses (the name a collection records) and load it.

    With the ONNX runtime this exports the bundled model into the cache if it is not there yet
    (seconds; images run it at build time so the first start does not)."""
    from rag.embeddings import make_embedder

    settings = Settings()
    t0 = time.perf_counter()
    embedder = make_embedder(settings)
    embedder.embed_query("warm-up")
    info = {
        "model": embedder.name,
        "dim": embedder.dim,
        "runtime": "endpoint" if settings.embedding_base_url else settings.embedding_runtime,
        "file": str(getattr(embedder, "model_path", None) or getattr(embedder, "path", "")) or None,
        "load_s": round(time.perf_counter() - t0, 2),
    }
    if as_json:
        click.echo(json.dumps(info))
        return
    click.echo(
        f"{info['model']} (dim {info['dim']}, {info['runtime']}) from {info['file']}, loaded in {info['load_s']} s"
    )
