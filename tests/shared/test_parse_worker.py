"""The parse worker: a child process per pipeline that parses one file at a time, bounded in time.

What a user of ingestion notices: a file that takes too long, or kills its parser, becomes a
dead letter naming the limit, the next file parses normally, and a shutdown does not wait for
a parse to finish.
"""

from __future__ import annotations

import threading
import time

import parse_jobs
import pytest

from shared.ingestion import Cancelled, Rejected
from shared.ingestion.worker import ParseWorker


@pytest.fixture
def worker():
    w = ParseWorker(timeout_s=5.0)
    yield w
    w.close()


def test_runs_in_a_child_and_keeps_it_between_calls(worker: ParseWorker) -> None:
    import os

    assert worker.run(parse_jobs.add, 2, 3) == 5
    child = worker.run(parse_jobs.pid)
    assert child != os.getpid()
    assert worker.run(parse_jobs.pid) == child


def test_a_rejection_in_the_child_reaches_the_caller(worker: ParseWorker) -> None:
    with pytest.raises(Rejected) as err:
        worker.run(parse_jobs.reject, "not a PDF")
    assert err.value.reason == "not a PDF"
    assert worker.run(parse_jobs.add, 1, 1) == 2


def test_a_parse_over_the_time_limit_is_killed_and_named() -> None:
    w = ParseWorker(timeout_s=0.5, limit_name="LOOPLINE_PARSE_TIMEOUT_S")
    try:
        child = w.run(parse_jobs.pid)
        t0 = time.monotonic()
        with pytest.raises(Rejected) as err:
            w.run(parse_jobs.sleep, 60)
        assert time.monotonic() - t0 < 10
        assert "0.5 s" in err.value.reason and "LOOPLINE_PARSE_TIMEOUT_S" in err.value.reason
        assert w.run(parse_jobs.pid) != child, "the stuck child must be replaced"
        assert w.run(parse_jobs.add, 2, 2) == 4
    finally:
        w.close()


def test_a_child_that_dies_is_a_rejection_not_a_hang(worker: ParseWorker) -> None:
    t0 = time.monotonic()
    with pytest.raises(Rejected) as err:
        worker.run(parse_jobs.die)
    assert time.monotonic() - t0 < 4
    assert "died" in err.value.reason
    assert worker.run(parse_jobs.add, 3, 4) == 7


def test_stop_abandons_a_running_parse_at_once(worker: ParseWorker) -> None:
    worker.run(parse_jobs.add, 0, 0)  # the child is up
    got: list[BaseException] = []

    def parse() -> None:
        try:
            worker.run(parse_jobs.sleep, 60)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            got.append(exc)

    t = threading.Thread(target=parse)
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    worker.stop()
    t.join(timeout=5)
    assert not t.is_alive() and time.monotonic() - t0 < 3
    assert len(got) == 1 and isinstance(got[0], Cancelled)
    with pytest.raises(Cancelled):
        worker.run(parse_jobs.add, 1, 2)
