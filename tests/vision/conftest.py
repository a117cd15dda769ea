"""A model registry with exported versions but no training: MLflow on SQLite, tiny ONNX files.

Training takes tens of seconds; promotion, rollback and the device API only need registered
versions whose exported file and tags look like `vision export` left them.

Also `label_studio`: one real Label Studio per session (tests/helpers/labelstudio.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fake_central import mean_model
from labelstudio import LabelStudioServer, executable

from shared.config import Settings


@dataclass
class Versions:
    settings: Settings
    registry: object

    def add(self, model: bytes | None = None) -> str:
        """Register a version and write its FP32 export with the tags export records."""
        from vision.training import model_dir

        weights = self.settings.home / "best.pt"
        weights.write_bytes(b"not trained")
        mv = self.registry.record_training(params={}, metrics={"mAP50": 0.5}, weights=weights, tags={"imgsz": "32"})
        data = model if model is not None else mean_model(1.0)
        folder = model_dir(self.settings, mv.version)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.fp32.onnx").write_bytes(data)
        self.registry.set_tags(
            mv.version,
            {
                "onnx.fp32.sha256": hashlib.sha256(data).hexdigest(),
                "onnx.fp32.size": len(data),
                "preferred_precision": "fp32",
                "precisions": "fp32",
            },
        )
        return mv.version


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
