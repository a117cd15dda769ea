"""The `loopline rag` CLI contract: names, flags and JSON fields that outside checks use."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from live_server import serve_in_thread
from terminal import run_in_terminal

from rag.samples import DEMO_USERS
from shared.cli import main


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, handbook) -> tuple[Path, dict]:
    home = tmp_path / "home"
    home.mkdir()
    (home / "api_keys.yaml").write_text(DEMO_USERS)
    monkeypatch.setenv("LOOPLINE_HOME", str(home))
    return handbook


def _run(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_ingest_and_ask_json_contract(env) -> None:
    root, plan = env
    for folder, groups in plan.items():
        summary = json.loads(_run("rag", "ingest", str(root / folder), "--groups", ",".join(groups), "--json"))
        assert summary["status"] == "succeeded"
        assert {"added", "updated", "unchanged", "deleted", "failed"} <= summary.keys()
    out = json.loads(_run("rag", "ask", "How many days of paid vacation do I get?", "--json"))
    assert {"id", "question", "answer", "mode", "abstained", "citations"} <= out.keys()
    assert out["mode"] == "extractive" and out["abstained"] is False
    top = out["citations"][0]
    assert {"source", "title", "score", "text"} <= top.keys()
    assert top["source"] == "benefits/time-off.md"  # relative to the ingested folder
    scores = [c["score"] for c in out["citations"]]
    assert all(0 < s <= 1 for s in scores)

    # --user restricts to that user's groups; default is the local admin.
    restricted = json.loads(_run("rag", "ask", "When are salary bands reviewed?", "--user", "ada", "--json"))
    assert all(c["source"] != "compensation.md" for c in restricted["citations"])
    allowed = json.loads(_run("rag", "ask", "When are salary bands reviewed?", "--user", "pia", "--json"))
    assert allowed["citations"][0]["source"] == "compensation.md"


def test_batch_keeps_ids(env, tmp_path: Path) -> None:
    root, plan = env
    _run("rag", "ingest", str(root / "public"), "--json")
    batch = tmp_path / "qs.jsonl"
    batch.write_text(
        json.dumps({"id": "q1", "question": "What is the daily meal allowance?", "kind": "x"})
        + "\n\n"
        + json.dumps({"id": 7, "question": "How often are laptops replaced?"})
        + "\n"
    )
    lines = [json.loads(x) for x in _run("rag", "ask", "--batch", str(batch), "--json").splitlines()]
    assert [x["id"] for x in lines] == ["q1", 7]
    assert lines[0]["citations"][0]["source"] == "expenses.md"
    assert lines[1]["citations"][0]["source"] == "it/laptops.html"


def test_bad_batch_line_names_the_problem(env, tmp_path: Path) -> None:
    batch = tmp_path / "bad.jsonl"
    batch.write_text(json.dumps({"id": "q1"}) + "\n")
    result = CliRunner().invoke(main, ["rag", "ask", "--batch", str(batch), "--json"])
    assert result.exit_code != 0
    assert "bad.jsonl:1" in result.output and "question" in result.output


def test_unknown_user_is_an_error(env) -> None:
    result = CliRunner().invoke(main, ["rag", "ask", "hello?", "--user", "mallory"])
    assert result.exit_code != 0 and "unknown user 'mallory'" in result.output


def test_cli_hands_work_to_a_running_service(env, embedder) -> None:
    """With `loopline serve` owning the embedded store, ingest and ask go over HTTP."""
    import rag.api
    from rag.service import RagService
    from shared.config import Settings
    from shared.runtime import ServiceInfo, announce, withdraw
    from shared.server import create_app

    root, plan = env
    settings = Settings()
    svc = RagService(settings, embedder_factory=lambda: embedder)  # holds the store's lock
    info = ServiceInfo.new("http://placeholder")
    app = create_app(settings, plugins=[lambda ctx: rag.api.plugin(ctx, service=svc)], local_token=info.token)
    with serve_in_thread(app) as url:
        info = ServiceInfo(url=url, pid=info.pid, token=info.token)
        announce(settings.home, info)
        try:
            result = CliRunner().invoke(main, ["rag", "ingest", str(root / "sales"), "--groups", "sales", "--json"])
            assert result.exit_code == 0, result.output
            assert "handing the work to the running service" in result.stderr
            assert json.loads(result.stdout)["added"] == 1
            # No bar over HTTP: the CLI says the service runs it, then prints the run's summary.
            shown = CliRunner().invoke(main, ["rag", "ingest", str(root / "sales"), "--groups", "sales", "--progress"])
            assert shown.exit_code == 0, shown.output
            assert "the service runs the ingest; its summary follows when the run ends" in shown.stderr
            assert "files" not in shown.stderr
            assert re.match(r"run #\d+ succeeded: 0 added, 0 updated, 1 unchanged", shown.stdout)
            out = json.loads(_run("rag", "ask", "Who approves a 25 percent discount?", "--user", "sol", "--json"))
            assert out["citations"][0]["source"] == "discounts.md"
            denied = json.loads(_run("rag", "ask", "Who approves a 25 percent discount?", "--user", "ada", "--json"))
            assert all(c["source"] != "discounts.md" for c in denied["citations"])
        finally:
            withdraw(settings.home, info)


def test_help_lists_the_commands() -> None:
    out = CliRunner().invoke(main, ["rag", "--help"]).output
    assert "ingest" in out and "ask" in out
    assert "serve" in CliRunner().invoke(main, ["--help"]).output


# --- progress ------------------------------------------------------------------------------
BAR_END = re.compile(r"ingest (\S+): 100%\|.*\| (\d+)/\2 files \[[^]]*, (\d+) chunks, [\d.]+ chunks/s\]")


def test_ingest_progress_bar_when_forced(env) -> None:
    """`--progress` draws files done/total, chunks so far and chunks/s on stderr; stdout stays JSON."""
    root, _ = env
    result = CliRunner().invoke(main, ["rag", "ingest", str(root / "public"), "--json", "--progress"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    last = BAR_END.findall(result.stderr)[-1]
    assert last == ("public", "4", str(summary["chunks"])) and summary["chunks"] > 0


def test_ingest_is_quiet_off_a_terminal(env) -> None:
    """Stderr is not a terminal (a pipe, a log file): no bar, only the summary line as before."""
    root, _ = env
    result = CliRunner().invoke(main, ["rag", "ingest", str(root / "public")])
    assert result.exit_code == 0, result.output
    assert "files" not in result.stderr and "chunks/s" not in result.stderr
    assert re.fullmatch(r"run #1 succeeded: 4 added, .*\(\d+ chunks, [\d.]+s\)\n", result.stdout)


def test_ingest_on_a_terminal_shows_the_bar_except_under_json(env) -> None:
    root, _ = env
    out, shown = run_in_terminal("rag", "ingest", str(root / "public"))
    assert out.startswith("run #1 succeeded: 4 added")
    assert BAR_END.search(shown)

    out, shown = run_in_terminal("rag", "ingest", str(root / "sales"), "--groups", "sales", "--json")
    assert json.loads(out)["added"] == 1
    assert "files" not in shown and "chunks" not in shown
