"""The durable outbox: frames survive restarts and kill -9, the size bound evicts oldest first."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edge.outbox import Outbox, OutboxFull

REPO = Path(__file__).resolve().parents[2]


def jpeg_like(n: int, seed: int = 0) -> bytes:
    return b"\xff\xd8\xff" + hashlib.sha256(str(seed).encode()).digest() * (n // 32 + 1)


def test_put_peek_ack_roundtrip_in_order(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "ob")
    ids = [box.put(jpeg_like(100, i), {"reason": f"r{i}", "predictions": [{"cls": i}]}) for i in range(3)]
    assert len(set(ids)) == 3 and all(len(i) == 32 for i in ids)
    items = box.peek(10)
    assert [i.frame_id for i in items] == ids
    assert items[1].meta == {"reason": "r1", "predictions": [{"cls": 1}]}
    assert items[1].read() == jpeg_like(100, 1)
    assert box.ack(ids[0]) is True
    assert box.ack(ids[0]) is False
    assert [i.frame_id for i in box.peek(10)] == ids[1:]
    assert not (tmp_path / "ob" / "images" / f"{ids[0]}.jpg").exists()
    assert box.stats().pending == 2


def test_frames_survive_reopening(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "ob")
    fid = box.put(jpeg_like(5000), {"k": "v"})
    box.close()
    again = Outbox(tmp_path / "ob")
    (item,) = again.peek(5)
    assert (item.frame_id, item.meta, item.read()) == (fid, {"k": "v"}, jpeg_like(5000))


def test_sqlite_is_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "ob")
    box.put(b"x", {})
    con = sqlite3.connect(tmp_path / "ob" / "outbox.db")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert box._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_item_bound_evicts_oldest_and_reports_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    box = Outbox(tmp_path / "ob", max_items=3, max_bytes=None)
    ids = [box.put(jpeg_like(10, i), {"i": i}) for i in range(3)]
    with caplog.at_level(logging.WARNING, logger="edge.outbox"):
        stored = box.store(jpeg_like(10, 3), {"i": 3})
    assert stored.evicted == (ids[0],)
    assert box.evicted_total == 1 and box.stats().evicted_total == 1
    assert [i.meta["i"] for i in box.peek(10)] == [1, 2, 3]
    assert "outbox full" in caplog.text and ids[0] in caplog.text
    assert not (tmp_path / "ob" / "images" / f"{ids[0]}.jpg").exists()


def test_byte_bound_evicts_as_many_as_needed_dead_letters_first(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "ob", max_items=None, max_bytes=1000)
    ids = [box.put(jpeg_like(300, i), {"i": i}) for i in range(3)]  # ~900 bytes
    box.dead_letter(ids[1], "HTTP 422: bad meta")
    stored = box.store(jpeg_like(500, 9), {"i": 9})
    assert stored.evicted == (ids[1], ids[0])  # the dead letter goes first, then the oldest
    assert [i.meta["i"] for i in box.peek(10)] == [2, 9]
    assert box.stats().bytes <= 1000
    with pytest.raises(OutboxFull, match="exceeds the outbox byte limit"):
        box.put(b"x" * 1001, {})


def test_defer_and_dead_letter_change_what_is_due(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "ob", clock=lambda: 100.0)
    a, b, c = (box.put(jpeg_like(10, i), {}) for i in range(3))
    box.defer(a, until=150.0, error="connection refused")
    box.dead_letter(b, "HTTP 400: nope")
    assert [i.frame_id for i in box.due(10, now=100.0)] == [c]
    assert [i.frame_id for i in box.due(10, now=150.0)] == [a, c]
    assert box.get(a).attempts == 1 and box.get(a).last_error == "connection refused"
    (dead,) = box.dead_letters()
    assert (dead.frame_id, dead.state, dead.last_error) == (b, "dead", "HTTP 400: nope")
    assert box.stats().pending == 2 and box.stats().dead == 1
    assert box.next_due_at() == 0.0


def test_orphans_of_an_interrupted_write_are_removed_at_open(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "ob")
    keep = box.put(jpeg_like(50), {})
    box.close()
    images = tmp_path / "ob" / "images"
    (images / "0123456789abcdef0123456789abcdef.jpg").write_bytes(b"written, row never committed")
    (images / "fedcba9876543210fedcba9876543210.jpg.tmp").write_bytes(b"half")
    Outbox(tmp_path / "ob")
    assert sorted(p.name for p in images.iterdir()) == [f"{keep}.jpg"]


def test_a_row_whose_image_is_damaged_is_dropped_not_served(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "ob")
    good, bad = box.put(jpeg_like(50, 1), {}), box.put(jpeg_like(50, 2), {})
    box.close()
    (tmp_path / "ob" / "images" / f"{bad}.jpg").write_bytes(b"short")
    assert [i.frame_id for i in Outbox(tmp_path / "ob").peek(10)] == [good]


CHILD = textwrap.dedent(
    """
    import hashlib, os, sys
    from pathlib import Path
    from edge.outbox import Outbox

    box = Outbox(Path(sys.argv[1]), max_items=None, max_bytes=None)
    i = 0
    while True:
        data = os.urandom(20_000 + (i * 7919) % 30_000)
        fid = box.put(data, {"i": i})
        # printed only after put() returned: these frames were acknowledged
        sys.stdout.write(f"{fid} {hashlib.sha256(data).hexdigest()} {i}\\n")
        sys.stdout.flush()
        i += 1
    """
)


@pytest.mark.parametrize("kill_after", [5, 23])
def test_kill_9_mid_way_loses_no_acknowledged_frame_and_leaves_no_partial_row(tmp_path: Path, kill_after: int) -> None:
    root = tmp_path / "ob"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=env
    )
    acked: dict[str, str] = {}
    try:
        assert child.stdout is not None
        while len(acked) < kill_after:
            line = child.stdout.readline().decode()
            assert line, f"child died: {child.stderr.read().decode() if child.stderr else ''}"
            fid, sha, _ = line.split()
            acked[fid] = sha
        os.kill(child.pid, signal.SIGKILL)  # while it is writing the next frames
        child.wait(timeout=10)
        rest = child.stdout.read().decode()
    finally:
        if child.poll() is None:
            child.kill()
    for line in rest.splitlines():  # acknowledged between our last read and the kill
        if line.count(" ") == 2:
            fid, sha, _ = line.split()
            acked[fid] = sha
    assert child.returncode == -signal.SIGKILL

    box = Outbox(root, max_items=None, max_bytes=None)
    items = {i.frame_id: i for i in box.peek(10_000)}
    for fid, sha in acked.items():  # every acknowledged put is intact
        assert fid in items, f"acknowledged frame {fid} lost"
        assert hashlib.sha256(items[fid].read()).hexdigest() == sha
    for item in items.values():  # no partial row: each row has its whole image
        assert item.path.stat().st_size == item.size
    assert len(items) - len(acked) <= 1  # at most the put in flight committed unreported
    on_disk = {p.name for p in (root / "images").iterdir()}
    assert on_disk == {f"{fid}.jpg" for fid in items}  # no orphans or temp files left
    assert sorted(i.meta["i"] for i in items.values()) == list(range(len(items)))
