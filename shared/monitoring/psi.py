"""Population stability index (PSI): how far a current sample moved from its reference.

PSI = Σ (c_i - r_i) · ln(c_i / r_i) over bins, with r_i and c_i the reference and current
shares of bin i; it is the symmetrised Kullback-Leibler divergence KL(c‖r) + KL(r‖c).

- Numeric features: bins cut at the reference's quantiles (deciles by default), the outer
  bins open (-inf, q1) and [q9, +inf), so a current value beyond anything seen still counts;
  point masses get a bin of their own (see `histograms.quantile_edges`).
- Categorical features: one bin per reference category (the `max_categories` most frequent;
  rarer ones share an "(other)" bin) plus an "(unseen)" bin for values the reference never had.
- Shares are smoothed additively as Arize Phoenix does (its `AdditiveSmoothing` normaliser):
  each bin gets a pseudocount α, share = (count + α) / (n + α · bins). No bin is ever empty,
  so PSI is finite even when every current value is new, and small windows are pulled
  slightly towards uniform, which is the reference's own shape for quantile bins.
- An empty reference or current sample has no PSI: None, never a crash or a made-up 0.

Thresholds (warn 0.1, alert 0.25 by default) are the usual rule of thumb. Under no drift,
PSI·(1/n + 1/m)⁻¹ is about χ² with bins-1 degrees of freedom, so very small windows reach
"warn" by chance; callers that judge streams (`drift.py`) require a minimum window size.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from shared.monitoring.histograms import Histogram, quantile_edges

DEFAULT_BINS = 10
DEFAULT_SMOOTHING = 1.0  # Phoenix's default pseudocount
DEFAULT_WARN = 0.1
DEFAULT_ALERT = 0.25
UNSEEN = "(unseen)"
OTHER = "(other)"

PsiLevel = Literal["ok", "warn", "alert"]


@dataclass(frozen=True)
class PsiBin:
    """One bin of a comparison: its counts, smoothed shares and share of the PSI."""

    label: str
    reference: float
    current: float
    reference_share: float
    current_share: float
    contribution: float
    lower: float | None = None  # numeric bins: None stands for -inf / +inf
    upper: float | None = None


@dataclass(frozen=True)
class PsiResult:
    psi: float | None
    kind: Literal["numeric", "categorical"]
    reference_n: float
    current_n: float
    bins: list[PsiBin]

    def to_json(self) -> dict:
        return {
            "psi": None if self.psi is None else round(self.psi, 6),
            "kind": self.kind,
            "reference_n": _num(self.reference_n),
            "current_n": _num(self.current_n),
            "bins": [
                {
                    k: (round(v, 6) if isinstance(v, float) and k not in ("lower", "upper") else v)
                    for k, v in asdict(b).items()
                }
                for b in self.bins
            ],
        }


def smoothed_shares(counts: Sequence[float], smoothing: float = DEFAULT_SMOOTHING) -> np.ndarray:
    """(count + α) / (n + α·bins): Phoenix's additive smoothing."""
    c = np.asarray(counts, dtype=np.float64)
    return (c + smoothing) / (c.sum() + smoothing * len(c))


def psi_from_counts(
    reference: Sequence[float], current: Sequence[float], *, smoothing: float = DEFAULT_SMOOTHING
) -> float | None:
    """PSI of two count vectors over the same bins; None when either side is empty."""
    r = np.asarray(reference, dtype=np.float64)
    c = np.asarray(current, dtype=np.float64)
    if r.shape != c.shape:
        raise ValueError(f"reference has {r.size} bins and current {c.size}: compare counts over the same bins")
    if smoothing < 0:
        raise ValueError("smoothing must be non-negative")
    if r.sum() <= 0 or c.sum() <= 0:
        return None
    p, q = smoothed_shares(c, smoothing), smoothed_shares(r, smoothing)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p == q, 0.0, (p - q) * np.log(p / q))
    return float(np.sum(terms))


def psi_status(
    value: float | None, warn: float = DEFAULT_WARN, alert: float = DEFAULT_ALERT
) -> PsiLevel | Literal["no_data"]:
    """ "ok" below warn, "warn" from warn, "alert" from alert; "no_data" when there is no PSI."""
    if value is None:
        return "no_data"
    if value >= alert:
        return "alert"
    if value >= warn:
        return "warn"
    return "ok"


def compare_histograms(reference: Histogram, current: Histogram, *, smoothing: float = DEFAULT_SMOOTHING) -> PsiResult:
    """PSI of a current histogram against a reference one (current rebinned onto its edges)."""
    if current.edges != reference.edges:
        current = current.rebin(reference.edges)
    value = psi_from_counts(reference.counts, current.counts, smoothing=smoothing)
    labels = [_interval(lo, hi) for lo, hi in reference.bounds()]
    bounds = [(None if np.isinf(lo) else lo, None if np.isinf(hi) else hi) for lo, hi in reference.bounds()]
    bins = _bins(labels, reference.counts, current.counts, smoothing, bounds)
    return PsiResult(value, "numeric", reference.n, current.n, bins)


def compare_numeric(
    reference: Sequence[float],
    current: Sequence[float],
    *,
    bins: int = DEFAULT_BINS,
    smoothing: float = DEFAULT_SMOOTHING,
) -> PsiResult:
    """Quantile bins from `reference`, both samples counted into them, and their PSI."""
    edges = quantile_edges(reference, bins)
    ref = Histogram.from_values(reference, edges)
    cur = Histogram.from_values(current, edges)
    return compare_histograms(ref, cur, smoothing=smoothing)


def category_counts(
    reference: Mapping[str, float], current: Mapping[str, float], *, max_categories: int = 50
) -> tuple[list[str], list[float], list[float]]:
    """Bin labels and counts: the reference's top categories, "(other)" if any, and "(unseen)"."""
    ranked = sorted(((k, v) for k, v in reference.items() if v > 0), key=lambda kv: (-kv[1], kv[0]))
    kept = [k for k, _ in ranked[:max_categories]]
    labels = sorted(kept)
    has_other = len(ranked) > max_categories
    index = {k: i for i, k in enumerate(labels)}
    other_i = len(labels) if has_other else None
    unseen_i = len(labels) + (1 if has_other else 0)
    size = unseen_i + 1
    ref_counts, cur_counts = [0.0] * size, [0.0] * size
    for side, counts in ((reference, ref_counts), (current, cur_counts)):
        for k, v in side.items():
            if k in index:
                counts[index[k]] += v
            elif other_i is not None and k in reference and reference[k] > 0:
                counts[other_i] += v
            else:
                counts[unseen_i] += v
    return labels + ([OTHER] if has_other else []) + [UNSEEN], ref_counts, cur_counts


def compare_category_counts(
    reference: Mapping[str, float],
    current: Mapping[str, float],
    *,
    smoothing: float = DEFAULT_SMOOTHING,
    max_categories: int = 50,
) -> PsiResult:
    labels, ref, cur = category_counts(reference, current, max_categories=max_categories)
    value = psi_from_counts(ref, cur, smoothing=smoothing)
    return PsiResult(value, "categorical", float(sum(ref)), float(sum(cur)), _bins(labels, ref, cur, smoothing))


def compare_categorical(
    reference: Sequence[str],
    current: Sequence[str],
    *,
    smoothing: float = DEFAULT_SMOOTHING,
    max_categories: int = 50,
) -> PsiResult:
    """One bin per reference category plus "(unseen)", and their PSI."""
    return compare_category_counts(
        Counter(map(str, reference)), Counter(map(str, current)), smoothing=smoothing, max_categories=max_categories
    )


def psi(
    reference: Sequence[float],
    current: Sequence[float],
    *,
    bins: int = DEFAULT_BINS,
    smoothing: float = DEFAULT_SMOOTHING,
) -> float | None:
    """PSI of a numeric feature over the reference's quantile bins; None if a side is empty."""
    return compare_numeric(reference, current, bins=bins, smoothing=smoothing).psi


def categorical_psi(
    reference: Sequence[str],
    current: Sequence[str],
    *,
    smoothing: float = DEFAULT_SMOOTHING,
    max_categories: int = 50,
) -> float | None:
    """PSI of a categorical feature, one bin per reference category plus "(unseen)"."""
    return compare_categorical(reference, current, smoothing=smoothing, max_categories=max_categories).psi


def _bins(
    labels: list[str],
    ref: Sequence[float],
    cur: Sequence[float],
    smoothing: float,
    bounds: list[tuple[float | None, float | None]] | None = None,
) -> list[PsiBin]:
    r, c = np.asarray(ref, dtype=np.float64), np.asarray(cur, dtype=np.float64)
    q = smoothed_shares(r, smoothing) if r.sum() > 0 else np.zeros_like(r)
    p = smoothed_shares(c, smoothing) if c.sum() > 0 else np.zeros_like(c)
    with np.errstate(divide="ignore", invalid="ignore"):
        contrib = np.where((p > 0) & (q > 0) & (p != q), (p - q) * np.log(p / q), 0.0)
    out = []
    for i, label in enumerate(labels):
        lo, hi = bounds[i] if bounds else (None, None)
        out.append(PsiBin(label, float(r[i]), float(c[i]), float(q[i]), float(p[i]), float(contrib[i]), lo, hi))
    return out


def _interval(lo: float, hi: float) -> str:
    left = "(-inf" if np.isinf(lo) else f"[{lo:.6g}"
    right = "+inf)" if np.isinf(hi) else f"{hi:.6g})"
    return f"{left}, {right}"


def _num(x: float) -> float | int:
    return int(x) if float(x).is_integer() else round(x, 6)
