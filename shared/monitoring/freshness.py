"""Freshness SLOs: how long ago each source was last brought up to date, against its target.

A source's age is the time since its last successful run ('succeeded' or 'partial') of the
counted kinds (`ingest`, `sync`, `table` and `stream` by default; uploads are pushed by people,
not synced).
A source that never succeeded breaches its SLO once its first counted run started longer
ago than the SLO (a first sync still running is not stale; a failing one soon is). The SLO is
`default_slo_h` unless an entry of `sources` matches the source name (a glob, first match
wins; `slo_h: null` exempts a source). Sources without any counted run have no SLO.

In the monitoring YAML:

    freshness:
      default_slo_h: 24
      sources:
        - match: "folder:/srv/handbook*"
          slo_h: 6
        - match: "folder:*/archive"
          slo_h: null

What this module does not do: raise alerts (rules.py) or decide who may see a source
(`visible_source_freshness` takes the caller's groups from the API layer).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from shared.metadata.store import MetadataStore
from shared.metadata.tables import DocumentGroup, DocumentRow, IngestRun
from shared.monitoring.clock import as_utc, resolve_now, seconds_between

SUCCESS_STATUSES = ("succeeded", "partial")
# A datetime that leaves as RFC 3339 with an offset: naive values (SQLite's) are taken as UTC.
UtcDateTime = Annotated[datetime, AfterValidator(as_utc)]


class FreshnessOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")

    match: str = Field(description="Glob over source names, e.g. 'folder:/srv/handbook*'.")
    slo_h: float | None = Field(description="Hours; null exempts matching sources.", gt=0)


class FreshnessSLOs(BaseModel):
    """The `freshness` section of the monitoring YAML."""

    model_config = ConfigDict(extra="forbid")

    default_slo_h: float = Field(24.0, gt=0)
    kinds: list[str] = Field(
        default_factory=lambda: ["ingest", "sync", "table", "stream"],
        description="Run kinds that refresh a source (table: change data capture; stream: events).",
    )
    sources: list[FreshnessOverride] = Field(default_factory=list)

    def slo_s(self, source: str) -> float | None:
        for override in self.sources:
            if fnmatchcase(source, override.match):
                return None if override.slo_h is None else override.slo_h * 3600
        return self.default_slo_h * 3600


class SourceFreshness(BaseModel):
    source: str
    last_success_at: UtcDateTime | None
    age_s: float | None = Field(description="Seconds since the last successful run; None if it never succeeded.")
    slo_s: float | None = Field(description="The SLO in seconds; None when the source has none.")
    breached: bool
    state: Literal["fresh", "stale", "unmonitored"]


class VisibleSource(SourceFreshness):
    """A source as a user sees it: its freshness plus the documents they can read in it."""

    documents: int
    last_change_at: UtcDateTime | None = Field(description="When a readable document of it last changed.")


def freshness(
    store: MetadataStore,
    slos: FreshnessSLOs,
    *,
    now: datetime | float | None = None,
    sources: Iterable[str] | None = None,
) -> list[SourceFreshness]:
    """Freshness of every source with counted runs (or of exactly `sources`), stalest first."""
    now = resolve_now(now)
    with store.session() as s:
        counted = IngestRun.kind.in_(slos.kinds)
        last_ok = dict(
            s.execute(
                select(IngestRun.source, func.max(IngestRun.finished_at))
                .where(counted, IngestRun.status.in_(SUCCESS_STATUSES))
                .group_by(IngestRun.source)
            ).all()
        )
        first_try = dict(
            s.execute(
                select(IngestRun.source, func.min(IngestRun.started_at)).where(counted).group_by(IngestRun.source)
            ).all()
        )
    monitored = set(first_try)
    wanted = sorted(monitored) if sources is None else sorted(set(sources))
    out = []
    for source in wanted:
        last = last_ok.get(source)
        last = as_utc(last) if last is not None else None
        age = max(0.0, seconds_between(last, now)) if last is not None else None
        slo = slos.slo_s(source) if source in monitored else None
        waited = age if age is not None else seconds_between(first_try[source], now) if source in monitored else 0.0
        breached = slo is not None and waited > slo
        state = "unmonitored" if slo is None else "stale" if breached else "fresh"
        out.append(
            SourceFreshness(source=source, last_success_at=last, age_s=age, slo_s=slo, breached=breached, state=state)
        )
    return sorted(out, key=lambda f: (not f.breached, -(f.age_s if f.age_s is not None else float("inf")), f.source))


def visible_source_freshness(
    store: MetadataStore,
    slos: FreshnessSLOs,
    *,
    groups: Sequence[str] | None,
    now: datetime | float | None = None,
) -> list[VisibleSource]:
    """The sources of documents readable by `groups` (all when None) with their freshness.

    Only sources holding at least one readable document are listed, so a user learns
    nothing about sources whose documents they cannot read.
    """
    with store.session() as s:
        q = select(DocumentRow.source, func.count(DocumentRow.id), func.max(DocumentRow.updated_at)).group_by(
            DocumentRow.source
        )
        if groups is not None:
            readable = select(DocumentGroup.document_id).where(DocumentGroup.group.in_(list(groups)))
            q = q.where(DocumentRow.id.in_(readable))
        docs = {src: (n, changed) for src, n, changed in s.execute(q).all()}
    out = []
    for f in freshness(store, slos, now=now, sources=docs):
        n, changed = docs[f.source]
        out.append(
            VisibleSource(
                **f.model_dump(), documents=n, last_change_at=as_utc(changed) if changed is not None else None
            )
        )
    return out
