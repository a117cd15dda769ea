"""The RAG service feeds drift monitoring: every answer and rating lands in the `rag` stream."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.service import DRIFT_STREAM, RagService, drift_reference_label
from shared.auth import Principal
from shared.config import Settings
from shared.metadata import MetadataStore
from shared.monitoring.drift import BufferedRecorder, DriftMonitor

ADMIN = Principal(name="root", admin=True)
DOCS = {
    "parking.md": "# Parking\n\nVisitors park on level minus two of the garage. Staff park in the north lot.\n",
    "lunch.md": "# Lunch\n\nLunch is served in the canteen from 11:30 to 13:30, with a vegetarian menu daily.\n",
    "holidays.md": "# Holidays\n\nEmployees get 28 days of paid holiday a year; requests go to your manager.\n",
}
ON_TOPIC = [
    "Where do visitors park?",
    "When is lunch served?",
    "How many days of holiday do I get?",
    "Where do staff park their cars?",
    "Is there a vegetarian lunch?",
    "Who approves holiday requests?",
]
OFF_TOPIC = [
    "What is the boiling point of tungsten?",
    "Who won the 1966 football world cup?",
    "How do I compile a Linux kernel module?",
    "What is the airspeed of a swallow?",
    "Translate 'submarine' into Finnish",
    "Which planet has the most moons?",
]


class Clock:
    def __init__(self) -> None:
        self.t = 1_900_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def service(tmp_path: Path, embedder):
    def build(drift_factory=DriftMonitor, **monitor_args) -> tuple[RagService, DriftMonitor]:
        settings = Settings(home=tmp_path / "home")
        settings.ensure_home()
        metadata = MetadataStore(settings.resolved_database_url)
        monitor = drift_factory(metadata, **monitor_args)
        svc = RagService(settings, metadata=metadata, embedder_factory=lambda: embedder, drift=monitor)
        docs = tmp_path / "docs"
        docs.mkdir(exist_ok=True)
        for name, text in DOCS.items():
            (docs / name).write_text(text)
        assert svc.ingest(docs, ["public"]).failed == 0
        made.append(svc)
        return svc, monitor

    made: list[RagService] = []
    yield build
    for svc in made:
        svc.close()


def test_answers_and_ratings_are_recorded(service) -> None:
    svc, monitor = service()
    answered = svc.ask("Where do visitors park?", ADMIN)
    abstained = svc.ask("What is the boiling point of tungsten?", ADMIN)
    streamed = next(ev for ev in svc.ask_stream("When is lunch served?", ADMIN) if ev["type"] == "done")["answer"]
    svc.add_feedback(ADMIN, question="Where do visitors park?", answer=answered.answer, rating=5, comment="")
    assert not answered.abstained and abstained.abstained
    buckets = {b.feature: b for b in monitor.drift_store.buckets(stream=DRIFT_STREAM)}
    assert set(buckets) == {"query_length", "top1_score", "abstained", "citations", "feedback_rating"}
    assert buckets["query_length"].data["sample"] == [
        len(answered.question),
        len(abstained.question),
        len(streamed["question"]),
    ]
    assert buckets["abstained"].data["sample"] == [0.0, 1.0, 0.0]
    assert buckets["citations"].data["sample"] == [len(answered.citations), 0.0, len(streamed["citations"])]
    top1 = buckets["top1_score"].data["sample"]
    assert top1[0] == pytest.approx(
        max(c.score for c in answered.citations), abs=1e-3
    )  # citations round to 3 places and top1[1] < svc.settings.min_relevance
    assert buckets["feedback_rating"].data["sample"] == [5.0]


def test_questions_off_the_documents_raise_a_drift_alert(service) -> None:
    clock = Clock()
    svc, monitor = service(clock=clock, min_current=6, min_reference=6)
    for q in ON_TOPIC * 2:
        svc.ask(q, ADMIN)
    assert monitor.freeze_reference(DRIFT_STREAM, label="handbook")
    clock.t += 3600
    for q in ON_TOPIC:
        svc.ask(q.lower(), ADMIN)
    calm = {s.feature: s.status for s in monitor.status()}
    assert calm["abstained"] == "ok" and calm["top1_score"] != "alert"
    clock.t += 24 * 3600  # a day later, users ask about something else
    for q in OFF_TOPIC:
        svc.ask(q, ADMIN)
    shifted = {s.feature: s for s in monitor.status()}
    assert shifted["abstained"].status == "alert" and shifted["top1_score"].status == "alert"
    assert shifted["abstained"].current_n == len(OFF_TOPIC)


def test_a_failing_monitor_never_costs_an_answer(service, caplog) -> None:
    class Unreachable(DriftMonitor):
        def record_many(self, stream, features) -> None:
            raise ConnectionError("metadata database went away")

    svc, _ = service(drift_factory=Unreachable)
    answer = svc.ask("Where do visitors park?", ADMIN)
    assert not answer.abstained and answer.citations
    assert "recording drift values of stream rag failed" in caplog.text


def test_the_api_records_through_a_buffer_written_when_the_service_closes(service, tmp_path: Path) -> None:
    svc, monitor = service()
    svc.drift = BufferedRecorder(monitor, flush_every_s=3600)
    svc.ask("Where do visitors park?", ADMIN)
    assert monitor.drift_store.buckets(stream=DRIFT_STREAM) == []  # no database write on the answer's path
    svc.close()
    reopened = DriftMonitor(MetadataStore(svc.settings.resolved_database_url))
    assert {b.feature for b in reopened.drift_store.buckets(stream=DRIFT_STREAM)} >= {"query_length", "abstained"}
    reopened.drift_store.store.close()


def test_the_api_asks_for_a_reference_for_its_models(tmp_path: Path) -> None:
    import rag.api
    from shared.auth import KeyRegistry
    from shared.context import AppContext

    settings = Settings(home=tmp_path / "home")
    for _ in range(2):  # a restart with the same models asks nothing new
        ctx = AppContext.build(settings, keys=KeyRegistry([]), metrics=False)
        ctx.plugins.append(rag.api.plugin(ctx))
        ctx.close()
    monitor = DriftMonitor(MetadataStore(settings.resolved_database_url))
    requests = monitor.drift_store.open_requests(DRIFT_STREAM)
    assert [r.label for r in requests] == [drift_reference_label(settings)]
    assert "all-MiniLM-L6-v2" in requests[0].label and "extractive" in requests[0].label
    monitor.drift_store.store.close()
