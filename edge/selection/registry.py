"""The table from rule type to builder, and loading a rules config (a list of dicts) through it.

Configuration is data: `[{"type": "close_to_threshold", "name": "uncertain", "threshold": 0.25}]`.
Everything is checked at load time and every problem reported at once: unknown types (with
the known ones listed), missing or duplicate names, bad or unknown params. Adding a rule is
one module plus one line here.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from edge.selection import classes, close_to_threshold, detections_number, input_drift, random_share
from edge.selection.base import BuildContext, Params, Rule, SelectionConfigError, no_boost, no_reference

Builder = Callable[[str, Params, BuildContext], Rule]

RULE_BUILDERS: Mapping[str, Builder] = MappingProxyType(
    {
        close_to_threshold.TYPE: close_to_threshold.build,
        classes.TYPE: classes.build,
        detections_number.TYPE: detections_number.build,
        random_share.TYPE: random_share.build,
        input_drift.TYPE: input_drift.build,
    }
)


def load_rules(
    config: Sequence[Mapping[str, Any]],
    *,
    rng: random.Random | None = None,
    builders: Mapping[str, Builder] = RULE_BUILDERS,
    reference: Callable[[], Mapping[str, Any] | None] | None = None,
    boost: Callable[[], float] | None = None,
) -> list[Rule]:
    """Build the rules of `config`, in order; raise SelectionConfigError listing every problem.

    `reference` and `boost` are the providers of `BuildContext` (no reference, boost 1 if unset)."""
    if isinstance(config, (str, bytes)) or not isinstance(config, Sequence):
        raise SelectionConfigError(
            [f"rules must be a list of {{type, name, ...params}} objects, got {type(config).__name__}"]
        )
    ctx = BuildContext(
        rng=rng if rng is not None else random.Random(),
        reference=reference or no_reference,
        boost=boost or no_boost,
    )
    problems: list[str] = []
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(config):
        where = f"rule #{i + 1}"
        if not isinstance(entry, Mapping):
            problems.append(f"{where}: must be an object with 'type' and 'name', got {entry!r}")
            continue
        params = dict(entry)
        rtype, name = params.pop("type", None), params.pop("name", None)
        if isinstance(name, str) and name:
            where = f"{where} ('{name}')"
            if name in seen:
                problems.append(f"{where}: duplicate name, already used by rule #{seen[name]}; names must be unique")
            else:
                seen[name] = i + 1
        else:
            problems.append(
                f"{where}: 'name' must be a non-empty string (it is the reason reported for selected frames)"
            )
        if rtype not in builders:
            known = ", ".join(sorted(builders))
            problems.append(f"{where}: unknown type {rtype!r} (known: {known})")
            continue
        reader = Params(params)
        rule = builders[rtype](name if isinstance(name, str) else "", reader, ctx)
        problems.extend(f"{where}, type {rtype}: {p}" for p in reader.problems)
        problems.extend(f"{where}, type {rtype}: unknown param '{k}'" for k in reader.unknown())
        rules.append(rule)
    if problems:
        raise SelectionConfigError(problems)
    return rules
