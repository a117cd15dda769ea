"""Drift of monitored streams: a frozen reference per feature against a rolling current window.

A *stream* is one monitored source of values ("rag", "vision:FLEET"); each has *features*
(query length, brightness, class, …), numeric or categorical. Values arrive raw (`record`),
as counts over fixed cut points from a device (`record_histogram`), or as a device's running
totals (`record_cumulative`, the difference since its last report is added, in the bucket of
the time the device took them).

Windows, all on time buckets (an hour by default):
- the **reference** of a feature is frozen once (`freeze_reference`) from the buckets of a
  period and never changes: numeric features keep decile cut points of that period (raw
  values) or its fixed bins merged into about ten equal-mass groups (device histograms),
  plus the counts; categorical ones keep category counts. `request_reference` asks for one
  to be frozen from the data that arrives after a moment (a model promotion), as soon as
  `min_reference` values have come (features that never get there within `request_ttl_s`
  keep their previous reference); until then the previous reference stays active;
- the **current** window is the last `window_s` of buckets, and only those after the
  reference's last bucket (the bucket in which a reference was frozen belongs to it; later
  values in that bucket count in neither window).

`status()` judges each feature with PSI (see `psi.py`): "no_reference" without a reference,
"no_data" while the current window has fewer than `min_current` values (PSI of a handful of
values is mostly noise), else "ok" / "warn" / "alert" by the thresholds. `history()` gives
PSI over time, one point per bucket, each against the reference active then.
`reference_progress()` tells, for each feature an open request still waits for, how many of
the `min_reference` values have come.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
from pydantic import BaseModel

from shared.metadata.store import MetadataStore
from shared.monitoring.drift_store import Bucket, DriftStore, Observation, Reference, ReferenceRequest
from shared.monitoring.histograms import Histogram, merge_all, quantile_edges
from shared.monitoring.psi import (
    DEFAULT_ALERT,
    DEFAULT_BINS,
    DEFAULT_SMOOTHING,
    DEFAULT_WARN,
    category_counts,
    psi_from_counts,
    psi_status,
)

log = logging.getLogger(__name__)

DriftLevel = Literal["ok", "warn", "alert", "no_reference", "no_data"]


class DriftStatus(BaseModel):
    """One feature of one stream: its PSI now and how much data it rests on."""

    stream: str
    feature: str
    psi: float | None
    status: DriftLevel
    reference_n: int
    current_n: int
    window_start: datetime | None
    window_end: datetime | None
    reference_label: str | None = None
    kind: Literal["numeric", "categorical"] | None = None


class ReferenceProgress(BaseModel):
    """A feature an open reference request still waits for: the values it has and needs."""

    stream: str
    feature: str
    label: str
    so_far: int
    needed: int


class DriftMonitor:
    """Records monitored values and judges their drift; state lives in the metadata store.

    Cheap to construct (the metrics endpoint builds one per scrape); every number that decides
    a status is a constructor argument so a deployment and a test can set it.
    """

    def __init__(
        self,
        store: MetadataStore,
        *,
        clock: Callable[[], float] = time.time,
        warn: float = DEFAULT_WARN,
        alert: float = DEFAULT_ALERT,
        bins: int = DEFAULT_BINS,
        smoothing: float = DEFAULT_SMOOTHING,
        bucket_s: int = 3600,
        window_s: int = 24 * 3600,
        min_current: int = 200,
        min_reference: int = 500,
        sample_cap: int = 500,
        max_categories: int = 50,
        retention_s: int = 30 * 24 * 3600,
        request_ttl_s: int = 7 * 24 * 3600,
        rng: random.Random | None = None,
    ) -> None:
        if alert < warn:
            raise ValueError(f"alert threshold {alert} is below warn threshold {warn}")
        if bucket_s <= 0 or window_s < bucket_s:
            raise ValueError("bucket_s must be positive and window_s at least one bucket")
        self.drift_store = DriftStore(store, rng=rng)
        self._clock = clock
        self.warn, self.alert = warn, alert
        self.bins, self.smoothing = bins, smoothing
        self.bucket_s, self.window_s = bucket_s, window_s
        self.min_current, self.min_reference = min_current, min_reference
        self.sample_cap, self.max_categories = sample_cap, max_categories
        self.retention_s = retention_s
        self.request_ttl_s = request_ttl_s

    # --- time ------------------------------------------------------------------------
    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), tz=UTC)

    def bucket_of(self, at: datetime) -> datetime:
        ts = at.timestamp()
        return datetime.fromtimestamp(math.floor(ts / self.bucket_s) * self.bucket_s, tz=UTC)

    @property
    def _bucket(self) -> timedelta:
        return timedelta(seconds=self.bucket_s)

    # --- recording -------------------------------------------------------------------
    def record(self, stream: str, feature: str, values: Sequence[float | str]) -> None:
        """Raw values of one feature: all numbers (bools count as 0/1) or all strings (categories)."""
        self.record_many(stream, {feature: values})

    def record_many(self, stream: str, features: Mapping[str, Sequence[float | str]]) -> None:
        """Several features at once, in one transaction (one answer's query length, score, …)."""
        obs = [ob for feature, values in features.items() if (ob := _observation(stream, feature, values)) is not None]
        self.drift_store.add(self.bucket_of(self.now()), obs, sample_cap=self.sample_cap)

    def record_histogram(self, stream: str, feature: str, edges: Sequence[float], counts: Sequence[float]) -> None:
        """Counts over cut points `edges` (len(edges)+1 counts, outer bins open): mergeable device data."""
        h = Histogram(tuple(edges), tuple(counts))
        if h.n > 0:
            ob = Observation(stream, feature, "histogram", counts=h.counts, edges=h.edges)
            self.drift_store.add(self.bucket_of(self.now()), [ob], sample_cap=self.sample_cap)

    def record_cumulative(
        self,
        stream: str,
        feature: str,
        *,
        source: str,
        epoch: str,
        counts: Sequence[float] | Mapping[str, float],
        edges: Sequence[float] | None = None,
    ) -> float:
        """A sender's running totals since its `epoch` began; adds what grew since its last report.

        Running totals make a lost report harmless (the next one carries its counts). A new
        epoch (the device restarted), other edges, or a total that went down while others
        grew start again from the totals as sent; totals at or below the last ones of the
        same (named) epoch are an earlier report arriving late and add nothing. Returns how
        many observations were added.
        """
        if edges is not None:
            return self.record_totals(
                stream, source=source, epoch=epoch, histograms={feature: {"edges": edges, "counts": counts}}
            )
        return self.record_totals(stream, source=source, epoch=epoch, categories={feature: counts})  # type: ignore[dict-item]

    def record_totals(
        self,
        stream: str,
        *,
        source: str,
        epoch: str,
        histograms: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
        categories: Mapping[str, Mapping[str, float]] | None = None,
        at: datetime | None = None,
    ) -> float:
        """Several features' running totals from one sender (`record_cumulative`, batched).

        `histograms` maps a feature to {"edges", "counts"}, `categories` a feature to counts
        per category. What grew lands in the bucket of `at` (when the sender took the totals,
        e.g. a frame's capture time; default now). Within a named epoch totals only grow, so
        totals at or below the last ones are an earlier report that arrived late (uploads
        retried out of order): they add nothing and the cursor stays at the later totals.
        Raises ValueError on malformed counts before anything is stored.
        """
        totals: dict[str, dict] = {}
        for feature, h in (histograms or {}).items():
            hist = Histogram(tuple(h["edges"]), tuple(h["counts"]))
            totals[feature] = {"edges": list(hist.edges), "counts": list(hist.counts)}
        for feature, cats in (categories or {}).items():
            clean = {str(k): float(v) for k, v in dict(cats).items()}
            if any(v < 0 or not math.isfinite(v) for v in clean.values()):
                raise ValueError(f"{feature}: category counts must be finite and non-negative")
            totals[feature] = {"categories": clean}
        if not totals:
            return 0.0
        previous = self.drift_store.advance_cursors(source, stream, epoch, totals)
        if epoch:
            late = {f: prev for f, prev in previous.items() if prev is not None and _earlier(totals[f], prev)}
            if late:  # put the later totals back: the next report is counted from them
                self.drift_store.advance_cursors(source, stream, epoch, late)
                totals = {f: t for f, t in totals.items() if f not in late}
        obs: list[Observation] = []
        for feature, now_t in totals.items():
            prev = previous.get(feature)
            if "edges" in now_t:
                cur = np.asarray(now_t["counts"])
                delta = cur
                if prev and prev.get("edges") == now_t["edges"]:
                    d = cur - np.asarray(prev["counts"])
                    delta = d if (d >= 0).all() else cur
                if delta.sum() > 0:
                    obs.append(
                        Observation(
                            stream, feature, "histogram", counts=tuple(delta.tolist()), edges=tuple(now_t["edges"])
                        )
                    )
            else:
                cats = now_t["categories"]
                before = (prev or {}).get("categories", {})
                diff = {k: v - before.get(k, 0.0) for k, v in cats.items()}
                if any(v < 0 for v in diff.values()) or any(k not in cats for k in before):
                    diff = cats
                diff = {k: v for k, v in diff.items() if v > 0}
                if diff:
                    obs.append(Observation(stream, feature, "categories", counts=diff))
        when = self.now() if at is None else at
        self.drift_store.add(self.bucket_of(when), obs, sample_cap=self.sample_cap)
        return float(sum(sum(ob.counts) if ob.kind == "histogram" else sum(dict(ob.counts).values()) for ob in obs))

    # --- references ------------------------------------------------------------------
    def freeze_reference(
        self,
        stream: str,
        *,
        label: str,
        since: datetime | None = None,
        until: datetime | None = None,
        min_n: int | None = None,
    ) -> dict[str, Reference]:
        """Freeze each feature's reference from the buckets in [since, until] (default: the last window).

        Features with fewer than `min_n` values (default `min_reference`) are skipped and
        logged: a reference of a handful of values would make every later window look drifted.
        """
        until = until or self.now()
        since = since or until - timedelta(seconds=self.window_s) + self._bucket
        lo, hi = self.bucket_of(since), self.bucket_of(until)
        by_feature: dict[str, list[Bucket]] = defaultdict(list)
        for b in self.drift_store.buckets(stream=stream, since=lo, until=hi):
            by_feature[b.feature].append(b)
        frozen: dict[str, Reference] = {}
        need = self.min_reference if min_n is None else min_n
        for feature, buckets in sorted(by_feature.items()):
            ref = self._freeze(stream, feature, label, buckets, lo, hi, need)
            if ref is not None:
                frozen[feature] = ref
        if not frozen:
            log.warning(
                "no reference frozen for stream %s (%s): no feature had %d values between %s and %s",
                stream,
                label,
                need,
                lo,
                hi,
            )
        return frozen

    def request_reference(self, stream: str, *, label: str, since: datetime | None = None) -> None:
        """Freeze a reference labelled `label` from the values arriving from `since` (default: now) on.

        For a model promotion: what the newly promoted model sees and predicts becomes normal
        once `min_reference` values have arrived. Asking again for the same label changes
        nothing; another label replaces a request still open.
        """
        self.drift_store.open_request(stream, label, self.bucket_of(since or self.now()))

    def reference_label(self, stream: str) -> str | None:
        """The label of the open reference request of `stream`, else of its newest reference."""
        pending = self.drift_store.open_requests(stream)
        if pending:
            return pending[-1].label
        refs = self.drift_store.references(stream)
        return refs[-1].label if refs else None

    def settle_references(self) -> list[Reference]:
        """Freeze what open reference requests can freeze now; close the requests that are done."""
        frozen: list[Reference] = []
        now = self.now()
        for req in self.drift_store.open_requests():
            hi = self.bucket_of(now)
            by_feature, done = self._request_state(req, hi)
            for feature, buckets in sorted(by_feature.items()):
                if feature in done:
                    continue
                ref = self._freeze(
                    req.stream, feature, req.label, buckets, req.since, hi, self.min_reference, quiet=True
                )
                if ref is not None:
                    frozen.append(ref)
                    done.add(feature)
            if by_feature and set(by_feature) <= done:
                self.drift_store.close_request(req.id)
                log.info("reference %s of stream %s frozen for %s", req.label, req.stream, ", ".join(sorted(done)))
            elif now - req.since > timedelta(seconds=self.request_ttl_s):
                self.drift_store.close_request(req.id)
                log.warning(
                    "reference %s of stream %s: %s never reached %d values in %.0f h; they keep their previous reference",
                    req.label,
                    req.stream,
                    ", ".join(sorted(set(by_feature) - done)) or "no feature",
                    self.min_reference,
                    self.request_ttl_s / 3600,
                )
        return frozen

    def reference_progress(self) -> list[ReferenceProgress]:
        """Each feature that open reference requests still wait for (`status()` settles them first)."""
        hi = self.bucket_of(self.now())
        out = []
        for req in self.drift_store.open_requests():
            by_feature, done = self._request_state(req, hi)
            out.extend(
                ReferenceProgress(
                    stream=req.stream,
                    feature=feature,
                    label=req.label,
                    so_far=round(_value_count(buckets)),
                    needed=self.min_reference,
                )
                for feature, buckets in sorted(by_feature.items())
                if feature not in done
            )
        return out

    def _request_state(self, req: ReferenceRequest, hi: datetime) -> tuple[dict[str, list[Bucket]], set[str]]:
        """The buckets per feature a request freezes from (up to `hi`), and the features already frozen for it."""
        by_feature: dict[str, list[Bucket]] = defaultdict(list)
        for b in self.drift_store.buckets(stream=req.stream, since=req.since, until=hi):
            by_feature[b.feature].append(b)
        done = {
            r.feature for r in self.drift_store.references(req.stream) if r.label == req.label and r.since >= req.since
        }
        return by_feature, done

    def _freeze(
        self,
        stream: str,
        feature: str,
        label: str,
        buckets: list[Bucket],
        lo: datetime,
        hi: datetime,
        need: int,
        *,
        quiet: bool = False,
    ) -> Reference | None:
        built = self._build(buckets)
        if built is None or built[1] < need:
            if not quiet:
                log.warning(
                    "stream %s feature %s: %d values between %s and %s, fewer than the %d a reference needs; not frozen",
                    stream,
                    feature,
                    0 if built is None else built[1],
                    lo,
                    hi,
                    need,
                )
            return None
        kind, n, data = built
        return self.drift_store.add_reference(
            stream=stream,
            feature=feature,
            label=label,
            kind=kind,
            since=lo,
            until=hi,
            n=n,
            data=data,
            created_at=self.now(),
        )

    def _build(self, buckets: list[Bucket]) -> tuple[str, float, dict] | None:
        """(kind, n, data) of a reference from buckets; None without data."""
        cats = [b for b in buckets if b.kind == "categories"]
        nums = [b for b in buckets if b.kind in ("values", "histogram")]
        n_cats, n_nums = sum(b.n for b in cats), sum(b.n for b in nums)
        if n_cats == 0 and n_nums == 0:
            return None
        if n_cats > n_nums:
            merged: dict[str, float] = defaultdict(float)
            for b in cats:
                for k, v in b.data.get("counts", {}).items():
                    merged[k] += float(v)
            return "categorical", n_cats, {"counts": dict(merged)}
        hists = [b for b in nums if b.kind == "histogram"]
        values, weights = _samples([b for b in nums if b.kind == "values"])
        if hists:  # device data: its fixed cut points, merged into about `bins` equal-mass groups
            by_edges: dict[tuple, float] = defaultdict(float)
            for b in hists:
                by_edges[tuple(b.data["edges"])] += b.n
            base = max(by_edges, key=by_edges.__getitem__)
            fine = merge_all((Histogram.from_json(b.data) for b in hists), edges=base)
            assert fine is not None
            if values.size:
                fine = fine.merge(Histogram.from_values(values, base, weights))
            ref = fine.coarsen(self.bins)
        else:
            edges = quantile_edges(values, self.bins, weights)
            ref = Histogram.from_values(values, edges, weights)
        return "numeric", n_nums, ref.to_json()

    # --- judging ---------------------------------------------------------------------
    def status(self) -> list[DriftStatus]:
        """Every stream and feature: PSI of the current window against its active reference."""
        self.settle_references()
        self._prune()
        now = self.now()
        first = self.bucket_of(now) - timedelta(seconds=self.window_s) + self._bucket
        latest = {(ref.stream, ref.feature): ref for ref in self.drift_store.latest_references()}
        grouped: dict[tuple[str, str], list[Bucket]] = defaultdict(list)
        for b in self.drift_store.buckets(since=first):
            grouped[(b.stream, b.feature)].append(b)
        out = []
        for key in sorted(set(latest) | set(grouped)):
            out.append(self._judge(key[0], key[1], latest.get(key), grouped.get(key, []), first, now))
        return out

    def _judge(
        self, stream: str, feature: str, ref: Reference | None, buckets: list[Bucket], first: datetime, now: datetime
    ) -> DriftStatus:
        start = first if ref is None else max(first, ref.until + self._bucket)
        window = [b for b in buckets if b.start >= start]
        base = {"stream": stream, "feature": feature, "window_start": start, "window_end": now}
        if ref is None:
            n = sum(b.n for b in window)
            return DriftStatus(psi=None, status="no_reference", reference_n=0, current_n=round(n), **base)
        ref_counts, cur_counts = self._counts(ref, window)
        n = float(np.sum(cur_counts))
        value = psi_from_counts(ref_counts, cur_counts, smoothing=self.smoothing) if n >= self.min_current else None
        level = psi_status(value, self.warn, self.alert) if value is not None else "no_data"
        return DriftStatus(
            psi=None if value is None else round(value, 6),
            status=level,
            reference_n=round(ref.n),
            current_n=round(n),
            reference_label=ref.label,
            kind=ref.kind,  # type: ignore[arg-type]
            **base,
        )

    def _counts(self, ref: Reference, buckets: list[Bucket]) -> tuple[np.ndarray, np.ndarray]:
        """Reference and current counts over the reference's bins."""
        if ref.kind == "categorical":
            current: dict[str, float] = defaultdict(float)
            for b in buckets:
                if b.kind == "categories":
                    for k, v in b.data.get("counts", {}).items():
                        current[k] += float(v)
            _, r, c = category_counts(ref.data["counts"], current, max_categories=self.max_categories)
            return np.asarray(r), np.asarray(c)
        reference = Histogram.from_json(ref.data)
        return reference.array(), _numeric_counts(reference.edges, buckets)

    def history(self, stream: str, feature: str, *, since: datetime | None = None) -> list[tuple[datetime, float]]:
        """PSI over time: per bucket, its rolling window against the reference active then.

        Points whose window has fewer than `min_current` values are left out.
        """
        refs = self.drift_store.references(stream, feature)
        if not refs:
            return []
        now = self.now()
        lo = since or now - timedelta(seconds=self.retention_s)
        buckets = self.drift_store.buckets(stream=stream, feature=feature, since=lo - timedelta(seconds=self.window_s))
        starts = sorted({b.start for b in buckets if b.start >= lo})
        points: list[tuple[datetime, float]] = []
        for t in starts:
            active = [r for r in refs if r.until + self._bucket <= t]
            if not active:
                continue
            ref = active[-1]
            first = max(t - timedelta(seconds=self.window_s) + self._bucket, ref.until + self._bucket)
            window = [b for b in buckets if first <= b.start <= t]
            r, c = self._counts(ref, window)
            if c.sum() >= self.min_current:
                value = psi_from_counts(r, c, smoothing=self.smoothing)
                if value is not None:
                    points.append((min(t + self._bucket, now), round(value, 6)))
        return points

    def _prune(self) -> None:
        before = self.now() - timedelta(seconds=self.retention_s)
        oldest = self.drift_store.oldest_bucket()
        if oldest is not None and oldest < before:
            removed = self.drift_store.prune(before)
            log.info("drift: removed %d buckets older than %s", removed, before)


def _observation(stream: str, feature: str, values: Sequence[float | str]) -> Observation | None:
    vals = list(values)
    if not vals:
        return None
    if all(isinstance(v, str) for v in vals):
        counts: dict[str, float] = defaultdict(float)
        for v in vals:
            counts[v] += 1.0
        return Observation(stream, feature, "categories", counts=dict(counts))
    if any(isinstance(v, str) for v in vals):
        raise ValueError(f"{stream}/{feature}: values mix numbers and strings; record categories as strings only")
    nums = [float(v) for v in vals]
    if any(math.isnan(v) for v in nums):
        nums = [v for v in nums if not math.isnan(v)]
    return Observation(stream, feature, "values", values=tuple(nums)) if nums else None


def _earlier(totals: dict, previous: dict) -> bool:
    """`totals` are at or below `previous` everywhere (and not equal): taken before them."""
    if "edges" in totals:
        if previous.get("edges") != totals["edges"]:
            return False
        cur, prev = np.asarray(totals["counts"]), np.asarray(previous["counts"])
        return bool((cur <= prev).all() and (cur < prev).any())
    cats, before = totals["categories"], previous.get("categories")
    if not isinstance(before, dict):
        return False
    return all(v <= before.get(k, -1.0) for k, v in cats.items()) and cats != before


def _value_count(buckets: list[Bucket]) -> float:
    """How many values a reference built from `buckets` rests on (as `_build` counts them)."""
    n_cats = sum(b.n for b in buckets if b.kind == "categories")
    return max(n_cats, sum(b.n for b in buckets if b.kind in ("values", "histogram")))


def _samples(buckets: list[Bucket]) -> tuple[np.ndarray, np.ndarray | None]:
    """All sampled values, each weighted by how many values its bucket's sample stands for."""
    values, weights = [], []
    for b in buckets:
        sample = b.data.get("sample", [])
        if sample:
            values.extend(sample)
            weights.extend([b.n / len(sample)] * len(sample))
    if not values:
        return np.zeros(0), None
    w = np.asarray(weights)
    return np.asarray(values, dtype=np.float64), (None if np.allclose(w, 1.0) else w)


def _numeric_counts(edges: tuple[float, ...], buckets: list[Bucket]) -> np.ndarray:
    total = Histogram.empty(edges)
    for b in buckets:
        if b.kind == "histogram":
            total = total.merge(Histogram.from_json(b.data))
        elif b.kind == "values":
            sample = b.data.get("sample", [])
            if sample:
                total = total.merge(Histogram.from_values(sample, edges, [b.n / len(sample)] * len(sample)))
    return total.array()


class BufferedRecorder:
    """Collects raw values in memory and writes them in one transaction every `flush_every_s`.

    For request paths: `record_many` costs microseconds instead of a database write per
    answer (several milliseconds on SQLite). Values wait at most `flush_every_s` (or until
    `max_pending` are waiting) and land in the bucket of the moment they are written; `close()`
    writes what is left. A failed write is logged and its values dropped: monitoring data is
    never worth blocking or crashing the service for.
    """

    def __init__(self, monitor: DriftMonitor, *, flush_every_s: float = 5.0, max_pending: int = 10_000) -> None:
        self.monitor = monitor
        self.flush_every_s = flush_every_s
        self.max_pending = max_pending
        self._pending: dict[tuple[str, str], list[float | str]] = defaultdict(list)
        self._count = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, stream: str, feature: str, values: Sequence[float | str]) -> None:
        self.record_many(stream, {feature: values})

    def record_many(self, stream: str, features: Mapping[str, Sequence[float | str]]) -> None:
        with self._lock:
            for feature, values in features.items():
                self._pending[(stream, feature)].extend(values)
                self._count += len(values)
            full = self._count >= self.max_pending
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="drift-recorder", daemon=True)
                self._thread.start()
        if full:
            self._wake.set()

    def flush(self) -> None:
        """Write everything waiting now (one transaction per stream)."""
        with self._lock:
            pending, self._pending, self._count = self._pending, defaultdict(list), 0
        by_stream: dict[str, dict[str, list[float | str]]] = defaultdict(dict)
        for (stream, feature), values in pending.items():
            by_stream[stream][feature] = values
        for stream, features in by_stream.items():
            try:
                self.monitor.record_many(stream, features)
            except Exception:
                log.exception(
                    "drift values of stream %s not written (%d dropped)", stream, sum(map(len, features.values()))
                )

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_every_s)
            self._wake.clear()
            self.flush()
