"""Settings of the vision vertical: the model registry, frames from devices, training.

A section of the one `shared.config.Settings` (named in the `loopline.settings` entry-point
group), read from the same flat `LOOPLINE_*` variables.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, Field


class VisionSettings(BaseModel):
    """Vision and the device API."""

    SECTIONS: ClassVar[dict[str, str]] = {"mlflow_tracking_uri": "Vision"}

    # Vision
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking server and model registry; SQLite under home if unset."
    )
    registered_model: str = Field("loopline-detector", description="Registered model name of the detector.")
    frame_max_bytes: int = Field(8_000_000, description="Largest frame upload accepted from a device.")
    frame_max_pixels: int = Field(
        16_777_216,
        description="Most pixels (width × height) a device frame may have; larger ones get 413 before decoding.",
    )
    frame_decode_concurrency: int = Field(
        2, ge=1, description="Frames decoded at once; further uploads wait their turn."
    )
    train_threads: int | None = Field(None, description="CPU threads for training; all cores if unset.")

    @property
    def resolved_mlflow_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.home / 'mlflow.db').resolve()}"  # type: ignore[attr-defined]  # core's home
