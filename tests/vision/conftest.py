"""A model registry with exported versions but no training: MLflow on SQLite, tiny ONNX files.

Training takes tens of seconds; promotion, rollback and the device API only need registered
versions whose exported file and tags look like `vision export` left them.

Also `label_studio`: one real Label Studio per session (tests/helpers/labelstudio.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from labelstudio import LabelStudioServer, executable
from registry_versions import Versions

from shared.config import Settings


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> Versions:
    """A fresh registry per test module (MLflow set-up takes a few seconds)."""
    pytest.importorskip("mlflow")
    pytest.importorskip("onnx")
    from vision.registry import ModelRegistry

    settings = Settings(home=tmp_path_factory.mktemp("registry-home"))
    return Versions(settings, ModelRegistry.from_settings(settings))


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    """A real Label Studio for the session, on a copy of a migrated template and a free port.

    Attributes: url, token, username, home, files_root, port, pid; start(), stop(), restart().
    Skipped where Label Studio is not installed (failed under CI=true); stopped at the end.
    """
    server = LabelStudioServer(tmp_path_factory.mktemp("labelstudio-home"), executable())
    server.start()
    yield server
    server.stop()
