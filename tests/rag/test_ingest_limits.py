"""Small files that cost a lot: each is a dead letter naming its limit, and the service stays responsive.

Found by a probe: a 5 MB one-line Markdown file took 459 s (about 10,000 chunks to embed) and a
300 KB DOCX that inflates to 100 MB kept growing memory, while /healthz stalled for seconds.
Here the limits are set small so the files stay small; the mechanism is the one that runs
with the defaults.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
from docfiles import write_docx_bomb
from live_server import serve_in_thread

import rag.api
from shared.auth import KeyRegistry, UserEntry
from shared.server import create_app

GOOD = "# Ferries\n\nThe company ferry to the Bergen office leaves the fish market at 07:40.\n"


def sentences(n: int) -> str:
    return " ".join(
        f"Shelf {i} in aisle {i % 9} holds crates of kind {i}, checked every {i % 5 + 1} weeks." for i in range(n)
    )


def test_files_over_the_limits_are_dead_lettered_with_the_limit_named(make_service, tmp_path: Path) -> None:
    svc = make_service(max_unpacked_bytes=1_000_000, max_document_chars=100_000, max_document_chunks=10)
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a-ferries.md").write_text(GOOD)
    write_docx_bomb(folder / "bomb.docx", unpacked_bytes=3_000_000)
    (folder / "one-line.md").write_text("# Log\n\n" + "entry " * 40_000)  # 240,000 characters, one line
    (folder / "many-chunks.md").write_text("# Inventory\n\n" + sentences(150))  # under 100,000 characters
    assert len((folder / "many-chunks.md").read_text()) < 100_000

    run = svc.ingest(folder, ["public"])
    assert run.status == "partial" and run.added == 1 and run.failed == 3
    reasons = {d["path"]: d["reason"] for d in run.dead_letters}
    assert "LOOPLINE_MAX_UNPACKED_BYTES" in reasons["bomb.docx"] and "1,000,000" in reasons["bomb.docx"]
    assert "LOOPLINE_MAX_DOCUMENT_CHARS" in reasons["one-line.md"] and "100,000" in reasons["one-line.md"]
    assert "LOOPLINE_MAX_DOCUMENT_CHUNKS" in reasons["many-chunks.md"]
    assert {dl.path for dl in svc.metadata.dead_letters(run.run_id)} == set(reasons)
    assert svc.metadata.count_documents() == 1


def test_a_file_that_parses_too_long_is_killed_and_the_run_goes_on(make_service, tmp_path: Path) -> None:
    svc = make_service(parse_timeout_s=1.0, max_document_chars=10_000_000, max_document_chunks=1_000_000)
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a-ferries.md").write_text(GOOD)
    (folder / "b-huge.md").write_text("# Huge\n\n" + sentences(40_000))  # several seconds of chunking
    (folder / "c-canteen.md").write_text("# Canteen\n\nThe canteen serves fish soup on Thursdays.\n")
    t0 = time.monotonic()
    run = svc.ingest(folder, ["public"])
    assert time.monotonic() - t0 < 60
    assert run.added == 2 and [d["path"] for d in run.dead_letters] == ["b-huge.md"]
    assert "1 s" in run.dead_letters[0]["reason"] and "LOOPLINE_PARSE_TIMEOUT_S" in run.dead_letters[0]["reason"]


@pytest.mark.slow
def test_health_and_queries_answer_while_a_heavy_file_is_parsed(make_service, tmp_path: Path) -> None:
    # The heavy file parses for longer than the limit, so the run ends with it dead-lettered.
    svc = make_service(parse_timeout_s=6.0, max_document_chars=100_000_000, max_document_chunks=10_000_000)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "ferries.md").write_text(GOOD)
    assert svc.ingest(docs, ["public"]).added == 1
    heavy = tmp_path / "heavy"
    heavy.mkdir()
    (heavy / "huge.md").write_text("# Huge\n\n" + sentences(80_000))
    keys = KeyRegistry([UserEntry(name="root", key="limits-root-key-0123", admin=True)])
    app = create_app(
        svc.settings, plugins=[lambda ctx: rag.api.plugin(ctx, service=svc)], keys=keys, local_token="tok-0123456789"
    )
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        http.post("/v1/query", json={"question": "warm up"}, headers={"X-API-Key": "limits-root-key-0123"})
        done = threading.Event()
        result: list[httpx.Response] = []

        def ingest() -> None:
            with httpx.Client(base_url=url, timeout=120) as other:
                result.append(
                    other.post(
                        "/v1/admin/ingest?wait=true",
                        json={"path": str(heavy), "groups": ["public"]},
                        headers={"X-API-Key": "tok-0123456789"},
                    )
                )
            done.set()

        threading.Thread(target=ingest, daemon=True).start()
        deadline = time.monotonic() + 10
        while not svc.metadata.recent_runs(1) or svc.metadata.recent_runs(1)[0].status != "running":
            assert time.monotonic() < deadline, "the ingest did not start"
            time.sleep(0.05)
        time.sleep(0.5)  # the child is parsing now
        slowest = 0.0
        for _ in range(5):
            t0 = time.monotonic()
            assert http.get("/healthz").status_code == 200
            r = http.post(
                "/v1/query",
                json={"question": "When does the ferry leave?"},
                headers={"X-API-Key": "limits-root-key-0123"},
            )
            assert r.status_code == 200 and "07:40" in r.json()["answer"]
            slowest = max(slowest, time.monotonic() - t0)
        assert not done.is_set(), "the heavy ingest finished before the checks: make the file bigger"
        assert slowest < 3.0, f"health check and query took {slowest:.1f} s during the ingest"
        assert done.wait(60)
        run = result[0].json()
        assert run["failed"] == 1 and "LOOPLINE_PARSE_TIMEOUT_S" in run["dead_letters"][0]["reason"]
