"""Registered versions without training: what promotion, rollback and the device API need."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from fake_central import mean_model

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
