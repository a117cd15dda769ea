"""The employees' page at `/`: its headers without a browser, then what a user does in a real one.

The browser tests drive Debian's chromium through Playwright against the API served by uvicorn
on loopback, on the handbook of `rag.samples` plus one document that carries `<script>` and
`<img onerror>`. They skip when chromium or playwright is missing, except under CI=true, where
a missing browser is a failure. With LOOPLINE_SCREENSHOTS=DIR they save the main states at
desktop (1280x800) and phone (390x844) width to DIR.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import rag.api
import rag.web
import shared.monitoring.api
from rag.samples import HANDBOOK, write_handbook
from rag.service import RagService
from shared.auth import KeyRegistry, UserEntry
from shared.config import Settings
from shared.server import create_app

# --- without a browser ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def page_client(tmp_path_factory) -> Iterator[TestClient]:
    settings = Settings(home=tmp_path_factory.mktemp("web-home"))
    with TestClient(create_app(settings, plugins=[rag.web.plugin], keys=KeyRegistry([]), metrics=False)) as client:
        yield client


def csp_directives(header: str) -> dict[str, list[str]]:
    out = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            out[words[0]] = words[1:]
    return out


def test_page_is_html_with_a_csp_that_allows_no_inline_script(page_client: TestClient) -> None:
    r = page_client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    csp = csp_directives(r.headers["content-security-policy"])
    for directive in ("script-src", "style-src"):
        assert csp[directive] == ["'self'"], csp  # no 'unsafe-inline', no other host
    assert csp["default-src"] == ["'none'"]
    assert csp["connect-src"] == ["'self'"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in r.text and " style=" not in r.text  # nothing inline for the policy to refuse
    assert not re.search(r"(src|href)=\"(https?:)?//", r.text), "the page loads nothing from another host"


@pytest.mark.parametrize(("path", "content_type"), [("/ui/app.js", "text/javascript"), ("/ui/app.css", "text/css")])
def test_assets_are_served_without_a_key_with_their_type(page_client: TestClient, path, content_type) -> None:
    r = page_client.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"].split(";")[0] == content_type
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "http://" not in r.text and "https://" not in r.text  # no third-party asset
    assert path in page_client.get("/").text  # the page really loads it


@pytest.mark.parametrize("path", ["/ui/index.html", "/ui/__init__.py", "/ui/..%2F__init__.py", "/ui/"])
def test_nothing_but_the_assets_is_served(page_client: TestClient, path) -> None:
    assert page_client.get(path).status_code == 404


def test_the_page_never_parses_service_strings_as_html() -> None:
    script = (Path(rag.web.__file__).parent / "static" / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink


# --- in a real browser -------------------------------------------------------------------------

USERS: dict[str, tuple[list[str], bool]] = {
    "ada": (["engineering"], False),
    "pia": (["people-ops"], False),
    "sol": (["sales"], False),
    "root": ([], True),
}
XSS_DOC = """# Parking <img src=x onerror="window.__pwned = 'title'"> garage

## Visitor badges

Visitors park on level two of the garage. <script>window.__pwned = 'script'</script>
Their badge is printed at reception <img src=x onerror="window.__pwned = 'img'"> and opens the barrier until 18:00.
"""
ALERT = "source <b>notes</b> is stale <img src=x onerror=\"window.__pwned = 'alert'\">"
XSS_QUESTION = "Where do visitors park and how does their badge work?"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def key_of(user: str) -> str:
    return f"web-key-{user}-0123456789"


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "playwright is not installed (pip install playwright; never `playwright install`)"
    if missing is None and chromium_path() is None:
        missing = "Debian's chromium is not installed (apt-get install -y chromium)"
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires the browser tests: {missing}", pytrace=False)
        pytest.skip(missing)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@dataclass
class Site:
    url: str
    svc: RagService


@pytest.fixture(scope="module")
def site(embedder, tmp_path_factory) -> Iterator[Site]:
    """The handbook and the XSS document, served on loopback with the API and the page."""
    from live_server import serve_in_thread

    base = tmp_path_factory.mktemp("web-site")
    svc = RagService(Settings(home=base / "home"), embedder_factory=lambda: embedder)
    for folder, groups in write_handbook(base / "handbook").items():
        assert svc.ingest(base / "handbook" / folder, groups).status == "succeeded"
    notes = base / "notes"
    notes.mkdir()
    (notes / "parking.md").write_text(XSS_DOC, encoding="utf-8")
    assert svc.ingest(notes, ["public"]).status == "succeeded"
    keys = KeyRegistry([UserEntry(name=n, key=key_of(n), groups=g, admin=a) for n, (g, a) in USERS.items()])
    plugins = [
        lambda ctx: rag.api.plugin(ctx, service=svc),
        lambda ctx: shared.monitoring.api.plugin(ctx, interval_s=0),
        rag.web.plugin,
    ]
    app = create_app(svc.settings, plugins=plugins, keys=keys, metadata=svc.metadata, metrics=False)
    app.state.ctx.alerts.open_or_touch(
        kind="freshness", key="notes", severity="warning", message=ALERT, details={}, now=datetime.now(UTC)
    )
    with serve_in_thread(app) as url:
        yield Site(url, svc)
    svc.close()


@pytest.fixture
def open_page(browser, site: Site):
    """A fresh browser tab (own session storage) at a viewport size; records every request URL."""
    contexts = []

    def opener(viewport: dict = DESKTOP):
        context = browser.new_context(viewport=viewport)
        contexts.append(context)
        page = context.new_page()
        page.requested = []
        page.on("request", lambda req: page.requested.append(req))
        page.errors = []  # uncaught exceptions, and whatever the Content-Security-Policy refused
        page.on("pageerror", lambda exc: page.errors.append(str(exc)))
        page.on(
            "console",
            lambda msg: page.errors.append(msg.text) if "Content Security Policy" in msg.text else None,
        )
        page.goto(site.url + "/")
        return page

    yield opener
    for context in contexts:
        context.close()


def shot(page, name: str) -> None:
    folder = os.environ.get("LOOPLINE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        width = page.viewport_size["width"]
        page.screenshot(path=str(Path(folder) / f"{name}-{width}.png"), full_page=True)


def sign_in(page, user: str) -> None:
    """Enter in the key field submits."""
    page.locator("#key").fill(key_of(user))
    page.locator("#key").press("Enter")
    page.locator("#workspace").wait_for(state="visible")
    page.locator("#sources .source").first.wait_for()


def ask(page, question: str) -> None:
    page.locator("#question").fill(question)
    page.locator("#question").press("Enter")
    page.locator("#answer-status:not(.loading)").filter(has_text=re.compile("Answer|No answer")).wait_for()


def no_horizontal_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_sign_in_ask_stream_open_a_citation_and_rate_it(open_page, site: Site) -> None:
    page = open_page()
    shot(page, "sign-in")
    assert page.evaluate("document.activeElement.id") == "key"  # keyboard only: type the key, press Enter
    page.keyboard.type(key_of("ada"))
    page.keyboard.press("Enter")
    page.locator("#sources .source").first.wait_for()
    assert page.locator("#sources").inner_text().count("documents you can read") >= 2  # public + engineering
    shot(page, "signed-in")

    ask(page, "How many vacation days do I get?")
    answer = page.locator("#answer").inner_text()
    assert "27 days of paid vacation" in answer
    stream = [r for r in page.requested if r.url.endswith("/v1/query/stream")]
    assert len(stream) == 1 and stream[0].method == "POST"
    assert stream[0].headers["x-api-key"] == key_of("ada")
    assert not any(key_of("ada") in r.url for r in page.requested), "the key went into a URL"
    assert page.evaluate("sessionStorage.getItem('loopline.apiKey')") == key_of("ada")
    assert page.evaluate("localStorage.length") == 0
    shot(page, "answer")

    first = page.locator("#citations .cite-open").first
    assert "Time off — Vacation" in first.inner_text()
    first.focus()
    page.keyboard.press("Enter")
    passage = page.locator("#passage")
    passage.wait_for(state="visible")
    assert "Source: benefits/time-off.md" in page.locator("#passage-meta").inner_text()
    assert "Section: Vacation" in page.locator("#passage-meta").inner_text()
    assert "Up to 5 unused days" in page.locator("#passage-text").inner_text()  # the passage, beyond the answer
    shot(page, "citation")
    page.keyboard.press("Escape")
    assert passage.is_hidden()
    assert page.evaluate("document.activeElement.classList.contains('cite-open')")  # focus goes back

    page.locator("#thumb-up").click()
    assert page.locator("#thumb-up").get_attribute("aria-pressed") == "true"
    page.locator("#comment").fill("clear and quick")
    page.locator("#feedback-send").click()
    page.locator("#feedback-status").filter(has_text="recorded").wait_for()
    shot(page, "feedback")
    rows = [f for f in site.svc.feedback.recent() if f.comment == "clear and quick"]
    assert len(rows) == 1
    assert (rows[0].user, rows[0].rating, rows[0].question) == ("ada", 1, "How many vacation days do I get?")
    assert "27 days" in rows[0].answer
    assert page.errors == []
    assert all(r.url.startswith(site.url + "/") for r in page.requested), "a request left the service"


def test_an_unanswerable_question_is_shown_as_an_abstention(open_page) -> None:
    page = open_page()
    sign_in(page, "ada")
    ask(page, "What is the boiling point of tungsten on Jupiter's moons?")
    assert page.locator("#abstained").is_visible()
    assert "No answer found" in page.locator("#answer-status").inner_text()
    assert page.locator("#citations li").count() == 0
    shot(page, "abstention")


def test_a_user_outside_a_group_sees_no_trace_of_its_documents(open_page) -> None:
    hidden_titles = [text.splitlines()[0].lstrip("# ") for text in HANDBOOK["people-ops"][1].values()]
    page = open_page()
    sign_in(page, "sol")
    ask(page, "When are compensation reviews and how are raises decided?")
    html = page.content() + page.locator("body").inner_text()
    for trace in [*hidden_titles, "people-ops", *HANDBOOK["people-ops"][1]]:
        assert trace not in html, trace
    assert "sales" in page.locator("#sources").inner_text()


def test_a_document_with_script_and_img_renders_as_inert_text(open_page) -> None:
    page = open_page()
    sign_in(page, "sol")
    elements_before = page.evaluate("document.querySelectorAll('script, img, iframe, object').length")
    ask(page, XSS_QUESTION)
    page.locator("#citations .cite-open").first.click()
    page.locator("#passage").wait_for(state="visible")
    page.wait_for_timeout(300)  # an onerror would have fired by now
    assert "<script>window.__pwned = 'script'</script>" in page.locator("#passage-text").inner_text()
    assert "<img src=x onerror=" in page.locator("#answer").inner_text()
    assert "<img src=x" in page.locator("#passage-title").inner_text()
    assert page.evaluate("window.__pwned") is None
    assert page.evaluate("document.querySelectorAll('script, img, iframe, object').length") == elements_before
    shot(page, "inert-document")


def test_a_wrong_key_is_refused_and_a_401_returns_to_sign_in(open_page) -> None:
    page = open_page()
    page.locator("#key").fill("not-a-key-0123456789")
    page.locator("#key").press("Enter")
    error = page.locator("#signin-error")
    error.filter(has_text="not known").wait_for()
    assert page.locator("#workspace").is_hidden()
    assert "Traceback" not in error.inner_text()
    shot(page, "wrong-key")

    sign_in(page, "ada")
    page.evaluate("sessionStorage.setItem('loopline.apiKey', 'revoked-key-0123456789')")  # the key is revoked
    page.locator("#sources-refresh").click()
    error.filter(has_text="refused").wait_for()
    assert page.locator("#signin").is_visible() and page.locator("#workspace").is_hidden()
    assert page.evaluate("sessionStorage.getItem('loopline.apiKey')") is None
    assert page.locator("#sources li").count() == 0  # nothing of the session is left on the page


def test_an_admin_uploads_and_sees_runs_dead_letters_and_alerts(open_page) -> None:
    page = open_page()
    sign_in(page, "root")
    page.locator("#admin").wait_for(state="visible")
    page.locator("#runs .run").first.wait_for()
    assert page.locator("#runs").inner_text().count("succeeded") >= 1
    page.locator("#upload-file").set_input_files(
        files=[{"name": "canteen.md", "mimeType": "text/markdown", "buffer": b"# Canteen\n\nLunch is at noon."}]
    )
    page.locator("#upload-groups").fill("engineering")
    page.locator("#upload-button").click()
    page.locator("#upload-status").filter(has_text="Uploaded").wait_for()
    assert "readable by engineering" in page.locator("#upload-status").inner_text()
    page.locator("#runs").filter(has_text="uploads").wait_for()
    assert page.locator("#dead-status").inner_text()  # the list, or why there is none
    assert page.locator("#alerts .alert").inner_text().count(ALERT) == 1  # as text
    assert page.evaluate("window.__pwned") is None
    shot(page, "admin")

    page = open_page()
    sign_in(page, "ada")
    page.wait_for_load_state("networkidle")
    assert page.locator("#admin").is_hidden()


def test_phone_width_has_no_horizontal_scroll(open_page) -> None:
    page = open_page(PHONE)
    shot(page, "sign-in")
    sign_in(page, "ada")
    assert no_horizontal_scroll(page)
    shot(page, "signed-in")
    ask(page, "How many vacation days do I get?")
    page.locator("#citations .cite-open").first.click()
    page.locator("#passage").wait_for(state="visible")
    assert no_horizontal_scroll(page)
    shot(page, "answer")
    ask(page, XSS_QUESTION)  # long unbroken words in a title and a passage
    page.locator("#citations .cite-open").first.click()
    assert no_horizontal_scroll(page)
    page = open_page(PHONE)
    sign_in(page, "root")
    page.locator("#runs .run").first.wait_for()
    assert no_horizontal_scroll(page)
    shot(page, "admin")


def test_the_browser_enforces_the_policy(open_page) -> None:
    """Were a string ever parsed as HTML, its inline script and style would still be refused."""
    page = open_page()
    page.evaluate(
        "const s = document.createElement('script'); s.textContent = 'window.__pwned = 1'; document.body.append(s);"
        "const d = document.createElement('p'); d.setAttribute('style', 'color: red'); document.body.append(d);"
    )
    page.wait_for_timeout(100)
    assert page.evaluate("window.__pwned") is None
    assert any("script-src" in e for e in page.errors) and any("style-src" in e for e in page.errors)
