"""Frame selection for labeling: small registered rules, configured as data, behind quotas.

Each rule is one module (`close_to_threshold`, `classes`, `detections_number`, `random`,
`input_drift`) registered in `registry.RULE_BUILDERS`; `FrameSelector` applies the first
matching rule, then per-minute/per-day limits and near-duplicate suppression. It does not store or send
frames (see edge.outbox and edge.uploader).
"""

from edge.selection.base import BuildContext, ClassFilter, Rule, SelectionConfigError
from edge.selection.dedup import dhash, hamming
from edge.selection.input_drift import InputDrift
from edge.selection.registry import RULE_BUILDERS, load_rules
from edge.selection.selector import FrameSelector, default_selector

__all__ = [
    "RULE_BUILDERS",
    "BuildContext",
    "ClassFilter",
    "FrameSelector",
    "InputDrift",
    "Rule",
    "SelectionConfigError",
    "default_selector",
    "dhash",
    "hamming",
    "load_rules",
]
