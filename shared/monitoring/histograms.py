"""Mergeable histograms: counts over fixed cut points, so devices can send counts, not values.

A `Histogram` has cut points `edges` e0 < e1 < … < e(k-1) and k+1 counts over the bins
(-inf, e0), [e0, e1), …, [e(k-1), +inf): the outer bins are open, so no value ever falls
outside, and bins are closed on the left (a value equal to a cut point counts in the bin
that starts there). Histograms over the same edges merge by adding counts.

Mismatched edges are handled by `rebin`, and only there:
- exact when every target cut point is also a source cut point (coarsening, the usual case:
  a reference built by `coarsen` from a device's fixed edges keeps a subset of them);
- otherwise a finite source bin [a, b) spreads its count over the target bins it overlaps in
  proportion to the overlap length (values assumed uniform inside the bin), and an open outer
  source bin puts its whole count in the target bin next to its finite end, since nothing is
  known about how far it stretches.
`merge` rebins the other histogram onto this one's edges when they differ.

It computes no statistics (that is `psi.py`) and stores nothing (that is `drift_store.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np


@dataclass(frozen=True)
class Histogram:
    """Counts (floats: rebinning may split a count) over the bins cut at `edges`."""

    edges: tuple[float, ...]
    counts: tuple[float, ...]

    def __post_init__(self) -> None:
        edges = tuple(float(e) for e in self.edges)
        counts = tuple(float(c) for c in self.counts)
        if len(counts) != len(edges) + 1:
            raise ValueError(
                f"a histogram over {len(edges)} cut points needs {len(edges) + 1} counts "
                f"(the two open outer bins included), got {len(counts)}"
            )
        if any(not np.isfinite(e) for e in edges):
            raise ValueError("cut points must be finite numbers; the outer bins are already open")
        if any(b <= a for a, b in pairwise(edges)):
            raise ValueError(f"cut points must be strictly increasing, got {list(edges)}")
        if any(c < 0 or not np.isfinite(c) for c in counts):
            raise ValueError("counts must be finite and non-negative")
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "counts", counts)

    # --- construction ------------------------------------------------------------------
    @classmethod
    def empty(cls, edges: Sequence[float]) -> Histogram:
        return cls(tuple(edges), (0.0,) * (len(edges) + 1))

    @classmethod
    def from_values(
        cls, values: Iterable[float], edges: Sequence[float], weights: Iterable[float] | None = None
    ) -> Histogram:
        """Count `values` (NaN dropped) into the bins of `edges`, each counting `weight` (default 1)."""
        v = np.asarray(list(values), dtype=np.float64)
        w = np.ones_like(v) if weights is None else np.asarray(list(weights), dtype=np.float64)
        keep = ~np.isnan(v)
        idx = np.searchsorted(np.asarray(edges, dtype=np.float64), v[keep], side="right")
        counts = np.bincount(idx, weights=w[keep], minlength=len(edges) + 1)
        return cls(tuple(edges), tuple(counts.tolist()))

    # --- reading -----------------------------------------------------------------------
    @property
    def n(self) -> float:
        return float(sum(self.counts))

    def array(self) -> np.ndarray:
        return np.asarray(self.counts, dtype=np.float64)

    def bounds(self) -> list[tuple[float, float]]:
        """(lower, upper) of each bin, with -inf and +inf for the open outer bins."""
        cuts = [-np.inf, *self.edges, np.inf]
        return list(pairwise(cuts))

    def to_json(self) -> dict:
        return {"edges": list(self.edges), "counts": [round(c, 6) for c in self.counts]}

    @classmethod
    def from_json(cls, data: dict) -> Histogram:
        return cls(tuple(data["edges"]), tuple(data["counts"]))

    # --- combining ---------------------------------------------------------------------
    def merge(self, other: Histogram) -> Histogram:
        """Counts of both, over this histogram's edges (`other` rebinned when its edges differ)."""
        if other.edges != self.edges:
            other = other.rebin(self.edges)
        return Histogram(self.edges, tuple((self.array() + other.array()).tolist()))

    def rebin(self, edges: Sequence[float]) -> Histogram:
        """The same counts over other cut points; see the module docstring for the rules."""
        target = np.asarray(edges, dtype=np.float64)
        if tuple(float(e) for e in edges) == self.edges:
            return self
        out = np.zeros(len(target) + 1)
        src = self.edges
        for i, count in enumerate(self.counts):
            if count == 0:
                continue
            if not src:  # a single bin covering everything: nothing to split it by
                out[0] += count
                continue
            if i == 0:  # (-inf, e0): next to e0, on its left
                out[np.searchsorted(target, src[0], side="left")] += count
            elif i == len(src):  # [e_last, +inf): the bin that holds e_last
                out[np.searchsorted(target, src[-1], side="right")] += count
            else:
                a, b = src[i - 1], src[i]
                lo = np.concatenate(([-np.inf], target))
                hi = np.concatenate((target, [np.inf]))
                overlap = np.clip(np.minimum(hi, b) - np.maximum(lo, a), 0.0, None)
                out += count * overlap / (b - a)
        return Histogram(tuple(target.tolist()), tuple(out.tolist()))

    def coarsen(self, bins: int) -> Histogram:
        """Merge adjacent bins into about `bins` groups of equal mass (cut points kept are a subset).

        How a reference built from a device's fine fixed bins becomes decile-like: a group
        closes once the running count reaches the next multiple of n/bins, a bin heavier than
        one share forms a group of its own, and empty bins at either end join the outer
        groups, so every group has reference mass and the outer ones stay open.
        """
        total = self.n
        if bins < 1:
            raise ValueError("bins must be at least 1")
        if total <= 0 or len(self.counts) <= bins:
            return self
        share = total / bins
        keep: list[float] = []
        cum = 0.0
        nxt = share
        for i, count in enumerate(self.counts[:-1]):
            cum += count
            if cum >= nxt * (1 - 1e-12) and total - cum > 1e-9 * total:
                keep.append(self.edges[i])  # cut between bin i and bin i+1
                nxt = (np.floor(cum / share + 1e-9) + 1) * share
        return self.rebin(keep)


def merge_all(histograms: Iterable[Histogram], edges: Sequence[float] | None = None) -> Histogram | None:
    """Sum of histograms over `edges` (default: the first one's); None when there are none."""
    merged: Histogram | None = None if edges is None else Histogram.empty(edges)
    for h in histograms:
        merged = h if merged is None else merged.merge(h)
    return merged


def weighted_quantiles(values: np.ndarray, probs: Sequence[float], weights: np.ndarray | None = None) -> np.ndarray:
    """Quantiles of weighted samples (plain `np.quantile` when unweighted or equally weighted)."""
    if weights is None or np.allclose(weights, weights[0]):
        return np.quantile(values, probs)
    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[order]
    cum = np.cumsum(w) - 0.5 * w  # each sample sits at the middle of its weight
    return np.interp(np.asarray(probs) * w.sum(), cum, v)


def quantile_edges(
    values: Iterable[float], bins: int = 10, weights: Iterable[float] | None = None
) -> tuple[float, ...]:
    """Cut points at the reference's quantiles 1/bins … (bins-1)/bins (deciles by default).

    Repeated quantiles (a value holding at least one share of the mass: a constant feature, a
    0/1 flag, a count that is mostly zero) collapse into one cut point, and that value also
    gets a cut just above it (so does a quantile equal to the maximum), so it forms a bin of its own: a shift off a point mass, up or
    down, lands in another bin instead of vanishing into the same one. A constant feature c
    thus has the bins (-inf, c), [c, c⁺), [c⁺, +inf).
    """
    v = np.asarray(list(values), dtype=np.float64)
    w = None if weights is None else np.asarray(list(weights), dtype=np.float64)
    keep = np.isfinite(v)
    v = v[keep]
    w = None if w is None else w[keep]
    if v.size == 0:
        return ()
    if bins < 2:
        raise ValueError("bins must be at least 2")
    q = weighted_quantiles(v, [i / bins for i in range(1, bins)], w)
    uniq, reps = np.unique(q, return_counts=True)
    cuts = set(uniq.tolist())
    top = float(v.max())
    cuts.update(float(np.nextafter(x, np.inf)) for x, r in zip(uniq, reps) if r > 1 or x == top)
    return tuple(sorted(cuts))
