"""Drift monitoring on the metadata store (SQLite and PostgreSQL): references, windows, merging, history."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import numpy as np
import pytest

from shared.metadata.store import MetadataStore
from shared.monitoring.drift import BufferedRecorder, DriftMonitor
from shared.monitoring.histograms import Histogram
from shared.monitoring.psi import compare_histograms, psi

HOUR = 3600.0
T0 = datetime(2030, 1, 7, 9, 0, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def monitor(store: MetadataStore, clock: Clock, **kw) -> DriftMonitor:
    kw.setdefault("min_current", 100)
    kw.setdefault("min_reference", 200)
    return DriftMonitor(store, clock=clock, **kw)


def by_feature(m: DriftMonitor) -> dict[str, object]:
    return {s.feature: s for s in m.status()}


def test_a_shifted_stream_alerts_and_an_unshifted_one_stays_ok(store: MetadataStore) -> None:
    clock, rng = Clock(), np.random.default_rng(0)
    m = monitor(store, clock)
    m.record_many(
        "rag", {"query_length": rng.normal(60, 15, 1000).tolist(), "top1_score": rng.beta(5, 3, 1000).tolist()}
    )
    assert {s.status for s in m.status()} == {"no_reference"}
    frozen = m.freeze_reference("rag", label="handbook-v1")
    assert set(frozen) == {"query_length", "top1_score"} and frozen["query_length"].n == 1000

    clock.advance(HOUR)
    m.record_many(
        "rag", {"query_length": rng.normal(60, 15, 300).tolist(), "top1_score": (rng.beta(5, 3, 300) - 0.2).tolist()}
    )
    s = by_feature(m)
    assert s["query_length"].status == "ok" and s["query_length"].psi < 0.1
    assert s["top1_score"].status == "alert" and s["top1_score"].psi >= 0.25
    assert s["top1_score"].reference_n == 1000 and s["top1_score"].current_n == 300
    assert s["top1_score"].reference_label == "handbook-v1"
    assert s["top1_score"].window_start == datetime.fromtimestamp(T0 + HOUR, UTC)  # after the reference


def test_too_few_current_values_are_no_data_not_a_verdict(store: MetadataStore) -> None:
    clock, rng = Clock(), np.random.default_rng(1)
    m = monitor(store, clock, min_current=100)
    m.record("rag", "citations", rng.integers(1, 5, 500).tolist())
    m.freeze_reference("rag", label="v1")
    clock.advance(HOUR)
    assert by_feature(m)["citations"].status == "no_data"  # nothing after the reference yet
    m.record("rag", "citations", [0] * 40)  # a drastic change, but only 40 answers
    s = by_feature(m)["citations"]
    assert s.status == "no_data" and s.psi is None and s.current_n == 40
    m.record("rag", "citations", [0] * 60)
    assert by_feature(m)["citations"].status == "alert"


def test_the_current_window_rolls(store: MetadataStore) -> None:
    clock, rng = Clock(), np.random.default_rng(2)
    m = monitor(store, clock, window_s=int(6 * HOUR))
    m.record("s", "x", rng.normal(0, 1, 500).tolist())
    m.freeze_reference("s", label="v1")
    clock.advance(HOUR)
    m.record("s", "x", rng.normal(3, 1, 200).tolist())  # a bad hour
    assert by_feature(m)["x"].status == "alert"
    clock.advance(3 * HOUR)
    m.record("s", "x", rng.normal(0, 1, 200).tolist())
    assert by_feature(m)["x"].current_n == 400  # the bad hour is still in the window
    clock.advance(3 * HOUR)
    m.record("s", "x", rng.normal(0, 1, 200).tolist())
    s = by_feature(m)["x"]
    assert s.current_n == 400 and s.status == "ok"  # it left the window


def test_a_reference_is_too_small_to_freeze_below_the_minimum(store: MetadataStore) -> None:
    clock = Clock()
    m = monitor(store, clock, min_reference=200)
    m.record("s", "x", list(range(50)))
    assert m.freeze_reference("s", label="v1") == {}
    assert m.freeze_reference("s", label="v1", min_n=50)["x"].n == 50


def test_device_histograms_merge_centrally_like_one_histogram(store: MetadataStore) -> None:
    """Two devices send counts over their fixed edges; the verdict equals PSI on the merged counts."""
    clock, rng = Clock(), np.random.default_rng(3)
    edges = tuple(float(x) for x in range(4, 256, 4))
    m = monitor(store, clock)
    ref_a, ref_b = rng.normal(130, 14, 700), rng.normal(134, 14, 500)
    m.record_histogram("vision:line-1", "brightness", edges, Histogram.from_values(ref_a, edges).counts)
    m.record_histogram("vision:line-1", "brightness", edges, Histogram.from_values(ref_b, edges).counts)
    ref = m.freeze_reference("vision:line-1", label="3")["brightness"]
    assert ref.n == 1200 and set(ref.data["edges"]) <= set(edges) and len(ref.data["counts"]) <= 10

    clock.advance(HOUR)
    cur_a, cur_b = rng.normal(140, 14, 150), rng.normal(146, 14, 150)
    for v in (cur_a, cur_b):
        m.record_histogram("vision:line-1", "brightness", edges, Histogram.from_values(v, edges).counts)
    s = by_feature(m)["brightness"]
    reference = Histogram.from_values(np.concatenate([ref_a, ref_b]), edges).coarsen(10)
    current = Histogram.from_values(np.concatenate([cur_a, cur_b]), edges)
    assert s.psi == pytest.approx(compare_histograms(reference, current).psi, rel=1e-5)
    assert s.current_n == 300 and s.status in ("warn", "alert")


def test_running_totals_add_only_what_grew(store: MetadataStore) -> None:
    clock = Clock()
    m = monitor(store, clock, min_reference=1, min_current=1)
    edges = [1.0, 2.0]
    assert m.record_cumulative("v", "detections", source="cam-1", epoch="a", edges=edges, counts=[5, 3, 2]) == 10
    assert (
        m.record_cumulative("v", "detections", source="cam-1", epoch="a", edges=edges, counts=[5, 3, 2]) == 0
    )  # a retry
    assert m.record_cumulative("v", "detections", source="cam-1", epoch="a", edges=edges, counts=[9, 4, 2]) == 5
    assert (
        m.record_cumulative("v", "detections", source="cam-1", epoch="b", edges=edges, counts=[1, 0, 0]) == 1
    )  # restart
    assert m.record_cumulative("v", "class", source="cam-1", epoch="b", counts={"spot": 4}) == 4
    assert m.record_cumulative("v", "class", source="cam-1", epoch="b", counts={"spot": 6, "crack": 1}) == 3
    assert m.record_cumulative("v", "class", source="cam-2", epoch="b", counts={"spot": 2}) == 2  # another device
    ref = m.freeze_reference("v", label="1")
    assert ref["detections"].data["counts"] == [10.0, 4.0, 2.0]
    assert ref["class"].kind == "categorical" and ref["class"].data["counts"] == {"spot": 8.0, "crack": 1.0}


def test_a_requested_reference_freezes_once_enough_arrives_and_the_old_one_rules_until_then(
    store: MetadataStore,
) -> None:
    clock, rng = Clock(), np.random.default_rng(4)
    m = monitor(store, clock, min_reference=300, min_current=100)
    m.record("vision:line-1", "max_score", rng.beta(8, 2, 400).tolist())
    m.freeze_reference("vision:line-1", label="1")
    clock.advance(HOUR)
    m.request_reference("vision:line-1", label="2")  # version 2 promoted: its scores look different
    m.request_reference("vision:line-1", label="2")  # asked again by another upload: no change
    assert m.reference_label("vision:line-1") == "2"
    m.record("vision:line-1", "max_score", rng.beta(4, 2, 200).tolist())
    s = by_feature(m)["max_score"]
    assert s.reference_label == "1" and s.status == "alert"  # 200 < 300: still judged against version 1
    clock.advance(HOUR)
    m.record("vision:line-1", "max_score", rng.beta(4, 2, 600).tolist())
    s = by_feature(m)["max_score"]  # status() froze version 2's reference from the 800 values after the request
    assert s.reference_label == "2" and s.reference_n == 800 and s.status == "no_data"
    assert [r.label for r in m.drift_store.references("vision:line-1")] == ["1", "2"]
    assert m.drift_store.open_requests() == []
    clock.advance(HOUR)
    m.record("vision:line-1", "max_score", rng.beta(4, 2, 500).tolist())
    assert by_feature(m)["max_score"].status == "ok"


def test_categories_never_seen_before_raise_an_alert(store: MetadataStore) -> None:
    clock = Clock()
    m = monitor(store, clock)
    m.record("vision:line-2", "class", ["scratch", "spot", "crack"] * 100)
    m.freeze_reference("vision:line-2", label="1")
    clock.advance(HOUR)
    m.record("vision:line-2", "class", ["scratch", "spot", "crack"] * 40 + ["dent"] * 40)
    s = by_feature(m)["class"]
    assert s.kind == "categorical" and s.status == "alert"
    with pytest.raises(ValueError, match="mix numbers and strings"):
        m.record("vision:line-2", "class", ["spot", 3])


def test_history_gives_psi_over_time_against_the_reference_active_then(store: MetadataStore) -> None:
    clock, rng = Clock(), np.random.default_rng(5)
    m = monitor(store, clock, window_s=int(HOUR))  # one-hour windows: each point is its own hour
    base = rng.normal(50, 10, 600)
    m.record("rag", "query_length", base.tolist())
    m.freeze_reference("rag", label="v1")
    shifts = [0, 3, 6, 12]
    hours = []
    for shift in shifts:
        clock.advance(HOUR)
        hours.append(clock())
        m.record("rag", "query_length", (rng.normal(50, 10, 200) + shift).tolist())
    points = m.history("rag", "query_length")
    assert [p[0] for p in points] == [datetime.fromtimestamp(min(h + HOUR, clock()), UTC) for h in hours]
    values = [p[1] for p in points]
    assert values[-1] > values[1] > values[0] and values[-1] >= 0.25
    assert m.history("rag", "unknown") == []


def test_old_buckets_are_pruned_after_the_retention(store: MetadataStore) -> None:
    clock = Clock()
    m = monitor(store, clock, retention_s=int(48 * HOUR))
    m.record("s", "x", [1.0, 2.0])
    clock.advance(72 * HOUR)
    m.record("s", "x", [3.0])
    m.status()
    assert [b.n for b in m.drift_store.buckets(stream="s")] == [1.0]


def test_concurrent_recording_loses_nothing(store: MetadataStore) -> None:
    clock = Clock()
    m = monitor(store, clock)

    def work(i: int) -> None:
        for _ in range(25):
            m.record_many("rag", {"abstained": [i % 2], "class": ["a"]})

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {b.feature: b.n for b in m.drift_store.buckets(stream="rag")} == {"abstained": 100.0, "class": 100.0}


def test_status_psi_matches_psi_on_the_raw_values(store: MetadataStore) -> None:
    """Below the sample cap nothing is approximated: the stored verdict is psi() of the same values."""
    clock, rng = Clock(), np.random.default_rng(6)
    m = monitor(store, clock, sample_cap=1000)
    ref, cur = rng.gamma(2, 10, 800), rng.gamma(2.4, 10, 300)
    m.record("s", "x", ref.tolist())
    m.freeze_reference("s", label="v1")
    clock.advance(HOUR)
    m.record("s", "x", cur.tolist())
    assert by_feature(m)["x"].psi == pytest.approx(psi(ref, cur), rel=1e-5)


def test_inverted_thresholds_are_refused(store: MetadataStore) -> None:
    with pytest.raises(ValueError, match="below warn"):
        DriftMonitor(store, warn=0.3, alert=0.2)


def test_a_buffered_recorder_writes_in_batches_and_on_close(store: MetadataStore) -> None:
    clock = Clock()
    m = monitor(store, clock)
    recorder = BufferedRecorder(m, flush_every_s=3600)
    for i in range(50):
        recorder.record_many("rag", {"query_length": [20 + i], "abstained": [0]})
    assert m.drift_store.buckets(stream="rag") == []  # nothing written per answer
    recorder.flush()
    assert {b.feature: b.n for b in m.drift_store.buckets(stream="rag")} == {"query_length": 50, "abstained": 50}
    recorder.record("rag", "abstained", [1, 1])
    recorder.close()
    assert {b.feature: b.n for b in m.drift_store.buckets(stream="rag")}["abstained"] == 52


def test_a_reference_request_gives_up_on_features_that_never_fill(store: MetadataStore) -> None:
    clock = Clock()
    m = monitor(store, clock, min_reference=100, request_ttl_s=int(48 * HOUR))
    m.request_reference("rag", label="v2")
    m.record_many("rag", {"query_length": list(range(150)), "feedback_rating": [5, 4]})  # ratings are rare
    assert {s.feature: s.reference_label for s in m.status()} == {"query_length": "v2", "feedback_rating": None}
    assert m.drift_store.open_requests()  # still waiting for ratings
    clock.advance(49 * HOUR)
    m.status()
    assert m.drift_store.open_requests() == []
