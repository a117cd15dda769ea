"""Quality gates: does an evaluation's result clear its thresholds and not regress?

A gate file (YAML) names metrics with an absolute floor or ceiling and a tolerated
regression against a baseline (the production model's figures, or a stored result):

    metrics:
      mAP50: {min: 0.5, max_regression: 0.02}
      hit@5: {min: 0.8}
      wrong_abstain_rate_answerable: {max: 0.2, higher_is_better: false}
      per_class.scratch.ap50: {min: 0.3}
    baseline: production          # vision: a registry alias or version to compare with
    baseline_file: rag-base.json  # rag: a stored `loopline eval rag --json` output

`check_gate(results, gate, baseline)` is the one decision used by the CLI (exit code 3
on failure), CI and the retraining loop. A metric missing from the results fails its
check: a gate that silently skips is no gate. Without a baseline (no production model
yet) regression checks are reported as skipped; absolute checks still apply.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

GATE_FAILED_EXIT_CODE = 3


class MetricCheck(BaseModel):
    """Bounds for one metric; at least one must be given."""

    model_config = ConfigDict(extra="forbid")
    min: float | None = None
    max: float | None = None
    max_regression: float | None = Field(None, ge=0, description="Tolerated worsening against the baseline.")
    higher_is_better: bool = True

    @model_validator(mode="after")
    def _something_to_check(self) -> MetricCheck:
        if self.min is None and self.max is None and self.max_regression is None:
            raise ValueError("give at least one of min, max, max_regression")
        return self


class Gate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metrics: dict[str, MetricCheck] = Field(min_length=1)
    baseline: str | None = Field(None, description="Registry alias or version to compare with (vision).")
    baseline_file: Path | None = Field(None, description="Stored result JSON to compare with (rag).")
    baseline_eval: Literal["rerun", "recorded"] = Field(
        "rerun", description="vision: re-evaluate the baseline model on the same data, or use its recorded run metrics."
    )

    @property
    def needs_baseline(self) -> bool:
        return any(c.max_regression is not None for c in self.metrics.values())


def load_gate(path: Path) -> Gate:
    """Read and validate a gate file; baseline_file is resolved against the gate file's folder."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"gate file {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"gate file {path}: not valid YAML ({exc})") from exc
    try:
        gate = Gate.model_validate(raw or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"gate file {path}: {problems}") from exc
    if gate.baseline_file is not None and not gate.baseline_file.is_absolute():
        gate.baseline_file = (path.parent / gate.baseline_file).resolve()
    return gate


class CheckResult(BaseModel):
    metric: str
    value: float | None
    baseline: float | None = None
    status: Literal["pass", "fail", "skipped"]
    reason: str = ""


class GateResult(BaseModel):
    passed: bool
    checks: list[CheckResult]
    baseline_label: str | None = None

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == "fail"]

    def table(self, *, only_failed: bool = False) -> str:
        """A plain-text table of the checks (what the CLI prints to stderr)."""
        rows = self.failed if only_failed else self.checks
        head = ("metric", "value", "baseline", "status", "why")
        body = [(c.metric, _fmt(c.value), _fmt(c.baseline), c.status, c.reason) for c in rows]
        widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [head, *body]
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.4g}"


def metric_value(results: dict[str, Any], name: str) -> float | None:
    """A metric of a result: `overall[name]`, then `name`, then a dotted path (per_class.scratch.ap50)."""
    for scope in (results.get("overall"), results):
        if isinstance(scope, dict) and name in scope:
            return _number(scope[name])
    node: Any = results
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return _number(node)


def _number(x: Any) -> float | None:
    if isinstance(x, bool):
        return float(x)
    if isinstance(x, (int, float)) and not math.isnan(float(x)):
        return float(x)
    return None


def check_gate(
    results: dict[str, Any], gate: Gate, baseline: dict[str, Any] | None, *, baseline_label: str | None = None
) -> GateResult:
    """Every bound of every gated metric, checked; passed when none failed."""
    checks: list[CheckResult] = []
    for name, check in gate.metrics.items():
        value = metric_value(results, name)
        base = metric_value(baseline, name) if baseline is not None else None
        if value is None:
            checks.append(
                CheckResult(metric=name, value=None, baseline=base, status="fail", reason="metric not in the results")
            )
            continue
        reasons = []
        if check.min is not None and value < check.min:
            reasons.append(f"below min {check.min:g}")
        if check.max is not None and value > check.max:
            reasons.append(f"above max {check.max:g}")
        skipped = ""
        if check.max_regression is not None:
            if base is None:
                skipped = "no baseline value: regression not checked"
            else:
                worse = (base - value) if check.higher_is_better else (value - base)
                if worse > check.max_regression + 1e-12:
                    reasons.append(f"regressed {worse:.4g} vs baseline (tolerance {check.max_regression:g})")
        if reasons:
            checks.append(
                CheckResult(metric=name, value=value, baseline=base, status="fail", reason="; ".join(reasons))
            )
        elif skipped and check.min is None and check.max is None:
            checks.append(CheckResult(metric=name, value=value, baseline=base, status="skipped", reason=skipped))
        else:
            checks.append(CheckResult(metric=name, value=value, baseline=base, status="pass", reason=skipped))
    return GateResult(passed=not any(c.status == "fail" for c in checks), checks=checks, baseline_label=baseline_label)
