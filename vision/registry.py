"""The model registry: MLflow runs, registered versions and the aliases devices follow.

Each training is an MLflow run (parameters, dataset version, code version, metrics,
weights); each run registers one version of the detector. Aliases `candidate` and
`production` (and `production-FLEET` for a fleet of its own) say what devices should run;
`promote` moves production and remembers the history that `rollback` walks back; a fleet's
history starts with the all-fleet versions it ran before it got an alias of its own.
SQLite under LOOPLINE_HOME by default, a tracking server by URL.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from shared.config import Settings

log = logging.getLogger(__name__)
EXPERIMENT = "loopline-vision"
HISTORY_TAG = "production_history"


@dataclass
class ModelVersion:
    version: str
    run_id: str
    source: str
    tags: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)


def fleet_alias(fleet: str | None) -> str:
    """The registry alias a fleet follows: `production`, or `production-FLEET` of its own."""
    return f"production-{re.sub(r'[^A-Za-z0-9_-]', '_', fleet)}" if fleet else "production"


def code_version(repo: Path | None = None) -> str:
    """The git commit of the code (with '+dirty' when modified), or the package version."""
    try:
        root = repo or Path(__file__).resolve().parent.parent
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if sha.returncode == 0:
            dirty = subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=5,
            )
            return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import version

    return f"loopline-{version('loopline')}"


class ModelRegistry:
    def __init__(self, tracking_uri: str, artifact_root: Path, name: str) -> None:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # stdout is the CLI's result
        import mlflow
        from mlflow import MlflowClient

        # mlflow configures its own INFO logger on import; database set-up chatter is noise here.
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)

        self.name = name
        self.tracking_uri = tracking_uri
        self._mlflow = mlflow
        self.client = MlflowClient(tracking_uri=tracking_uri)
        exp = self.client.get_experiment_by_name(EXPERIMENT)
        if exp is None and tracking_uri.startswith(("http://", "https://")):
            # A tracking server keeps artifacts where it is configured to (`--artifacts-destination`,
            # e.g. S3) and proxies them: clients write nothing to their own disk.
            self.experiment_id = self.client.create_experiment(EXPERIMENT)
        elif exp is None:
            artifact_root.mkdir(parents=True, exist_ok=True)
            self.experiment_id = self.client.create_experiment(
                EXPERIMENT, artifact_location=artifact_root.resolve().as_uri()
            )
        else:
            self.experiment_id = exp.experiment_id
        try:
            self.client.get_registered_model(name)
        except Exception:  # mlflow raises RestException / MlflowException for "not found"
            self.client.create_registered_model(name, description="loopline detector (YOLO, ONNX variants)")

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelRegistry:
        settings.ensure_home()
        return cls(settings.resolved_mlflow_uri, settings.home / "mlartifacts", settings.registered_model)

    # --- writing ---------------------------------------------------------------------
    def record_training(
        self,
        *,
        params: dict,
        metrics: dict[str, float],
        weights: Path,
        tags: dict[str, str],
        artifacts: dict[str, Path] | None = None,
    ) -> ModelVersion:
        """Log one training run and register its weights as a new version (alias candidate)."""
        run = self.client.create_run(self.experiment_id, tags={"loopline.kind": "train", **tags})
        rid = run.info.run_id
        for k, v in params.items():
            self.client.log_param(rid, k, v)
        for k, v in metrics.items():
            self.client.log_metric(rid, k, float(v))
        self.client.log_artifact(rid, str(weights), artifact_path="weights")
        for art_path, p in (artifacts or {}).items():
            self.client.log_artifact(rid, str(p), artifact_path=art_path)
        self.client.set_terminated(rid, "FINISHED")
        mv = self.client.create_model_version(
            self.name, source=f"{run.info.artifact_uri}/weights", run_id=rid, tags=tags
        )
        self.client.set_registered_model_alias(self.name, "candidate", mv.version)
        log.info("registered %s version %s (run %s)", self.name, mv.version, rid)
        return self.get(mv.version)

    def log_artifact(self, version: str, path: Path, artifact_path: str) -> None:
        self.client.log_artifact(self.get(version).run_id, str(path), artifact_path=artifact_path)

    def set_tags(self, version: str, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_model_version_tag(self.name, version, k, str(v))

    # --- reading ---------------------------------------------------------------------
    def get(self, ref: str) -> ModelVersion:
        """A version by number, or by alias (`production`, `candidate`, `production-line-2`)."""
        ref = str(ref)
        try:
            mv = (
                self.client.get_model_version(self.name, ref)
                if ref.isdigit()
                else self.client.get_model_version_by_alias(self.name, ref)
            )
        except Exception as exc:
            raise LookupError(
                f"no version '{ref}' of model '{self.name}' in the registry ({self.tracking_uri})"
            ) from exc
        return ModelVersion(
            version=str(mv.version),
            run_id=mv.run_id,
            source=mv.source,
            tags=dict(mv.tags or {}),
            aliases=list(mv.aliases or []),
        )

    def versions(self) -> list[ModelVersion]:
        found = self.client.search_model_versions(f"name='{self.name}'")
        return sorted((self.get(str(mv.version)) for mv in found), key=lambda m: int(m.version))

    def run_metrics(self, version: str) -> dict[str, float]:
        return dict(self.client.get_run(self.get(version).run_id).data.metrics)

    def production(self, fleet: str | None = None) -> ModelVersion | None:
        for alias in ([fleet_alias(fleet)] if fleet else []) + ["production"]:
            try:
                return self.get(alias)
            except LookupError:
                continue
        return None

    # --- promotion -------------------------------------------------------------------
    def _history(self, alias: str) -> list[str]:
        tags = self.client.get_registered_model(self.name).tags or {}
        return json.loads(tags.get(f"{HISTORY_TAG}.{alias}", "[]"))

    def promote(self, version: str, fleet: str | None = None) -> ModelVersion:
        mv = self.get(version)
        alias = fleet_alias(fleet)
        history = self._history(alias)
        if fleet and not history:
            # Until now the fleet followed the all-fleet alias: what it ran that way is its
            # history too, so `rollback --fleet` can go back to it.
            history = self._history(fleet_alias(None))
        if not history or history[-1] != mv.version:
            history.append(mv.version)
        self.client.set_registered_model_tag(self.name, f"{HISTORY_TAG}.{alias}", json.dumps(history[-50:]))
        self.client.set_registered_model_alias(self.name, alias, mv.version)
        log.info("promoted %s version %s to %s", self.name, mv.version, alias)
        return self.get(mv.version)

    def rollback(self, fleet: str | None = None) -> ModelVersion:
        alias = fleet_alias(fleet)
        history = self._history(alias)
        if len(history) < 2:
            raise LookupError(f"nothing to roll back to: '{alias}' has no earlier production version")
        history.pop()
        self.client.set_registered_model_tag(self.name, f"{HISTORY_TAG}.{alias}", json.dumps(history))
        self.client.set_registered_model_alias(self.name, alias, history[-1])
        log.info("rolled %s back to version %s", alias, history[-1])
        return self.get(history[-1])

    def download(self, version: str, artifact: str, dst: Path) -> Path:
        rid = self.get(version).run_id
        dst.mkdir(parents=True, exist_ok=True)
        return Path(
            self._mlflow.artifacts.download_artifacts(
                run_id=rid, artifact_path=artifact, dst_path=str(dst), tracking_uri=self.tracking_uri
            )
        )
