"""A collection made on a Qdrant cluster carries the configured shard number and replication factor.

No Qdrant server can be installed here (qdrant-client's local mode ignores both), so this checks
what qdrant-client sends: a recording HTTP endpoint answers the few calls a collection's creation
makes, as Qdrant 1.16 does, and the test reads the body Qdrant would have received.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from shared.config import Settings


class _Recorder(BaseHTTPRequestHandler):
    calls: list[tuple[str, str, dict]] = []

    def _answer(self, result: object) -> None:
        body = json.dumps({"result": result, "status": "ok", "time": 0.0}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "":
            body = json.dumps({"title": "qdrant - vector search engine", "version": "1.16.0"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self._answer({"exists": False})

    def do_PUT(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.calls.append(("PUT", self.path, json.loads(self.rfile.read(length) or b"{}")))
        self._answer(True if self.path.count("/") == 2 else {"operation_id": 1, "status": "completed"})

    def log_message(self, *args: object) -> None:
        pass


def test_shards_and_replicas_reach_the_cluster(tmp_path) -> None:  # noqa: ANN001
    from rag.vectorstore.base import CollectionInfo
    from rag.vectorstore.qdrant_server import QdrantServerStore

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = Settings(
            home=tmp_path, qdrant_url=f"http://127.0.0.1:{server.server_address[1]}", qdrant_shards=6, qdrant_replicas=2
        )
        QdrantServerStore.from_settings(settings).create_collection(CollectionInfo(embedding_model="m", dim=4))
    finally:
        server.shutdown()
    [(_, path, body)] = [c for c in _Recorder.calls if c[1].rstrip("/") == f"/collections/{settings.collection}"]
    assert body["shard_number"] == 6 and body["replication_factor"] == 2
    assert body["metadata"] == {"embedding_model": "m", "dim": 4}
    unset = Settings(home=tmp_path)
    assert (unset.qdrant_shards, unset.qdrant_replicas) == (None, None), "Qdrant's own defaults unless configured"
