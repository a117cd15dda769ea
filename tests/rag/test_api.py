"""The Q&A HTTP API as a user meets it: keys, groups, documents, uploads, streaming, sync.

Everything runs in-process through FastAPI's TestClient against real embedded stores and
the bundled embedding model. The fictional handbook of `rag.samples` is ingested folder
by folder with its groups; what each user may read is derived from `HANDBOOK` itself, so
the expectations never come from the code under test.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import rag.api
from rag.samples import HANDBOOK, write_handbook
from rag.service import RagService
from shared.auth import PUBLIC_GROUP, KeyRegistry, UserEntry
from shared.config import Settings
from shared.ingestion.sources import document_id, folder_source
from shared.server import create_app

# name → (groups, admin)
USERS: dict[str, tuple[list[str], bool]] = {
    "ada": (["engineering"], False),
    "pia": (["people-ops"], False),
    "sol": (["sales"], False),
    "gus": ([], False),  # a guest: public only
    "root": ([], True),
}


def key_of(user: str) -> str:
    return f"test-key-{user}-0123456789"


def hdr(user: str) -> dict[str, str]:
    return {"X-API-Key": key_of(user)}


def registry() -> KeyRegistry:
    return KeyRegistry([UserEntry(name=n, key=key_of(n), groups=g, admin=a) for n, (g, a) in USERS.items()])


def make_client(svc: RagService) -> TestClient:
    app = create_app(svc.settings, plugins=[lambda ctx: rag.api.plugin(ctx, service=svc)], keys=registry())
    return TestClient(app)


def readable(user: str) -> set[str] | None:
    groups, admin = USERS[user]
    return None if admin else set(groups) | {PUBLIC_GROUP}


def handbook_docs(root: Path, user: str | None = None) -> dict[str, str]:
    """{doc id: path} of the handbook documents `user` may read (all when user is None)."""
    groups = readable(user) if user else None
    out = {}
    for folder, (doc_groups, files) in HANDBOOK.items():
        if groups is None or set(doc_groups) & groups:
            for rel in files:
                out[document_id(folder_source(root / folder), rel)] = rel
    return out


def doc_id_of(root: Path, rel: str) -> str:
    for folder, (_, files) in HANDBOOK.items():
        if rel in files:
            return document_id(folder_source(root / folder), rel)
    raise KeyError(rel)


def ingest_handbook(svc: RagService, root: Path) -> None:
    plan = write_handbook(root)
    for folder, groups in plan.items():
        run = svc.ingest(root / folder, groups)
        assert run.status == "succeeded", run


def ask(client: TestClient, user: str, question: str, **extra) -> dict:
    r = client.post("/v1/query", json={"question": question, **extra}, headers=hdr(user))
    assert r.status_code == 200, r.text
    return r.json()


def sse_events(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[len("event:") :].strip()
            elif line.startswith("data:"):
                data.append(line[len("data:") :].strip())
        events.append((name, json.loads("\n".join(data))))
    return events


@dataclass
class World:
    svc: RagService
    client: TestClient
    root: Path


@pytest.fixture(scope="module")
def world(embedder, tmp_path_factory) -> Iterator[World]:
    """The handbook ingested once for the read-only tests of this module."""
    base = tmp_path_factory.mktemp("api-world")
    svc = RagService(Settings(home=base / "home"), embedder_factory=lambda: embedder)
    root = base / "handbook"
    ingest_handbook(svc, root)
    with make_client(svc) as client:  # served: the app starts (and warms up) as `loopline serve` does
        assert client.app.state.ctx.services["rag"].warmup.wait(60)
        yield World(svc, client, root)
    svc.close()


@pytest.fixture
def fresh(make_service, tmp_path) -> World:
    """A handbook service of this test alone, for tests that delete or re-sync."""
    svc = make_service(home=tmp_path / "home")
    root = tmp_path / "handbook"
    ingest_handbook(svc, root)
    return World(svc, make_client(svc), root)


# --- authentication and ops endpoints -------------------------------------------------
PROTECTED = [
    ("post", "/v1/query", {"json": {"question": "How many vacation days do I get?"}}),
    ("post", "/v1/query/stream", {"json": {"question": "How many vacation days do I get?"}}),
    ("get", "/v1/documents", {}),
    ("get", f"/v1/documents/{uuid.uuid4()}", {}),
    ("delete", f"/v1/documents/{uuid.uuid4()}", {}),
    ("post", "/v1/documents", {"files": {"file": ("a.md", b"# A\n\nSome text here.", "text/markdown")}}),
    ("post", "/v1/sync?wait=true", {}),
    ("post", "/v1/admin/ingest?wait=true", {"json": {"path": "/"}}),
    ("get", "/v1/runs", {}),
    ("post", "/v1/feedback", {"json": {"question": "q", "rating": 1}}),
]


@pytest.mark.parametrize(("method", "path", "kwargs"), PROTECTED, ids=[f"{m} {p}" for m, p, _ in PROTECTED])
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-Key": "wrong-key-0123456789"},
        {"Authorization": "Bearer wrong-key-0123456789"},
        {"Authorization": f"Basic {key_of('root')}"},  # the right key, but not as a bearer token
        {"X-API-Key": ""},
    ],
    ids=["none", "wrong-x-api-key", "wrong-bearer", "basic-scheme", "empty"],
)
def test_every_v1_endpoint_needs_a_known_key(world: World, method, path, kwargs, headers) -> None:
    before = world.svc.metadata.count_documents()
    r = world.client.request(method.upper(), path, headers=headers, **kwargs)
    assert r.status_code == 401, r.text
    assert r.headers.get("www-authenticate") == "Bearer"
    assert "X-API-Key" in r.json()["detail"]
    assert world.svc.metadata.count_documents() == before


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": key_of("ada")},
        {"Authorization": f"Bearer {key_of('ada')}"},
        {"authorization": f"bearer   {key_of('ada')}  "},
    ],
    ids=["x-api-key", "bearer", "bearer-lowercase-spaces"],
)
def test_right_key_in_either_header_style(world: World, headers) -> None:
    r = world.client.get("/v1/documents", headers=headers)
    assert r.status_code == 200, r.text
    assert {d["id"] for d in r.json()} == set(handbook_docs(world.root, "ada"))


def test_healthz_is_open_and_readyz_counts_documents(world: World) -> None:
    r = world.client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    r = world.client.get("/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready"
    assert body["rag"]["documents"] == len(handbook_docs(world.root))
    assert body["rag"]["chunks"] == world.svc.store.count() > 0


def test_openapi_and_docs_list_the_v1_paths(world: World) -> None:
    spec = world.client.get("/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    for p in (
        "/v1/query",
        "/v1/query/stream",
        "/v1/documents",
        "/v1/documents/{doc_id}",
        "/v1/sync",
        "/v1/admin/ingest",
        "/v1/runs",
        "/v1/feedback",
        "/healthz",
        "/readyz",
    ):
        assert p in paths, f"{p} missing from the OpenAPI spec"
    assert set(paths["/v1/documents"]) >= {"get", "post"}
    assert "delete" in paths["/v1/documents/{doc_id}"]
    docs = world.client.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "swagger" in docs.text.lower() and "/openapi.json" in docs.text


# --- access control -------------------------------------------------------------------
# question, the handbook document that answers it, phrases only that document contains
QUESTIONS: list[tuple[str, str, list[str]]] = [
    ("When are salary bands reviewed?", "compensation.md", ["March", "1 April", "once a year"]),
    ("What is the salary range of the engineering band L3 in Bergen?", "compensation.md", ["62,000", "78,000"]),
    ("Who checks proposed raises against the salary bands?", "compensation.md", ["February", "leadership team"]),
    ("Who must approve a discount of 25 percent?", "discounts.md", ["sales director", "15 percent", "30 percent"]),
    ("When does the on-call rotation change?", "on-call.md", ["Monday at 10:00", "six weeks"]),
    ("Is there a deploy freeze on Fridays?", "releases.md", ["14:00", "release train"]),
    ("How many days of paid vacation does an employee get?", "benefits/time-off.md", ["27 days"]),
    ("What is the daily meal allowance while travelling?", "expenses.md", ["40 euros"]),
    ("How often are laptops replaced?", "it/laptops.html", ["three years"]),
]


@pytest.mark.parametrize("user", list(USERS))
def test_answers_cite_only_what_the_user_may_read(world: World, user: str) -> None:
    mine = handbook_docs(world.root, user)
    for question, target, phrases in QUESTIONS:
        a = ask(world.client, user, question)
        cited = {c["doc_id"] for c in a["citations"]}
        assert cited <= set(mine), f"{user} got citations outside their groups for {question!r}: {a['citations']}"
        target_id = doc_id_of(world.root, target)
        if target_id in mine:
            assert not a["abstained"], f"{user} may read {target} but got no answer to {question!r}"
            assert target_id in cited, f"{user}: {question!r} should cite {target}, cited {a['citations']}"
            assert any(f"[{c['n']}]" in a["answer"] for c in a["citations"]), a["answer"]
        else:
            for phrase in phrases:
                assert phrase not in a["answer"], f"{user} saw {target} content {phrase!r}: {a['answer']}"
            for c in a["citations"]:
                assert c["source"] != target


def test_people_ops_fact_is_answered_for_people_ops_and_admin_only(world: World) -> None:
    comp = doc_id_of(world.root, "compensation.md")
    for user in ("pia", "root"):
        a = ask(world.client, user, "When are salary bands reviewed?")
        assert not a["abstained"]
        assert "March" in a["answer"]
        assert a["citations"][0]["doc_id"] == comp and a["citations"][0]["source"] == "compensation.md"
        assert "[1]" in a["answer"]
    for user in ("ada", "sol", "gus"):
        a = ask(world.client, user, "When are salary bands reviewed?")
        assert comp not in {c["doc_id"] for c in a["citations"]}
        assert "March" not in a["answer"]


@pytest.mark.parametrize("user", list(USERS))
def test_document_list_and_get_follow_groups(world: World, user: str) -> None:
    mine = handbook_docs(world.root, user)
    everything = handbook_docs(world.root)
    r = world.client.get("/v1/documents", headers=hdr(user))
    assert r.status_code == 200
    listed = {d["id"]: d for d in r.json()}
    assert set(listed) == set(mine)
    groups = readable(user)
    for d in listed.values():
        assert d["path"] == mine[d["id"]]
        assert d["chunks"] > 0
        assert groups is None or set(d["groups"]) & groups
    missing = str(uuid.uuid4())
    nothing = world.client.get(f"/v1/documents/{missing}", headers=hdr(user))
    assert nothing.status_code == 404
    for doc_id, path in everything.items():
        r = world.client.get(f"/v1/documents/{doc_id}", headers=hdr(user))
        if doc_id in mine:
            assert r.status_code == 200 and r.json()["path"] == path
        else:  # indistinguishable from a document that does not exist
            assert r.status_code == 404
            assert r.json()["detail"].replace(doc_id, "ID") == nothing.json()["detail"].replace(missing, "ID")


def test_as_user_is_for_admins_only(world: World) -> None:
    comp = doc_id_of(world.root, "compensation.md")
    q = "What is the salary range of the engineering band L3 in Bergen?"
    as_ada = ask(world.client, "root", q, as_user="ada")
    assert comp not in {c["doc_id"] for c in as_ada["citations"]}
    assert {c["doc_id"] for c in as_ada["citations"]} <= set(handbook_docs(world.root, "ada"))
    assert "62,000" not in as_ada["answer"]
    as_pia = ask(world.client, "root", q, as_user="pia")
    assert comp in {c["doc_id"] for c in as_pia["citations"]} and "62,000" in as_pia["answer"]

    for endpoint in ("/v1/query", "/v1/query/stream"):
        r = world.client.post(endpoint, json={"question": q, "as_user": "pia"}, headers=hdr("ada"))
        assert r.status_code == 403, r.text
        assert "62,000" not in r.text
        r = world.client.post(endpoint, json={"question": q, "as_user": "nobody-here"}, headers=hdr("root"))
        assert r.status_code == 404, r.text
    # streaming as another user is filtered the same way
    r = world.client.post("/v1/query/stream", json={"question": q, "as_user": "ada"}, headers=hdr("root"))
    assert r.status_code == 200
    assert comp not in r.text and "62,000" not in r.text


def test_query_validation(world: World) -> None:
    for body in ({"question": ""}, {"question": "x", "top_k": 0}, {"question": "x", "top_k": 51}, {}):
        r = world.client.post("/v1/query", json=body, headers=hdr("ada"))
        assert r.status_code == 422, (body, r.text)


def test_top_k_limits_citations(world: World) -> None:
    q = "What are the severity levels, escalation and rotation of on-call?"
    many = ask(world.client, "ada", q, top_k=10)
    one = ask(world.client, "ada", q, top_k=1)
    assert len(many["citations"]) > 1
    assert len(one["citations"]) == 1
    assert one["citations"][0]["doc_id"] == many["citations"][0]["doc_id"]


# --- deleting -------------------------------------------------------------------------
def test_delete_needs_admin_and_hides_unreadable_documents(world: World) -> None:
    comp = doc_id_of(world.root, "compensation.md")
    oncall = doc_id_of(world.root, "on-call.md")
    missing = str(uuid.uuid4())
    gone = world.client.delete(f"/v1/documents/{missing}", headers=hdr("ada"))
    assert gone.status_code == 404
    r = world.client.delete(f"/v1/documents/{comp}", headers=hdr("ada"))  # unreadable for ada
    assert r.status_code == 404
    assert r.json()["detail"].replace(comp, "ID") == gone.json()["detail"].replace(missing, "ID")
    r = world.client.delete(f"/v1/documents/{oncall}", headers=hdr("ada"))  # readable, but not an admin
    assert r.status_code == 403
    r = world.client.delete(f"/v1/documents/{comp}", headers=hdr("pia"))
    assert r.status_code == 403
    # nothing was removed
    assert {d["id"] for d in world.client.get("/v1/documents", headers=hdr("root")).json()} == set(
        handbook_docs(world.root)
    )
    a = ask(world.client, "ada", "When does the on-call rotation change?")
    assert oncall in {c["doc_id"] for c in a["citations"]}


def test_admin_delete_removes_document_from_lists_and_answers(fresh: World) -> None:
    comp = doc_id_of(fresh.root, "compensation.md")
    q = "When are salary bands reviewed?"
    before = ask(fresh.client, "pia", q)
    assert comp in {c["doc_id"] for c in before["citations"]}
    listed = {d["id"]: d for d in fresh.client.get("/v1/documents", headers=hdr("root")).json()}
    chunks_before = fresh.svc.store.count()

    r = fresh.client.delete(f"/v1/documents/{comp}", headers=hdr("root"))
    assert r.status_code == 204 and r.content == b""

    for user in ("root", "pia"):
        ids = {d["id"] for d in fresh.client.get("/v1/documents", headers=hdr(user)).json()}
        assert comp not in ids
        assert ids == set(handbook_docs(fresh.root, user)) - {comp}
        assert fresh.client.get(f"/v1/documents/{comp}", headers=hdr(user)).status_code == 404
        for question in (q, "What is the salary range of the engineering band L3 in Bergen?"):
            a = ask(fresh.client, user, question)
            assert comp not in {c["doc_id"] for c in a["citations"]}
            assert "62,000" not in a["answer"] and "March" not in a["answer"]
    assert fresh.svc.store.count() == chunks_before - listed[comp]["chunks"]
    assert fresh.client.get("/readyz").json()["rag"]["documents"] == len(listed) - 1
    assert fresh.client.delete(f"/v1/documents/{comp}", headers=hdr("root")).status_code == 404


# --- uploads --------------------------------------------------------------------------
UPLOAD_LIMIT = 2_000
GLACIER = """# Glacier support plan

The Glacier support plan for warehouse customers costs 4,800 euros per robot per year.
It includes a replacement robot within 48 hours anywhere in Norway and the Netherlands.
"""


@pytest.fixture(scope="module")
def upl(embedder, tmp_path_factory) -> Iterator[World]:
    """The handbook plus a small upload limit, shared by the upload tests."""
    base = tmp_path_factory.mktemp("api-upload") / "deep" / "er"
    svc = RagService(Settings(home=base / "home", upload_max_bytes=UPLOAD_LIMIT), embedder_factory=lambda: embedder)
    root = base / "handbook"
    ingest_handbook(svc, root)
    yield World(svc, make_client(svc), root)
    svc.close()


def upload(w: World, user: str, name: str, data: bytes, groups: str | None = "public", ctype: str = "text/markdown"):
    form = {"groups": groups} if groups is not None else {}
    return w.client.post("/v1/documents", files={"file": (name, data, ctype)}, data=form, headers=hdr(user))


def uploads_dir(w: World) -> Path:
    return w.svc.settings.home / "uploads"


def test_admin_upload_is_readable_by_its_groups_only(upl: World) -> None:
    r = upload(upl, "root", "glacier-plan.md", GLACIER.encode(), groups="sales")
    assert r.status_code == 201, r.text
    body = r.json()
    doc = body["document"]
    assert doc["groups"] == ["sales"]
    assert doc["path"].endswith("/glacier-plan.md") and doc["source"] == "uploads"
    assert doc["title"] == "Glacier support plan"
    assert doc["chunks"] >= 1
    assert body["run"]["added"] == 1 and body["run"]["failed"] == 0
    assert (uploads_dir(upl) / doc["path"]).read_bytes() == GLACIER.encode()

    q = "How much does the Glacier support plan cost per robot?"
    a = ask(upl.client, "sol", q)
    assert not a["abstained"]
    assert doc["id"] in {c["doc_id"] for c in a["citations"]}
    assert "4,800" in a["answer"]
    for user in ("ada", "pia", "gus"):
        a = ask(upl.client, user, q)
        assert doc["id"] not in {c["doc_id"] for c in a["citations"]}
        assert "4,800" not in a["answer"]
        assert upl.client.get(f"/v1/documents/{doc['id']}", headers=hdr(user)).status_code == 404
    assert upl.client.get(f"/v1/documents/{doc['id']}", headers=hdr("sol")).json()["groups"] == ["sales"]
    assert doc["id"] in {d["id"] for d in upl.client.get("/v1/documents", headers=hdr("sol")).json()}


def test_upload_defaults_to_public_and_reupload_replaces(upl: World) -> None:
    v1 = b"# Parking\n\nVisitor parking at the Bergen office is in garage level minus two.\n"
    r = upload(upl, "root", "parking.md", v1, groups=None)
    assert r.status_code == 201, r.text
    doc = r.json()["document"]
    assert doc["groups"] == ["public"]
    q = "Where is visitor parking at the Bergen office?"
    a = ask(upl.client, "gus", q)
    assert doc["id"] in {c["doc_id"] for c in a["citations"]} and "minus two" in a["answer"]

    v2 = b"# Parking\n\nVisitor parking at the Bergen office moved to the rooftop deck.\n"
    r = upload(upl, "root", "parking.md", v2, groups=" public , ")
    assert r.status_code == 201, r.text
    assert r.json()["document"]["id"] == doc["id"]
    assert r.json()["run"]["updated"] == 1
    a = ask(upl.client, "gus", q)
    assert "rooftop" in a["answer"] and "minus two" not in a["answer"]
    assert all("minus two" not in c["text"] for c in a["citations"])


def test_upload_refusals(upl: World) -> None:
    before = {d["id"] for d in upl.client.get("/v1/documents", headers=hdr("root")).json()}
    files_before = sorted(p.name for p in uploads_dir(upl).glob("*")) if uploads_dir(upl).exists() else []

    r = upload(upl, "sol", "mine.md", GLACIER.encode(), groups="sales")
    assert r.status_code == 403 and "admin" in r.json()["detail"]

    r = upload(upl, "root", "tool.exe", b"MZ\x90\x00binary", ctype="application/octet-stream")
    assert r.status_code == 415 and ".exe" in r.json()["detail"] and ".md" in r.json()["detail"]
    r = upload(upl, "root", "noext", b"text without a suffix")
    assert r.status_code == 415

    r = upload(upl, "root", "big.md", b"# Big\n\n" + b"a" * UPLOAD_LIMIT)
    assert r.status_code == 413 and f"{UPLOAD_LIMIT:,}" in r.json()["detail"]

    after = {d["id"] for d in upl.client.get("/v1/documents", headers=hdr("root")).json()}
    assert after == before
    files_after = sorted(p.name for p in uploads_dir(upl).glob("*")) if uploads_dir(upl).exists() else []
    assert files_after == files_before, "a refused upload left a file behind"


def test_upload_exactly_at_the_limit_is_accepted(upl: World) -> None:
    head = b"# Limit\n\nThis document is exactly as large as the upload limit allows. "
    data = head + b"x" * (UPLOAD_LIMIT - len(head))
    assert len(data) == UPLOAD_LIMIT
    r = upload(upl, "root", "at-limit.md", data)
    assert r.status_code == 201, r.text
    assert r.json()["document"]["size_bytes"] == UPLOAD_LIMIT


def test_corrupt_pdf_is_refused_with_a_reason(upl: World) -> None:
    r = upload(upl, "root", "broken.pdf", b"%PDF-1.4 garbage", ctype="application/pdf")
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert "broken.pdf" in detail and "pdf" in detail.lower().replace("broken.pdf", "")
    listed = {d["path"].rsplit("/", 1)[-1] for d in upl.client.get("/v1/documents", headers=hdr("root")).json()}
    assert "broken.pdf" not in listed
    assert any(dl.path.endswith("/broken.pdf") for dl in upl.svc.metadata.dead_letters())


def test_upload_names_cannot_escape_the_uploads_folder(upl: World) -> None:
    home = upl.svc.settings.home
    scan_root = home.parent.parent.parent  # three levels above home, all ours
    outside_abs = scan_root / f"abs-evil-{uuid.uuid4().hex}.md"
    cases = [
        ("../../etc/evil.md", "evil.md"),
        ("..\\..\\win-evil.md", "win-evil.md"),
        (str(outside_abs), outside_abs.name),
        ("../.hidden-evil.md", "hidden-evil.md"),
        ("sub/dir/na me;$(rm).md", "na_me_rm_.md"),
    ]
    for i, (name, stored) in enumerate(cases):
        text = f"# Escape {i}\n\nThe escape test document number {i} talks about fjord ferries.\n".encode()
        r = upload(upl, "root", name, text)
        assert r.status_code == 201, (name, r.text)
        doc = r.json()["document"]
        folder, _, base = doc["path"].partition("/")
        assert base == stored, name
        assert re.fullmatch("[0-9a-f]{12}", folder), doc["path"]
        assert "/" not in base and "\\" not in doc["path"] and not base.startswith(".")
        assert doc["source"] == "uploads"
        assert (uploads_dir(upl) / folder / stored).read_bytes() == text
    assert not outside_abs.exists()
    uploads = uploads_dir(upl).resolve()
    stray = [p for p in scan_root.rglob("*") if p.is_file() and "evil" in p.name and uploads not in p.resolve().parents]
    assert stray == [], f"upload wrote outside {uploads}: {stray}"
    assert not (home / "etc").exists() and not (home.parent / "etc").exists()


# --- streaming ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("user", "question"),
    [
        ("pia", "When are salary bands reviewed?"),
        ("ada", "What are the on-call severity levels and escalation?"),
        ("ada", "When are salary bands reviewed?"),  # abstains: people-ops only
        ("sol", "What is the capital of Peru?"),
    ],
)
def test_stream_matches_the_plain_answer(world: World, user: str, question: str) -> None:
    plain = ask(world.client, user, question)
    r = world.client.post("/v1/query/stream", json={"question": question}, headers=hdr(user))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    names = [n for n, _ in events]
    assert names[0] == "citations" and names[-1] == "done"
    assert names.count("done") == 1 and "error" not in names
    assert names[1:-1] and set(names[1:-1]) == {"token"}
    for name, data in events:
        assert data["type"] == name
    first = events[0][1]["citations"]
    done = events[-1][1]["answer"]
    key = lambda cs: [(c["n"], c["doc_id"], c["source"], c["text"]) for c in cs]  # noqa: E731
    assert key(done["citations"]) == key(plain["citations"])
    assert key(first) == key(plain["citations"])
    assert done["answer"] == plain["answer"]
    assert done["abstained"] == plain["abstained"]
    assert "".join(d["text"] for n, d in events if n == "token").strip() == done["answer"]
    mine = set(handbook_docs(world.root, user))
    assert {c["doc_id"] for c in done["citations"]} <= mine
    if user != "pia" and user != "root":
        assert "62,000" not in r.text and "Salary bands are reviewed" not in r.text


# --- sync -----------------------------------------------------------------------------
def test_sync_without_a_folder_is_a_conflict(world: World) -> None:
    assert world.svc.settings.sync_folder is None
    r = world.client.post("/v1/sync?wait=true", headers=hdr("root"))
    assert r.status_code == 409 and "LOOPLINE_SYNC_FOLDER" in r.json()["detail"]


def test_sync_of_a_missing_folder_says_why(make_service, tmp_path: Path) -> None:
    missing = tmp_path / "not-mounted"
    svc = make_service(home=tmp_path / "home", sync_folder=missing)
    client = TestClient(make_client(svc).app, raise_server_exceptions=False)
    for url in ("/v1/sync?wait=true", "/v1/sync"):
        r = client.post(url, headers=hdr("root"))
        assert r.status_code == 409, r.text
        assert str(missing) in r.json()["detail"]
    missing.mkdir()
    (missing / "a.md").write_text("# A\n\nThe folder is mounted now and holds one document.\n")
    r = client.post("/v1/sync?wait=true", headers=hdr("root"))  # the lock was not left held
    assert r.status_code == 202 and r.json()["run"]["added"] == 1


def _runs(client: TestClient) -> list[dict]:
    r = client.get("/v1/runs", headers=hdr("root"))
    assert r.status_code == 200
    return r.json()


def test_sync_indexes_updates_and_deletes(make_service, tmp_path: Path) -> None:
    folder = tmp_path / "shared-drive"
    (folder / "teams").mkdir(parents=True)
    (folder / "lab.md").write_text(
        "# Robot lab\n\nThe robot test lab in Rotterdam is open from 07:00 to 19:00 on weekdays.\n"
    )
    (folder / "teams" / "pets.md").write_text("# Office dogs\n\nDogs are welcome in the Austin office on Fridays.\n")
    svc = make_service(home=tmp_path / "home", sync_folder=folder, sync_groups="engineering, sales")
    client = make_client(svc)

    assert client.post("/v1/sync?wait=true", headers=hdr("ada")).status_code == 403
    assert client.get("/v1/runs", headers=hdr("ada")).status_code == 403
    assert svc.metadata.count_documents() == 0

    r = client.post("/v1/sync?wait=true", headers=hdr("root"))
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "finished"
    assert body["run"]["added"] == 2 and body["run"]["status"] == "succeeded"
    docs = {d["path"]: d for d in client.get("/v1/documents", headers=hdr("ada")).json()}
    assert set(docs) == {"lab.md", "teams/pets.md"}
    assert all(d["groups"] == ["engineering", "sales"] for d in docs.values())
    assert client.get("/v1/documents", headers=hdr("pia")).json() == []
    a = ask(client, "sol", "When is the robot test lab in Rotterdam open?")
    assert docs["lab.md"]["id"] in {c["doc_id"] for c in a["citations"]} and "07:00" in a["answer"]
    runs = _runs(client)
    assert runs[0]["kind"] == "sync" and runs[0]["added"] == 2 and runs[0]["status"] == "succeeded"
    assert runs[0]["source"] == folder_source(folder)

    # edit one file, remove the other
    (folder / "lab.md").write_text(
        "# Robot lab\n\nThe robot test lab in Rotterdam is now open around the clock, every day.\n"
    )
    (folder / "teams" / "pets.md").unlink()
    r = client.post("/v1/sync?wait=true", headers=hdr("root"))
    run = r.json()["run"]
    assert (run["added"], run["updated"], run["deleted"], run["unchanged"]) == (0, 1, 1, 0)
    docs2 = {d["path"]: d for d in client.get("/v1/documents", headers=hdr("root")).json()}
    assert set(docs2) == {"lab.md"}
    assert docs2["lab.md"]["id"] == docs["lab.md"]["id"]
    assert docs2["lab.md"]["content_hash"] != docs["lab.md"]["content_hash"]
    a = ask(client, "ada", "When is the robot test lab in Rotterdam open?")
    assert "around the clock" in a["answer"] and "07:00" not in a["answer"]
    a = ask(client, "ada", "Are dogs welcome in the Austin office?")
    assert docs["teams/pets.md"]["id"] not in {c["doc_id"] for c in a["citations"]}
    runs = _runs(client)
    assert (runs[0]["updated"], runs[0]["deleted"]) == (1, 1)
    assert len([x for x in runs if x["kind"] == "sync"]) == 2

    # nothing changed: a background sync finds everything unchanged
    r = client.post("/v1/sync", headers=hdr("root"))
    assert r.status_code == 202 and r.json()["status"] == "started"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        runs = _runs(client)
        syncs = [x for x in runs if x["kind"] == "sync"]
        if len(syncs) == 3 and syncs[0]["status"] != "running":
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the background sync did not finish: {runs}")
    assert syncs[0]["status"] == "succeeded" and syncs[0]["unchanged"] == 1
    assert (syncs[0]["added"], syncs[0]["updated"], syncs[0]["deleted"]) == (0, 0, 0)
    # the lock is released: a new sync may start
    deadline = time.monotonic() + 10
    while (r := client.post("/v1/sync?wait=true", headers=hdr("root"))).status_code == 409:
        assert time.monotonic() < deadline, r.text
        time.sleep(0.05)
    assert r.status_code == 202 and r.json()["run"]["unchanged"] == 1


# --- feedback -------------------------------------------------------------------------
def test_feedback_is_stored_with_the_user(world: World) -> None:
    n_before = len(world.svc.feedback.recent(limit=1000))
    r = world.client.post(
        "/v1/feedback",
        json={"question": "How many vacation days?", "answer": "27 days [1]", "rating": 4, "comment": "clear"},
        headers=hdr("sol"),
    )
    assert r.status_code == 201, r.text
    fid = r.json()["id"]
    stored = {f.id: f for f in world.svc.feedback.recent(limit=1000)}
    assert len(stored) == n_before + 1
    fb = stored[fid]
    assert (fb.user, fb.question, fb.answer, fb.rating, fb.comment) == (
        "sol",
        "How many vacation days?",
        "27 days [1]",
        4,
        "clear",
    )
    r = world.client.post("/v1/feedback", json={"question": "q", "rating": -1}, headers=hdr("ada"))
    assert r.status_code == 201
    assert {f.id: f for f in world.svc.feedback.recent(limit=1000)}[r.json()["id"]].user == "ada"


@pytest.mark.parametrize(
    "body",
    [
        {"question": "q", "rating": 6},
        {"question": "q", "rating": -2},
        {"question": "q", "rating": "great"},
        {"question": "", "rating": 1},
        {"question": "q"},
    ],
)
def test_bad_feedback_is_rejected(world: World, body: dict) -> None:
    n_before = len(world.svc.feedback.recent(limit=1000))
    r = world.client.post("/v1/feedback", json=body, headers=hdr("ada"))
    assert r.status_code == 422, r.text
    assert len(world.svc.feedback.recent(limit=1000)) == n_before


def test_me_and_dead_letters(make_service, tmp_path: Path) -> None:
    folder = tmp_path / "drive"
    folder.mkdir()
    (folder / "fine.md").write_text("# Fine\n\nThe Oslo office opens at eight.\n")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    svc = make_service(home=tmp_path / "home")
    run = svc.ingest(folder, ["engineering"])
    client = make_client(svc)

    assert client.get("/v1/me", headers=hdr("ada")).json() == {"name": "ada", "groups": ["engineering"], "admin": False}
    assert client.get("/v1/me", headers=hdr("root")).json()["admin"] is True
    assert client.get("/v1/me").status_code == 401

    assert client.get("/v1/dead-letters", headers=hdr("ada")).status_code == 403
    letters = client.get(f"/v1/dead-letters?run_id={run.run_id}", headers=hdr("root")).json()
    assert [d["path"] for d in letters] == ["broken.pdf"] and letters[0]["reason"]
