"""Settings of the vision vertical: the model registry, frames from devices, training.

A section of the one `shared.config.Settings` (named in the `loopline.settings` entry-point
group), read from the same flat `LOOPLINE_*` variables.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, Field, SecretStr


class VisionSettings(BaseModel):
    """Vision and the device API."""

    SECTIONS: ClassVar[dict[str, str]] = {"mlflow_tracking_uri": "Vision", "label_studio_url": "Label Studio"}

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
    drift_sampling_boost: float = Field(
        4.0,
        ge=1.0,
        description="While a drift alert is open on a fleet's stream (`vision:FLEET`), its devices multiply their "
        "random and input-drift sampling shares by this (capped at 100%); back to 1 when the alert resolves.",
    )

    # The labeling and retraining loop
    loop_interval_s: float = Field(
        900.0,
        ge=0,
        description="Seconds between loop cycles (push, pull, maybe retrain) run by `loopline serve` when a Label "
        "Studio is configured or running; 0 turns the periodic loop off (`loopline loop run-once` still works).",
    )
    loop_min_new_labels: int = Field(
        20, ge=1, description="Labeled frames since the last retraining that trigger the next one."
    )
    loop_retrain_every_s: float = Field(
        0.0, ge=0, description="Also retrain on this schedule when there is any new label; 0: no schedule."
    )
    loop_holdout_share: float = Field(
        0.25, gt=0, lt=1, description="Share of labeled frames held out of training to judge candidates on."
    )
    loop_min_holdout: int = Field(
        5, ge=1, description="Held-out labeled frames needed before a retraining (the gate judges new data on them)."
    )
    loop_epochs: int = Field(10, ge=1, description="Fine-tuning epochs of a retraining, from the production weights.")
    loop_int8: bool = Field(True, description="Quantize retrained candidates to INT8 too (used where faster here).")
    loop_gate_tolerance: float = Field(
        0.02, ge=0, description="How much clean mAP50 a candidate may lose against production and still pass."
    )
    loop_gate_min_gain: float = Field(
        0.0,
        ge=-1,
        description="How much a candidate must beat production's mAP50 on held-out new frames by (negative: "
        "accept one no better, to force a refresh).",
    )
    loop_gate_max_class_drop: float = Field(
        0.15, ge=0, description="Largest fall of any class's clean AP50 a candidate may show (no class collapses)."
    )
    loop_webhook_url: str | None = Field(
        None,
        description="Where Label Studio sends annotation events (this service's `/v1/labeling/webhook` as Label "
        "Studio reaches it); unset: annotations are polled each cycle only.",
    )
    loop_webhook_secret: SecretStr | None = Field(
        None, description="Shared secret of the annotation webhook; generated and kept under home if unset."
    )

    # Label Studio (labelers annotate kept frames there; loopline talks to it over HTTP only)
    label_studio_url: str | None = Field(
        None,
        description="URL of an existing Label Studio server; unset: the local one `loopline labelstudio up` "
        "manages (data under home/labelstudio).",
    )
    label_studio_token: SecretStr | None = Field(
        None,
        description="API token (legacy token) of that existing server's account; the local server's is generated "
        "and kept in home/labelstudio/credentials.json.",
    )
    label_studio_port: int = Field(8090, description="Port of the local Label Studio (bound to 127.0.0.1 only).")
    label_studio_bin: str | None = Field(
        None,
        description="The `label-studio` executable of the local server; unset: the checkout's "
        "`.venv-labelstudio/bin/label-studio` (made by `make`) if present, else `label-studio` on PATH.",
    )
    label_studio_database_url: str | None = Field(
        None,
        description="PostgreSQL database of the local Label Studio (`postgresql://user:password@host:5432/name`; "
        "the database must exist, the first start migrates it); unset: SQLite under home/labelstudio/data.",
    )

    @property
    def resolved_mlflow_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.home / 'mlflow.db').resolve()}"  # type: ignore[attr-defined]  # core's home
