"""Alerts as an operator meets them: raised once, delivered despite a flaky receiver, acted upon.

Webhooks are delivered to a real HTTP receiver (stdlib http.server on 127.0.0.1) that
refuses the first tries; only the backoff sleep is injected so the test does not wait.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest

from shared.config import Settings
from shared.metadata.store import MetadataStore
from shared.monitoring.actions import ActionConfig, ActionDeps, build_actions
from shared.monitoring.alert_store import AlertStore
from shared.monitoring.alerts import AlertManager
from shared.monitoring.drift import DriftMonitor
from shared.monitoring.monitoring_config import DriftThresholds, MonitoringConfig, load_monitoring_config
from shared.monitoring.rules import Monitor, drift_statuses
from shared.monitoring.webhooks import WebhookSink

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC).timestamp()
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Receiver:
    url: str = ""
    tries: list[dict] = field(default_factory=list)  # every POST body, refused or not
    accepted: list[dict] = field(default_factory=list)


@contextmanager
def webhook_receiver(refuse_first: int = 0, refusal: int = 503) -> Iterator[Receiver]:
    """A webhook receiver answering `refusal` to its first `refuse_first` POSTs, then 200."""
    got = Receiver()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                got.tries.append(body)
                ok = len(got.tries) > refuse_first
                if ok:
                    got.accepted.append(body)
            self.send_response(200 if ok else refusal)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    got.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield got
    finally:
        server.shutdown()
        server.server_close()


class MovingClock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_the_same_problem_is_raised_once_and_counted(store: MetadataStore) -> None:
    clock = MovingClock()
    manager = AlertManager(store, clock=clock)
    first = manager.raise_alert("run_failed", "folder:/a", "critical", "ingest failed", {"run_id": 1})
    clock.t += 600
    again = manager.raise_alert("run_failed", "folder:/a", "critical", "ingest failed again", {"run_id": 2})
    other = manager.raise_alert("run_failed", "folder:/b", "critical", "ingest failed", {"run_id": 3})

    assert first is not None and other is not None
    assert again is None  # de-duplicated: nobody is told twice
    open_ = {a.key: a for a in manager.open_alerts()}
    assert set(open_) == {"folder:/a", "folder:/b"}
    a = open_["folder:/a"]
    assert a.count == 2 and a.id == first.id
    assert (a.last_seen_at - a.raised_at).total_seconds() == 600
    assert a.details == {"run_id": 2} and a.message == "ingest failed again"  # the latest sighting


def test_a_resolved_alert_is_kept_and_a_recurrence_opens_a_new_one(store: MetadataStore) -> None:
    clock = MovingClock()
    manager = AlertManager(store, clock=clock)
    first = manager.raise_alert("freshness", "folder:/a", "warning", "stale", {})
    clock.t += 3600
    closed = manager.resolve("freshness", "folder:/a")
    assert manager.resolve("freshness", "folder:/a") is None  # nothing left to close
    again = manager.raise_alert("freshness", "folder:/a", "warning", "stale again", {})

    assert closed is not None and closed.status == "resolved"
    assert (closed.resolved_at - closed.raised_at).total_seconds() == 3600
    assert again is not None and again.id != first.id
    history = AlertStore(store).recent_alerts()
    assert [(h.id, h.status) for h in history] == [(again.id, "open"), (first.id, "resolved")]


def test_webhook_delivery_retries_with_backoff_until_the_receiver_accepts(tmp_path: Path) -> None:
    store = MetadataStore(f"sqlite:///{tmp_path / 'm.db'}")
    slept: list[float] = []
    with webhook_receiver(refuse_first=2) as hook, httpx.Client(timeout=5) as client:
        sink = WebhookSink(hook.url, client=client, attempts=4, backoff_s=0.5, sleep=slept.append)
        manager = AlertManager(store, sinks=[sink], clock=MovingClock())
        alert = manager.raise_alert("run_failed", "folder:/a", "critical", "ingest run #1 failed: boom", {"run_id": 1})
        manager.raise_alert("run_failed", "folder:/a", "critical", "ingest run #2 failed: boom", {"run_id": 2})

    assert alert is not None
    assert len(hook.tries) == 3 and slept == [0.5, 1.0]  # two refusals, waits doubling
    assert len(hook.accepted) == 1  # arrived once; the repeat sighting sent nothing
    body = hook.accepted[0]
    assert {k: body[k] for k in ("kind", "key", "severity", "message", "details")} == {
        "kind": "run_failed",
        "key": "folder:/a",
        "severity": "critical",
        "message": "ingest run #1 failed: boom",
        "details": {"run_id": 1},
    }
    assert datetime.fromisoformat(body["raised_at"]).timestamp() == T0
    store.close()


def test_a_dead_or_refusing_receiver_never_breaks_raising(tmp_path: Path) -> None:
    store = MetadataStore(f"sqlite:///{tmp_path / 'm.db'}")
    slept: list[float] = []
    with (
        webhook_receiver(refuse_first=99) as down,
        webhook_receiver(refuse_first=99, refusal=400) as refusing,
        httpx.Client(timeout=5) as client,
    ):
        sinks = [
            WebhookSink(down.url, client=client, attempts=3, backoff_s=1, sleep=slept.append),
            WebhookSink(refusing.url, client=client, attempts=3, backoff_s=1, sleep=slept.append),
        ]
        alert = AlertManager(store, sinks=sinks).raise_alert("run_stuck", "train:x", "warning", "stuck", {})

    assert alert is not None and alert.status == "open"
    assert len(down.tries) == 3 and not down.accepted  # gave up after its tries
    assert len(refusing.tries) == 1  # a 4xx is the receiver's verdict: not retried
    assert slept == [1, 2]
    store.close()


def test_resolving_tells_the_receiver(tmp_path: Path) -> None:
    store = MetadataStore(f"sqlite:///{tmp_path / 'm.db'}")
    with webhook_receiver() as hook, httpx.Client(timeout=5) as client:
        manager = AlertManager(store, sinks=[WebhookSink(hook.url, client=client)])
        manager.raise_alert("freshness", "folder:/a", "warning", "stale", {})
        manager.resolve("freshness", "folder:/a")
    assert [(b["key"], b["status"]) for b in hook.accepted] == [("folder:/a", "open"), ("folder:/a", "resolved")]
    store.close()


def test_a_drift_alert_on_a_vision_stream_requests_retraining_once(store: MetadataStore) -> None:
    requests = AlertStore(store)
    actions = build_actions(
        [ActionConfig(type="retrain", kind="drift", streams=["vision*"])], ActionDeps(alerts=requests)
    )
    manager = AlertManager(store, actions=actions)

    manager.raise_alert("drift", "vision:line-1/brightness", "warning", "PSI 0.4", {"stream": "vision:line-1"})
    manager.raise_alert("drift", "vision:line-1/contrast", "warning", "PSI 0.3", {"stream": "vision:line-1"})
    manager.raise_alert("drift", "rag:queries/query_length", "warning", "PSI 0.5", {"stream": "rag:queries"})
    manager.raise_alert("freshness", "vision:line-2", "warning", "stale", {})

    pending = requests.open_retraining_requests()
    assert [r.stream for r in pending] == ["vision:line-1"]  # one per stream while open; no RAG, no freshness
    assert "brightness" in pending[0].reason

    taken = requests.consume(pending[0].id, by="retrain-loop@host")
    assert taken is not None and taken.status == "consumed" and taken.consumed_by == "retrain-loop@host"
    assert requests.consume(pending[0].id, by="another-loop") is None  # exactly one consumer wins
    assert requests.open_retraining_requests() == []

    manager.resolve("drift", "vision:line-1/brightness")
    manager.raise_alert("drift", "vision:line-1/brightness", "warning", "PSI 0.5", {"stream": "vision:line-1"})
    assert [r.stream for r in requests.open_retraining_requests()] == ["vision:line-1"]  # drifted again


def test_unknown_action_types_are_reported_when_the_config_loads(tmp_path: Path) -> None:
    (tmp_path / "monitoring.yaml").write_text(
        "actions:\n  - {type: retrian, kind: drift}\n  - {type: retrain, kind: drift, stream: [vision]}\n"
    )
    with pytest.raises(ValueError) as err:
        load_monitoring_config(Settings(home=tmp_path))
    msg = str(err.value)
    assert "monitoring.yaml" in msg
    assert "unknown type 'retrian'" in msg and "known: retrain" in msg
    assert "actions[1]" in msg and "stream" in msg  # a misspelt parameter is caught too


def test_webhooks_come_from_the_file_and_the_environment(tmp_path: Path) -> None:
    (tmp_path / "monitoring.yaml").write_text("webhooks:\n  urls: [http://a.example/hook]\n  attempts: 2\n")
    config = load_monitoring_config(Settings(home=tmp_path, alert_webhooks="http://b.example/x, http://a.example/hook"))
    assert config.webhooks.urls == ["http://a.example/hook", "http://b.example/x"]
    assert config.webhooks.attempts == 2


def test_a_brightness_shift_on_one_camera_line_raises_one_drift_alert_and_a_retraining_request(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    store = MetadataStore(f"sqlite:///{tmp_path / 'm.db'}")
    clock = MovingClock()
    drift = DriftMonitor(store, clock=clock)
    for line in ("vision:line-1", "vision:line-2"):
        drift.record(line, "brightness", rng.normal(0.5, 0.1, 800).tolist())
        drift.freeze_reference(line, label="model v3")
    clock.t += 2 * 3600
    drift.record("vision:line-1", "brightness", rng.normal(0.62, 0.1, 400).tolist())  # the lamp got brighter
    drift.record("vision:line-2", "brightness", rng.normal(0.5, 0.1, 400).tolist())

    monitor = Monitor(store, MonitoringConfig(), clock=clock)
    report = monitor.check()

    drifted = [a for a in report.raised if a.kind == "drift"]
    assert [a.key for a in drifted] == ["vision:line-1/brightness"]
    assert drifted[0].details["psi"] >= 0.25 and "PSI" in drifted[0].message
    assert [r.stream for r in AlertStore(store).open_retraining_requests()] == ["vision:line-1"]
    monitor.close()
    store.close()


def test_the_drift_rule_runs_the_real_drift_monitor_with_the_configured_thresholds(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    store = MetadataStore(f"sqlite:///{tmp_path / 'm.db'}")
    clock = MovingClock()
    drift = DriftMonitor(store, clock=clock)
    drift.record("vision:line-1", "brightness", rng.normal(0.5, 0.1, 800).tolist())
    drift.freeze_reference("vision:line-1", label="model v3")
    clock.t += 2 * 3600
    drift.record("vision:line-1", "brightness", rng.normal(0.54, 0.1, 400).tolist())  # a moderate shift

    statuses = drift_statuses(store, DriftThresholds(), clock)
    assert [(s.stream, s.feature, s.status) for s in statuses] == [("vision:line-1", "brightness", "warn")]
    psi = statuses[0].psi
    assert 0.1 <= psi < 0.25

    with Monitor(store, MonitoringConfig(), clock=clock) as default:
        assert [a for a in default.check().raised if a.kind == "drift"] == []  # warn band: no alert
    strict = MonitoringConfig(drift=DriftThresholds(warn=psi / 4, alert=psi / 2))
    with Monitor(store, strict, clock=clock) as monitor:
        drifted = [a for a in monitor.check().raised if a.kind == "drift"]
    assert [a.key for a in drifted] == ["vision:line-1/brightness"]
    assert drifted[0].details["psi"] == psi and drifted[0].details["alert"] == psi / 2
    store.close()


def test_a_broken_drift_module_fails_the_monitoring_check_loudly() -> None:
    """Without its drift module the check must not run quietly without drift (it once returned [])."""
    probe = (
        "import importlib.abc, sys\n"
        "class Gone(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'shared.monitoring.drift':\n"
        "            raise ModuleNotFoundError('drift module broken', name=name)\n"
        "sys.meta_path.insert(0, Gone())\n"
        "from shared.monitoring.monitoring_config import DriftThresholds\n"
        "from shared.monitoring.rules import drift_statuses\n"
        "print('drift statuses:', drift_statuses(None, DriftThresholds()))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode != 0, proc.stdout
    assert "ModuleNotFoundError: drift module broken" in proc.stderr, proc.stderr[-2000:]


@dataclass
class Status:
    """A drift status as `DriftMonitor.status()` reports it (the fields the rules read)."""

    stream: str
    feature: str
    psi: float | None
    status: str
    reference_n: int = 1000
    current_n: int = 500


def test_a_drift_alert_stays_open_while_psi_is_in_the_warn_band_and_clears_when_ok(tmp_path: Path) -> None:
    store = MetadataStore(f"sqlite:///{tmp_path / 'm.db'}")
    seen: list[Status] = []
    monitor = Monitor(store, MonitoringConfig(), drift=lambda: seen)

    seen[:] = [Status("rag", "query_length", 0.4, "alert")]
    assert [a.key for a in monitor.check().raised] == ["rag/query_length"]
    seen[:] = [Status("rag", "query_length", 0.15, "warn")]
    assert monitor.check().resolved == []  # hysteresis: not flapping around the alert threshold
    seen[:] = [Status("rag", "query_length", None, "no_data")]
    assert monitor.check().resolved == []  # no evidence either way
    seen[:] = [Status("rag", "query_length", 0.02, "ok")]
    assert [a.key for a in monitor.check().resolved] == ["rag/query_length"]
    assert AlertStore(store).open_retraining_requests() == []  # a RAG stream has no model to retrain
    monitor.close()
    store.close()
