"""One load level of `api_load`: locust users asking POST /v1/query, run in a child process.

    python -m evaluation.benchmarks.api_load_locustfile PLAN.json   (the key in LOOPLINE_BENCH_API_KEY)

A child of its own because importing locust monkey-patches the process with gevent; the parent
stays a plain process that starts and stops the server. Each user asks, waits for the answer
and asks again at once (a closed loop, no think time), so `users` is the number of requests in
flight. The level ends at `seconds` or after `max_requests` answers, whichever comes first
(no more than `max_requests` are sent); users then finish the request they are in (none is
cut off and counted as failed).

Every answer is kept (start, latency, status) through locust's request event, so the
percentiles are exact rather than locust's rounded buckets; locust's own median and p95 are
reported beside them. An answer counts as an error unless it is 200, JSON, and in the
`extractive` mode (an answer from an LLM would mean the load test measured something else).
The result, one JSON object, goes to stdout.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sys
import time
from pathlib import Path

import gevent
from locust import FastHttpUser, constant, task
from locust.env import Environment

from evaluation.benchmarks.api_load import KEY_ENV, QUERY_PATH, STOP_TIMEOUT_S

log = logging.getLogger(__name__)


class Asker(FastHttpUser):
    """A user who asks the next question as soon as the last one is answered."""

    wait_time = constant(0)
    questions: list[str] = []
    api_key = ""
    max_requests = 0
    issued = 0  # requests sent by all users of the level (gevent: one thread, no race)
    _counter = itertools.count()

    def on_start(self) -> None:
        # Users start at different questions and walk the list, so concurrent users ask different things.
        self._next = itertools.cycle(self.questions)
        for _ in range(next(Asker._counter) * 7 % len(self.questions)):
            next(self._next)

    @task
    def ask(self) -> None:
        if Asker.issued >= Asker.max_requests:  # the level has all its requests: wait to be stopped
            gevent.sleep(0.05)
            return
        Asker.issued += 1
        question = next(self._next)
        with self.client.post(
            QUERY_PATH,
            json={"question": question},
            headers={"X-API-Key": self.api_key},
            name=QUERY_PATH,
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {(resp.text or '')[:200]}")
                return
            try:
                body = resp.json()
            except ValueError:
                resp.failure("the answer is not JSON")
                return
            if body.get("mode") != "extractive":
                resp.failure(f"answered in mode {body.get('mode')!r}, not extractive: an LLM is configured")
                return
            resp.request_meta["context"] = {
                "server_ms": (body.get("timings") or {}).get("total_ms"),
                "abstained": bool(body.get("abstained")),
            }


def percentile(sorted_values: list[float], p: float) -> float | None:
    """The nearest-rank p-th percentile (0 < p <= 100) of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * p // 100))  # ceil(n * p / 100)
    return sorted_values[int(rank) - 1]


def run_level(host: str, key: str, questions: list[str], users: int, seconds: float, max_requests: int) -> dict:
    """Run `users` users against `host` until `seconds` pass or `max_requests` answers arrive."""
    Asker.questions, Asker.api_key, Asker._counter = questions, key, itertools.count()
    Asker.max_requests, Asker.issued = max_requests, 0
    env = Environment(user_classes=[Asker], host=host, stop_timeout=STOP_TIMEOUT_S, catch_exceptions=True)
    answers: list[tuple[float, float, bool, dict]] = []  # (start, latency ms, failed, context)
    failures: dict[str, int] = {}

    def on_request(
        start_time: float, response_time: float, exception: BaseException | None, context: dict, **_: object
    ) -> None:
        answers.append((start_time, response_time, exception is not None, context or {}))
        if exception is not None:
            failures[str(exception)[:300]] = failures.get(str(exception)[:300], 0) + 1

    env.events.request.add_listener(on_request)
    runner = env.create_local_runner()
    cpu0, t0 = os.times(), time.perf_counter()
    runner.start(users, spawn_rate=users)  # all users within the first second
    while time.perf_counter() - t0 < seconds and len(answers) < max_requests:
        gevent.sleep(0.05)
    stopped_at = time.perf_counter() - t0
    runner.quit()  # users finish the request they are in (stop_timeout)
    wall = time.perf_counter() - t0
    cpu1 = os.times()

    latencies = sorted(ms for _, ms, failed, _ in answers if not failed)
    server_ms = sorted(c["server_ms"] for _, _, failed, c in answers if not failed and c.get("server_ms") is not None)
    window = (max(s + ms / 1000 for s, ms, _, _ in answers) - min(s for s, _, _, _ in answers)) if answers else 0.0
    total = env.stats.total
    return {
        "users": users,
        "requests": len(answers),
        "errors": sum(1 for _, _, failed, _ in answers if failed),
        "failures": failures,
        "abstained": sum(1 for _, _, failed, c in answers if not failed and c.get("abstained")),
        "seconds": round(window, 2),
        "stopped_by": "requests" if len(answers) >= max_requests else "time",
        "stopped_after_s": round(stopped_at, 2),
        "wall_s": round(wall, 2),
        "queries_per_s": round(len(latencies) / window, 2) if window > 0 else None,
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
        "max_ms": latencies[-1] if latencies else None,
        "server_p50_ms": percentile(server_ms, 50),
        "locust_p50_ms": total.get_response_time_percentile(0.5),
        "locust_p95_ms": total.get_response_time_percentile(0.95),
        "locust_requests": total.num_requests,
        "locust_failures": total.num_failures,
        "loadgen_cpu_s": round(cpu1.user + cpu1.system - cpu0.user - cpu0.system, 2),
    }


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    plan = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    result = run_level(
        plan["host"],
        os.environ[KEY_ENV],
        plan["questions"],
        int(plan["users"]),
        float(plan["seconds"]),
        int(plan["max_requests"]),
    )
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
