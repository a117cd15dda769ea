"""`GET /v1/sources`: users see how fresh the sources they can read are, and only those.

Three folders are ingested with different reading groups through the real service (embedded
stores, the bundled model); one was last synced 30 hours ago, past the default 24 h SLO.
What each user should see follows from the folders' groups written here.
"""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

import rag.api
from shared.auth import KeyRegistry, UserEntry
from shared.server import create_app
from tests.helpers.run_records import backdate

FOLDERS: dict[str, tuple[list[str], float]] = {  # folder → (reading groups, hours since its sync)
    "engineering": (["engineering"], 30.0),
    "public": (["public"], 1.0),
    "people": (["people-ops"], 2.0),
}
USERS = {"ada": (["engineering"], False), "gus": ([], False), "root": ([], True)}


def hdr(user: str) -> dict[str, str]:
    return {"X-API-Key": f"source-test-key-{user}"}


def test_each_user_sees_the_freshness_of_their_own_sources(make_service, tmp_path: Path) -> None:
    svc = make_service()
    source_of = {}
    for folder, (groups, hours) in FOLDERS.items():
        root = tmp_path / "docs" / folder
        root.mkdir(parents=True)
        (root / "note.md").write_text(f"# {folder} note\n\nThe {folder} team keeps its notes here.\n")
        (root / "faq.md").write_text(f"# {folder} FAQ\n\nQuestions the {folder} team hears often.\n")
        run = svc.ingest(root, groups)
        assert run.status == "succeeded", run
        backdate(svc.metadata, run.run_id, hours)
        source_of[folder] = folder  # users see a source's name, never the server's paths

    keys = KeyRegistry([UserEntry(name=n, key=hdr(n)["X-API-Key"], groups=g, admin=a) for n, (g, a) in USERS.items()])
    app = create_app(svc.settings, plugins=[lambda ctx: rag.api.plugin(ctx, service=svc)], keys=keys)
    client = TestClient(app)

    def seen(user: str) -> dict[str, dict]:
        r = client.get("/v1/sources", headers=hdr(user))
        assert r.status_code == 200, r.text
        return {s["source"]: s for s in r.json()}

    ada, gus, root = seen("ada"), seen("gus"), seen("root")
    assert set(ada) == {source_of["engineering"], source_of["public"]}
    assert set(gus) == {source_of["public"]}
    assert set(root) == set(source_of.values())

    eng = ada[source_of["engineering"]]
    assert eng["breached"] and eng["state"] == "stale" and 29.9 < eng["age_s"] / 3600 < 30.1
    assert eng["slo_s"] == 24 * 3600 and eng["documents"] == 2
    pub = gus[source_of["public"]]
    assert not pub["breached"] and pub["state"] == "fresh" and pub["last_success_at"] is not None
    assert str(tmp_path) not in client.get("/v1/sources", headers=hdr("ada")).text
    assert str(tmp_path) not in client.get("/v1/documents", headers=hdr("ada")).text

    assert client.get("/v1/sources").status_code == 401
