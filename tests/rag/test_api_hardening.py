"""What outside probes broke in the served Q&A API, each reproduced as the probe did it.

- A remote admin key may only ingest under LOOPLINE_INGEST_ROOTS: not /etc, not `..` out of
  a root, not through a symbolic link, not the service's own home; groups must be named.
  The local CLI's token (the machine's own user) is not limited.
- Uploads whose names sanitize alike never replace each other; the same name for other
  groups is refused (409) unless the caller asks for the replacement.
- Users see a source's name, never the server's folders.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import rag.api
from rag.service import RagService
from shared.auth import KeyRegistry, UserEntry
from shared.config import Settings
from shared.server import create_app

USERS = {"hana": (["hr"], False), "sal": (["sales"], False), "gus": ([], False), "root": ([], True)}
LOCAL_TOKEN = "local-cli-token-0123456789"


def hdr(user: str) -> dict[str, str]:
    return {"X-API-Key": LOCAL_TOKEN if user == "local" else f"hardening-key-{user}-0123456789"}


@dataclass
class Api:
    svc: RagService
    client: TestClient
    allowed: Path  # the one ingest root
    outside: Path  # a folder next to it, not a root

    def ask(self, user: str, question: str) -> dict:
        r = self.client.post("/v1/query", json={"question": question}, headers=hdr(user))
        assert r.status_code == 200, r.text
        return r.json()

    def ingest(self, user: str, path: Path | str, groups: list[str] | None = None):  # noqa: ANN201
        body: dict = {"path": str(path)}
        if groups is not None:
            body["groups"] = groups
        return self.client.post("/v1/admin/ingest?wait=true", json=body, headers=hdr(user))

    def upload(self, name: str, text: str, groups: str, **form: str):  # noqa: ANN201
        return self.client.post(
            "/v1/documents",
            files={"file": (name, text.encode(), "text/markdown")},
            data={"groups": groups, **form},
            headers=hdr("root"),
        )

    def documents(self, user: str) -> list[dict]:
        return self.client.get("/v1/documents", headers=hdr(user)).json()


def make_api(embedder, base: Path, **settings) -> Api:  # noqa: ANN001
    allowed, outside = base / "allowed", base / "outside"
    allowed.mkdir(parents=True)
    outside.mkdir(parents=True)
    svc = RagService(
        Settings(home=base / "home", ingest_roots=str(allowed), **settings), embedder_factory=lambda: embedder
    )
    keys = KeyRegistry([UserEntry(name=n, key=hdr(n)["X-API-Key"], groups=g, admin=a) for n, (g, a) in USERS.items()])
    app = create_app(
        svc.settings, plugins=[lambda ctx: rag.api.plugin(ctx, service=svc)], keys=keys, local_token=LOCAL_TOKEN
    )
    return Api(svc, TestClient(app), allowed, outside)


@pytest.fixture
def api(embedder, tmp_path: Path) -> Iterator[Api]:
    made = make_api(embedder, tmp_path)
    yield made
    made.svc.close()


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder / name


SECRET = "# Server secrets\n\nThe vault password of the server is tangerine-walrus-42.\n"
CANTEEN = "# Canteen\n\nThe Bergen canteen serves fish soup every Thursday.\n"


# --- ingesting server paths over the API ----------------------------------------------
def test_a_remote_admin_cannot_ingest_outside_the_roots(api: Api) -> None:
    write(api.outside, "secrets.md", SECRET)
    write(api.outside, "other-notes.md", CANTEEN)
    (api.allowed / "handbook").mkdir()
    os.symlink(api.outside, api.allowed / "handbook" / "linked")
    os.symlink(api.outside, api.allowed / "shortcut")
    sources_before = api.client.get("/v1/sources", headers=hdr("gus")).json()
    attempts = [
        "/etc",
        str(api.outside),
        str(api.outside / "secrets.md"),
        f"{api.allowed}/../outside",
        str(api.allowed / "shortcut"),  # a link at the top of the root
        str(api.allowed / "handbook" / "linked"),  # a link further down
        str(api.svc.settings.home),
        "relative/path",
    ]
    for path in attempts:
        r = api.ingest("root", path, ["public"])
        assert r.status_code == 403, (path, r.text)
        assert "passwd" not in r.text and "other-notes.md" not in r.text  # nothing listed that was not asked for
    assert api.documents("root") == []
    assert api.client.get("/v1/sources", headers=hdr("gus")).json() == sources_before == []
    assert "tangerine" not in api.ask("gus", "What is the vault password of the server?")["answer"]


def test_without_roots_remote_ingest_is_off(embedder, tmp_path: Path) -> None:
    api = make_api(embedder, tmp_path)
    api.svc.settings.ingest_roots = ""
    try:
        write(api.allowed, "canteen.md", CANTEEN)
        r = api.ingest("root", api.allowed, ["public"])
        assert r.status_code == 403 and "LOOPLINE_INGEST_ROOTS" in r.json()["detail"]
        assert api.documents("root") == []
    finally:
        api.svc.close()


def test_the_service_home_inside_a_root_is_refused(embedder, tmp_path: Path) -> None:
    """A root that holds the home: ingesting the root would republish the uploads folder."""
    svc = RagService(
        Settings(home=tmp_path / "srv" / "home", ingest_roots=str(tmp_path / "srv")), embedder_factory=lambda: embedder
    )
    try:
        keys = KeyRegistry([UserEntry(name="root", key=hdr("root")["X-API-Key"], admin=True)])
        client = TestClient(create_app(svc.settings, plugins=[lambda ctx: rag.api.plugin(ctx, service=svc)], keys=keys))
        up = client.post(
            "/v1/documents",
            files={"file": ("pay.md", b"# Pay\n\nBands are secret.\n", "text/markdown")},
            data={"groups": "hr"},
            headers=hdr("root"),
        )
        assert up.status_code == 201
        for path in (tmp_path / "srv", tmp_path / "srv" / "home", tmp_path / "srv" / "home" / "uploads"):
            r = client.post(
                "/v1/admin/ingest?wait=true", json={"path": str(path), "groups": ["public"]}, headers=hdr("root")
            )
            assert r.status_code == 403, (path, r.text)
        assert [d.groups for d in svc.metadata.list_documents()] == [("hr",)]
    finally:
        svc.close()


def test_ingest_under_a_root_needs_the_groups_named(api: Api) -> None:
    folder = api.allowed / "canteen"
    write(folder, "canteen.md", CANTEEN)
    assert api.ingest("hana", folder, ["hr"]).status_code == 403  # not an admin
    r = api.ingest("root", folder)
    assert r.status_code == 422 and "groups" in r.text
    assert api.ingest("root", folder, []).status_code == 422
    assert api.ingest("root", api.allowed / "nope", ["hr"]).status_code == 404
    r = api.ingest("root", f"{api.allowed}/canteen/../canteen", ["hr"])
    assert r.status_code == 200, r.text
    assert r.json()["added"] == 1
    q = "What does the Bergen canteen serve on Thursday?"
    assert "fish soup" in api.ask("hana", q)["answer"]
    assert "fish soup" not in api.ask("sal", q)["answer"]
    assert "fish soup" not in api.ask("gus", q)["answer"]


def test_the_local_cli_token_ingests_what_its_user_can_read(api: Api) -> None:
    write(api.outside, "canteen.md", CANTEEN)
    r = api.ingest("local", api.outside, ["hr"])
    assert r.status_code == 200, r.text
    assert "fish soup" in api.ask("hana", "What does the Bergen canteen serve on Thursday?")["answer"]


# --- uploads --------------------------------------------------------------------------
def test_uploads_whose_names_sanitize_alike_do_not_replace_each_other(api: Api) -> None:
    hr = api.upload("hr/salary.md", "# Salary\n\nHR salary bands are reviewed every March.\n", "hr")
    sales = api.upload("sales/salary.md", "# Salary\n\nSales commission is paid every quarter.\n", "sales")
    assert hr.status_code == sales.status_code == 201, (hr.text, sales.text)
    assert hr.json()["document"]["id"] != sales.json()["document"]["id"]
    a = api.ask("hana", "When are salary bands reviewed?")
    assert "March" in a["answer"] and not a["abstained"]
    assert "quarter" in api.ask("sal", "When is sales commission paid?")["answer"]

    names = ("a\x00b.md", "a\nb.md", "a b.md", "a_b.md", "a?b.md")
    ids = []
    for name in names:
        r = api.upload(name, f"# Note\n\nThe note named {name!r} is about kayaks.\n", "public")
        assert r.status_code == 201, (name, r.text)
        assert r.json()["run"]["added"] == 1, name
        ids.append(r.json()["document"]["id"])
    assert len(set(ids)) == len(names)
    docs = api.documents("root")
    assert len({d["path"] for d in docs}) == len(docs) == 2 + len(names)


def test_the_same_name_for_other_groups_is_refused_unless_replace(api: Api) -> None:
    first = api.upload("plan.md", "# Plan\n\nThe HR plan hires two recruiters.\n", "hr")
    assert first.status_code == 201
    doc_id = first.json()["document"]["id"]
    r = api.upload("plan.md", "# Plan\n\nThe sales plan opens an office in Oslo.\n", "sales")
    assert r.status_code == 409 and "replace=true" in r.json()["detail"] and doc_id in r.json()["detail"]
    assert "recruiters" in api.ask("hana", "How many recruiters does the plan hire?")["answer"]
    assert [d["id"] for d in api.documents("sal")] == []

    r = api.upload("plan.md", "# Plan\n\nThe sales plan opens an office in Oslo.\n", "sales", replace="true")
    assert r.status_code == 201, r.text
    assert r.json()["document"]["id"] == doc_id and r.json()["document"]["groups"] == ["sales"]
    assert doc_id in {d["id"] for d in api.documents("sal")}
    assert doc_id not in {d["id"] for d in api.documents("hana")}


def test_users_see_source_names_not_server_paths(api: Api) -> None:
    folder = api.allowed / "handbook"
    write(folder, "canteen.md", CANTEEN)
    assert api.ingest("root", folder, ["public"]).status_code == 200
    assert api.upload("memo.md", "# Memo\n\nThe memo is about ferries.\n", "public").status_code == 201
    for path in ("/v1/documents", "/v1/sources"):
        r = api.client.get(path, headers=hdr("gus"))
        assert r.status_code == 200
        assert str(api.allowed) not in r.text and str(api.svc.settings.home) not in r.text
        assert {s["source"] for s in r.json()} == {"handbook", "uploads"}
