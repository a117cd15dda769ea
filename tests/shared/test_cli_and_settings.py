"""The `loopline` command's plugin loading and the LOOPLINE_* settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from shared.cli import _missing_extra, main
from shared.config import Settings


def test_a_command_whose_extra_is_missing_says_which_to_install() -> None:
    cmd = _missing_extra("vision", ImportError("No module named 'ultralytics'", name="ultralytics"))
    result = CliRunner().invoke(cmd, ["train", "--epochs", "3"])
    assert result.exit_code != 0
    assert "pip install 'loopline[vision]'" in result.output
    assert "ultralytics" in result.output


def test_installed_verticals_are_listed() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "rag" in result.output and "serve" in result.output


def test_settings_come_from_loopline_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LOOPLINE_HOME", str(tmp_path))
    monkeypatch.setenv("LOOPLINE_TOP_K", "9")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    s = Settings()
    assert s.home == tmp_path and s.top_k == 9
    assert s.llm_base_url == "http://127.0.0.1:9/v1"  # the OpenAI client's own variable works too
    assert s.resolved_database_url == f"sqlite:///{(tmp_path / 'metadata.db').resolve()}"


def test_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPLINE_CHUNK_SIZE", "4000")
    with pytest.raises(ValueError, match="chunk_size"):
        Settings()
