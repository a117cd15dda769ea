"""Settings: the core's own fields plus one section per installed package, in one object.

Each package declares its fields (and their descriptions) once, in its own module; the
environment names stay flat `LOOPLINE_*`, whatever section a field lives in.
"""

from __future__ import annotations

import pytest

from shared.config import CoreSettings, Settings, sections


def own_fields(cls: type) -> set[str]:
    return {name for name in cls.__annotations__ if name in cls.model_fields}


def test_each_installed_package_brings_its_section() -> None:
    names = {cls.__name__ for cls in sections()}
    assert {"RagSettings", "VisionSettings"} <= names
    assert "chunk_size" not in CoreSettings.model_fields and "frame_max_bytes" not in CoreSettings.model_fields


def test_every_field_is_declared_once_and_described() -> None:
    parts = [CoreSettings, *sections()]
    declared = [name for cls in parts for name in own_fields(cls)]
    assert len(declared) == len(set(declared)), "a field is declared by two packages"
    assert set(declared) == set(Settings.model_fields)
    assert all(field.description for field in Settings.model_fields.values())


def test_sections_read_the_same_flat_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # noqa: ANN001
    monkeypatch.setenv("LOOPLINE_HOME", str(tmp_path))
    monkeypatch.setenv("LOOPLINE_CHUNK_SIZE", "120")
    monkeypatch.setenv("LOOPLINE_FRAME_MAX_BYTES", "1234")
    monkeypatch.setenv("OPENAI_MODEL", "local-model")
    s = Settings()
    assert (s.home, s.chunk_size, s.frame_max_bytes, s.llm_model) == (tmp_path, 120, 1234, "local-model")
    assert s.resolved_mlflow_uri == f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    with pytest.raises(ValueError, match="chunk_size"):
        Settings(chunk_size=1000)
