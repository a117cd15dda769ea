"""Payloads of the Q&A API and CLI (a contract: outside checks read these field names).

Times go out as RFC 3339 with an offset (UTC): SQLite hands back naive datetimes from
timezone-aware columns, so every datetime field here takes a naive value as UTC.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, Field, StringConstraints

from shared.ingestion import RunSummary
from shared.monitoring.freshness import UtcDateTime


def _whole_number(value: object) -> object:
    """Integers as JSON Schema has them: 3 and 3.0 are integers; `true` and "3" are not."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a whole number")
    return value


# After the bounds in `Annotated[int, Field(ge=…), WHOLE_NUMBER]`: so the schema still shows them.
WHOLE_NUMBER = BeforeValidator(_whole_number)


class Citation(BaseModel):
    n: int = Field(description="The number the answer cites, as [n].")
    source: str = Field(description="Document path relative to the ingested folder.")
    title: str
    section: str = ""
    score: float = Field(description="Cosine similarity of the chunk to the question.")
    text: str = Field(description="The cited chunk.")
    snippet: str = Field(description="The first few hundred characters of the chunk.")
    doc_id: str


class Timings(BaseModel):
    embed_ms: float = 0.0
    search_ms: float = 0.0
    answer_ms: float = 0.0
    total_ms: float = 0.0


class Answer(BaseModel):
    id: str | None = None
    question: str
    answer: str
    mode: Literal["llm", "extractive"]
    abstained: bool
    citations: list[Citation]
    timings: Timings = Field(default_factory=Timings)


class QueryRequest(BaseModel):
    question: str = Field(min_length=1, max_length=4000)
    top_k: Annotated[int, Field(ge=1, le=50), WHOLE_NUMBER] | None = None
    as_user: str | None = Field(None, description="Admins only: answer as this user would see it.")


class DocumentOut(BaseModel):
    id: str
    source: str = Field(description="The name of the source (its folder's name; 'uploads' for uploads).")
    path: str
    title: str
    groups: list[str]
    chunks: int
    size_bytes: int
    content_hash: str
    updated_at: UtcDateTime


class RunOut(BaseModel):
    run_id: int
    source: str
    status: str
    added: int
    updated: int
    unchanged: int
    deleted: int
    failed: int
    chunks: int
    seconds: float = 0.0
    dead_letters: list[dict[str, str]] = Field(default_factory=list)
    error: str | None = None


def run_out(r: RunSummary) -> RunOut:
    """A finished run as the API and the jobs report it."""
    return RunOut(
        run_id=r.run_id,
        source=r.source,
        status=r.status,
        seconds=round(r.seconds, 3),
        dead_letters=r.dead_letters,
        error=r.error,
        **r.counts(),
    )


class RunRecordOut(BaseModel):
    """A run as `GET /v1/runs` lists it."""

    run_id: int
    source: str
    kind: str
    status: str
    started_at: UtcDateTime
    finished_at: UtcDateTime | None
    added: int
    updated: int
    unchanged: int
    deleted: int
    failed: int
    error: str | None


class UploadOut(BaseModel):
    document: DocumentOut
    run: RunOut


class SyncStarted(BaseModel):
    status: Literal["started"]
    folder: str = Field(description="The folder being synced in the background.")
    job_id: str = Field(description="The sync's job: `GET /v1/jobs/{job_id}` follows it.")


class SyncFinished(BaseModel):
    status: Literal["finished"]
    run: RunOut = Field(description="The run (with `wait=true`).")


class MeOut(BaseModel):
    """Who the key is: what the page shows and whether it offers the admin tools."""

    name: str
    groups: list[str] = Field(description="The groups named for the user; everyone also reads 'public'.")
    admin: bool


class DeadLetterOut(BaseModel):
    """An input an ingest could not take, with the reason; the rest of its run went on."""

    id: int
    run_id: int | None
    source: str
    path: str
    reason: str
    created_at: UtcDateTime


class FeedbackOut(BaseModel):
    id: int


class FeedbackIn(BaseModel):
    question: str = Field(min_length=1, max_length=4000)
    answer: str = Field("", max_length=20000)
    rating: Annotated[int, Field(ge=-1, le=5), WHOLE_NUMBER] = Field(description="-1/1 thumbs, or 1-5 stars.")
    comment: str = Field("", max_length=4000)


class IngestPathIn(BaseModel):
    path: str = Field(min_length=1, max_length=4096)
    groups: list[Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]] = Field(
        min_length=1,
        description='Groups that may read what is ingested; there is no default, name them (e.g. ["public"]).',
    )
