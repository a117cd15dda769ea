"""The promotion gate: a candidate replaces production only if it is better where it must be.

Both models are scored on the same sets: the production dataset's validation split ("clean":
what the fleet saw so far) and the held-out labeled frames ("new": what the fleet sees now).
The candidate passes when
- its clean mAP50 is not worse than production's by more than `tolerance`,
- its new-data mAP50 beats production's by more than `min_gain`, and
- no class collapses: no class's clean AP50 falls by more than `max_class_drop`.
Every check is kept with both values, so a rejection says exactly why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class GateRules:
    tolerance: float = 0.02
    min_gain: float = 0.0
    max_class_drop: float = 0.15


@dataclass
class GateVerdict:
    passed: bool
    checks: list[dict] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        return [c["why"] for c in self.checks if not c["passed"]]

    def to_json(self) -> dict:
        return asdict(self) | {"reasons": self.reasons}


def judge(production: dict, candidate: dict, rules: GateRules = GateRules()) -> GateVerdict:
    """`production`/`candidate`: {"clean": evaluate_detector(...), "new": evaluate_detector(...) or None}."""
    checks: list[dict] = []

    def check(name: str, passed: bool, prod: float | None, cand: float | None, why: str) -> None:
        checks.append({"check": name, "passed": bool(passed), "production": prod, "candidate": cand, "why": why})

    p, c = production["clean"]["mAP50"], candidate["clean"]["mAP50"]
    check(
        "clean_map50",
        c >= p - rules.tolerance,
        p,
        c,
        f"clean mAP50 {c:.3f} vs production {p:.3f}: must not fall by more than {rules.tolerance:.3f}",
    )
    if production.get("new") is None or candidate.get("new") is None:
        check("new_map50", False, None, None, "no held-out labeled frames to judge the new data on yet")
    else:
        p, c = production["new"]["mAP50"], candidate["new"]["mAP50"]
        check(
            "new_map50",
            c > p + rules.min_gain,
            p,
            c,
            f"new-data mAP50 {c:.3f} vs production {p:.3f}: must gain more than {rules.min_gain:.3f}",
        )
    per_p, per_c = production["clean"].get("per_class", {}), candidate["clean"].get("per_class", {})
    for cls, m in sorted(per_p.items()):
        before, after = m["ap50"], per_c.get(cls, {}).get("ap50", 0.0)
        check(
            f"class_{cls}",
            after >= before - rules.max_class_drop,
            before,
            after,
            f"class {cls}: clean AP50 {after:.3f} vs production {before:.3f}: "
            f"must not fall by more than {rules.max_class_drop:.3f}",
        )
    return GateVerdict(passed=all(ch["passed"] for ch in checks), checks=checks)
