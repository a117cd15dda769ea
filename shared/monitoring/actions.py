"""What an alert sets in motion: a registry of small action types, configured as data.

The `actions` list of the monitoring YAML holds entries `{type, kind, name?, …params}`:
`type` picks a builder from `ACTION_TYPES`, `kind` is a glob over alert kinds (not `on`:
YAML reads a bare `on` as `true`), the rest are
that type's parameters, validated when the configuration is loaded — an unknown type, a
bad parameter or a duplicate name is reported then (with the known types), not when the
first alert fires. Actions run once, when an alert opens (not on every sighting).

Types:
- `retrain` (`streams`: globs, default `["vision*"]`): a drift alert on a matching stream
  adds a retraining request (`AlertStore.request_retraining`) that the retraining loop takes
  with `AlertStore.open_retraining_requests()` and `AlertStore.consume(id, by)`. While a
  request for the stream is still open, no second one is added.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from types import MappingProxyType
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.monitoring.alert_store import Alert, AlertStore

log = logging.getLogger(__name__)


class ActionConfig(BaseModel):
    """One entry of the `actions` list; type-specific parameters ride along as extras."""

    model_config = ConfigDict(extra="allow")

    type: str
    kind: str = Field("*", description="Glob over alert kinds, e.g. 'drift' or 'run_*'.")
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or f"{self.type} on {self.kind}"

    def params(self) -> dict:
        return dict(self.model_extra or {})


class Action(Protocol):
    name: str

    def applies_to(self, alert: Alert) -> bool: ...

    def __call__(self, alert: Alert) -> str | None:
        """Do it; a short description of what was done (for the log), or None."""
        ...


@dataclass(frozen=True)
class ActionDeps:
    """What builders may use: the stores an action writes to."""

    alerts: AlertStore


# --- retrain -----------------------------------------------------------------------------
class RetrainParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    streams: list[str] = Field(default_factory=lambda: ["vision*"], description="Globs over stream names.")


def alert_stream(alert: Alert) -> str:
    """The monitored stream an alert is about: details['stream'], else the key's first part."""
    return str(alert.details.get("stream") or alert.key.split("/", 1)[0])


@dataclass(frozen=True)
class RetrainAction:
    name: str
    kind: str
    streams: tuple[str, ...]
    alerts: AlertStore

    def applies_to(self, alert: Alert) -> bool:
        stream = alert_stream(alert)
        return fnmatchcase(alert.kind, self.kind) and any(fnmatchcase(stream, g) for g in self.streams)

    def __call__(self, alert: Alert) -> str | None:
        stream = alert_stream(alert)
        request, added = self.alerts.request_retraining(
            stream, f"{alert.kind} alert {alert.key}: {alert.message}", alert_id=alert.id, now=alert.raised_at
        )
        if added:
            return f"retraining request #{request.id} opened for stream {stream}"
        return f"retraining request #{request.id} for stream {stream} is still open; none added"


def _build_retrain(config: ActionConfig, params: RetrainParams, deps: ActionDeps) -> Action:
    return RetrainAction(name=config.label, kind=config.kind, streams=tuple(params.streams), alerts=deps.alerts)


# --- registry ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ActionType:
    params: type[BaseModel]
    build: Callable[[ActionConfig, BaseModel, ActionDeps], Action]
    summary: str


ACTION_TYPES: Mapping[str, ActionType] = MappingProxyType(
    {
        "retrain": ActionType(
            RetrainParams, _build_retrain, "a drift alert on a matching stream opens a retraining request"
        ),
    }
)

DEFAULT_ACTIONS: tuple[dict, ...] = ({"type": "retrain", "kind": "drift", "streams": ["vision*"]},)


def validate_actions(entries: Sequence[ActionConfig]) -> None:
    """Raise ValueError naming every unknown type, bad parameter and duplicate name."""
    problems = []
    names: set[str] = set()
    for i, entry in enumerate(entries):
        action_type = ACTION_TYPES.get(entry.type)
        if action_type is None:
            problems.append(f"actions[{i}]: unknown type '{entry.type}' (known: {', '.join(sorted(ACTION_TYPES))})")
        else:
            try:
                action_type.params.model_validate(entry.params())
            except ValidationError as exc:
                errs = "; ".join(f"{'.'.join(map(str, e['loc'])) or '-'}: {e['msg']}" for e in exc.errors())
                problems.append(f"actions[{i}] ({entry.type}): {errs}")
        if entry.name is not None:
            if entry.name in names:
                problems.append(f"actions[{i}]: duplicate name '{entry.name}'")
            names.add(entry.name)
    if problems:
        raise ValueError("; ".join(problems))


def build_actions(entries: Sequence[ActionConfig], deps: ActionDeps) -> list[Action]:
    validate_actions(entries)
    built = []
    for entry in entries:
        action_type = ACTION_TYPES[entry.type]
        built.append(action_type.build(entry, action_type.params.model_validate(entry.params()), deps))
    return built
