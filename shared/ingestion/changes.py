"""Change detection: what a re-sync must add, update, keep and delete."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class ChangePlan:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


def plan_changes(indexed: Mapping[str, str], found: Mapping[str, str], *, complete: bool = True) -> ChangePlan:
    """Compare {path: hash} of the index with {path: hash} found now.

    Paths absent from `found` are deleted only when the scan is `complete` (a folder),
    never for a single-file ingest.
    """
    plan = ChangePlan()
    for path, digest in found.items():
        old = indexed.get(path)
        if old is None:
            plan.added.append(path)
        elif old != digest:
            plan.updated.append(path)
        else:
            plan.unchanged.append(path)
    if complete:
        plan.deleted = sorted(p for p in indexed if p not in found)
    return plan
