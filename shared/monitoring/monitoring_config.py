"""The monitoring configuration: one YAML file, every section optional, validated at load.

Read from `LOOPLINE_MONITORING_FILE`, or `$LOOPLINE_HOME/monitoring.yaml` when that is
unset; a missing file means the defaults. `LOOPLINE_ALERT_WEBHOOKS` (comma-separated URLs)
adds receivers to the file's list, so a deployment can point alerts somewhere without a
file. A full example with the defaults:

    webhooks:
      urls: [https://hooks.example.com/loopline]
      attempts: 4          # tries per alert event
      backoff_s: 1.0       # then 2, 4, … seconds between tries
      timeout_s: 5
    freshness:
      default_slo_h: 24
      kinds: [ingest, sync]
      sources: [{match: "folder:/srv/handbook*", slo_h: 6}]
    runs:
      stuck_after_h: 2
      stuck_after_h_by_kind: {train: 12}
    drift:
      warn: 0.1
      alert: 0.25
    actions:
      - {type: retrain, kind: drift, streams: ["vision*"]}

Mistakes (unknown keys, unknown action types, bad values) are reported with the file name.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.config import Settings
from shared.monitoring.actions import DEFAULT_ACTIONS, ActionConfig, validate_actions
from shared.monitoring.freshness import FreshnessSLOs
from shared.monitoring.pipelines import RunThresholds
from shared.monitoring.webhooks import WebhookConfig


class DriftThresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    warn: float = Field(0.1, gt=0)
    alert: float = Field(0.25, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> DriftThresholds:
        if self.alert < self.warn:
            raise ValueError(f"drift.alert ({self.alert}) must not be below drift.warn ({self.warn})")
        return self


class MonitoringConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    webhooks: WebhookConfig = Field(default_factory=WebhookConfig)
    freshness: FreshnessSLOs = Field(default_factory=FreshnessSLOs)
    runs: RunThresholds = Field(default_factory=RunThresholds)
    drift: DriftThresholds = Field(default_factory=DriftThresholds)
    actions: list[ActionConfig] = Field(default_factory=lambda: [ActionConfig(**a) for a in DEFAULT_ACTIONS])

    @model_validator(mode="after")
    def _known_actions(self) -> MonitoringConfig:
        validate_actions(self.actions)
        return self


def monitoring_file(settings: Settings) -> Path:
    return settings.monitoring_file or settings.home / "monitoring.yaml"


def load_monitoring_config(settings: Settings) -> MonitoringConfig:
    """The configuration of `settings` (file, then LOOPLINE_ALERT_WEBHOOKS on top)."""
    path = monitoring_file(settings)
    data: dict = {}
    if path.exists():
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(
                f"{path}: expected a mapping with webhooks/freshness/runs/drift/actions, got {type(data).__name__}"
            )
    try:
        config = MonitoringConfig.model_validate(data)
    except ValidationError as exc:
        errs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"{path}: invalid monitoring configuration: {errs}") from exc
    extra = [u.strip() for u in (settings.alert_webhooks or "").split(",") if u.strip()]
    if extra:
        urls = list(dict.fromkeys([*config.webhooks.urls, *extra]))
        config = config.model_copy(update={"webhooks": config.webhooks.model_copy(update={"urls": urls})})
    return config
