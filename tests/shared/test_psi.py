"""PSI: the figures match an independent computation, edge cases answer sensibly, the CLI keeps its contract."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from shared.monitoring.histograms import Histogram, quantile_edges
from shared.monitoring.psi import (
    UNSEEN,
    categorical_psi,
    compare_categorical,
    psi,
    psi_from_counts,
    psi_status,
)
from shared.monitoring.psi_cli import psi as psi_cli


def direct_psi(reference: np.ndarray, current: np.ndarray, bins: int = 10, alpha: float = 1.0) -> float:
    """The textbook formula, written out independently: decile cuts, left-closed bins, add-α shares."""
    cuts = np.unique(np.quantile(reference, np.arange(1, bins) / bins))
    r = np.bincount(np.digitize(reference, cuts), minlength=len(cuts) + 1).astype(float)
    c = np.bincount(np.digitize(current, cuts), minlength=len(cuts) + 1).astype(float)
    q = (r + alpha) / (r.sum() + alpha * len(r))
    p = (c + alpha) / (c.sum() + alpha * len(c))
    return float(np.sum((p - q) * np.log(p / q)))


SAMPLES = {
    "normal, mean shift": (lambda g: g.normal(0, 1, 3000), lambda g: g.normal(0.3, 1, 800)),
    "lognormal, scale change": (lambda g: g.lognormal(0, 0.5, 2000), lambda g: g.lognormal(0, 0.8, 500)),
    "uniform, no change": (lambda g: g.uniform(0, 10, 1000), lambda g: g.uniform(0, 10, 1000)),
    "current beyond the reference's range": (lambda g: g.normal(0, 1, 1000), lambda g: g.normal(5, 1, 300)),
}


@pytest.mark.parametrize("name", SAMPLES)
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_psi_matches_the_direct_formula(name: str, alpha: float) -> None:
    make_ref, make_cur = SAMPLES[name]
    rng = np.random.default_rng(7)
    ref, cur = make_ref(rng), make_cur(rng)
    if alpha == 0.0 and name == "current beyond the reference's range":
        alpha = 1e-6  # unsmoothed, an empty bin is infinite for both
    assert psi(ref, cur, smoothing=alpha) == pytest.approx(direct_psi(ref, cur, alpha=alpha), rel=1e-9, abs=1e-12)


def test_psi_of_counts_by_hand() -> None:
    # shares 0.5/0.3/0.2 against 0.3/0.3/0.4, no smoothing
    expected = (0.3 - 0.5) * np.log(0.3 / 0.5) + 0 + (0.4 - 0.2) * np.log(0.4 / 0.2)
    assert psi_from_counts([50, 30, 20], [30, 30, 40], smoothing=0) == pytest.approx(expected)
    with pytest.raises(ValueError, match="same bins"):
        psi_from_counts([1, 2], [1, 2, 3])


def test_categorical_psi_matches_the_direct_formula() -> None:
    rng = np.random.default_rng(3)
    ref = list(rng.choice(["scratch", "spot", "crack"], 900, p=[0.5, 0.3, 0.2]))
    cur = list(rng.choice(["scratch", "spot", "crack", "dent"], 400, p=[0.3, 0.3, 0.2, 0.2]))
    cats = sorted(set(ref))
    r = np.array([Counter(ref)[c] for c in cats] + [0.0])
    c = np.array([Counter(cur)[k] for k in cats] + [sum(1 for v in cur if v not in cats)])
    q, p = (r + 1) / (r.sum() + len(r)), (c + 1) / (c.sum() + len(c))
    assert categorical_psi(ref, cur) == pytest.approx(float(np.sum((p - q) * np.log(p / q))), rel=1e-9)
    result = compare_categorical(ref, cur)
    assert [b.label for b in result.bins] == [*cats, UNSEEN]
    assert result.bins[-1].current == c[-1]


def test_psi_of_a_sample_with_itself_is_zero_and_grows_with_the_shift() -> None:
    x = np.random.default_rng(11).normal(100, 15, 2000)
    assert psi(x, x) == pytest.approx(0.0, abs=1e-12)
    values = [psi(x, x + shift) for shift in (0.0, 2, 5, 10, 20, 40)]
    assert values == sorted(values) and values[0] == pytest.approx(0.0, abs=1e-12)
    assert psi_status(values[1]) == "ok" and psi_status(values[-1]) == "alert"
    assert categorical_psi(["a", "b"] * 50, ["a", "b"] * 50) == pytest.approx(0.0, abs=1e-12)


def test_an_empty_window_has_no_psi_instead_of_a_crash() -> None:
    assert psi([1.0, 2.0, 3.0], []) is None
    assert psi([], [1.0, 2.0]) is None
    assert categorical_psi(["a"], []) is None
    assert psi([1.0, 2.0, float("nan")], [float("nan")]) is None  # NaN is dropped, not binned
    assert psi_status(None) == "no_data"


def test_a_constant_feature_still_sees_a_shift_either_way() -> None:
    same = [3.0] * 400
    assert quantile_edges(same) == (3.0, float(np.nextafter(3.0, np.inf)))
    assert psi(same, [3.0] * 400) == pytest.approx(0.0, abs=1e-12)
    assert psi_status(psi(same, [3.5] * 100)) == "alert"
    assert psi_status(psi(same, [2.5] * 100)) == "alert"
    assert psi_status(psi(same, [3.0] * 99 + [9.0])) == "ok"  # one outlier in a hundred


def test_a_rare_flag_gets_a_bin_of_its_own() -> None:
    """An abstention rate of 5% rising: every decile is 0, yet the change is seen."""
    ref = [0.0] * 950 + [1.0] * 50
    assert psi_status(psi(ref, [0.0] * 180 + [1.0] * 20)) == "ok"  # 10%
    assert psi_status(psi(ref, [0.0] * 160 + [1.0] * 40)) == "warn"  # 20%
    assert psi_status(psi(ref, [0.0] * 140 + [1.0] * 60)) == "alert"  # 30%


def test_all_new_categories_are_an_alert_with_a_finite_psi() -> None:
    value = categorical_psi(["scratch", "spot"] * 200, ["dent", "hole"] * 50)
    assert np.isfinite(value) and psi_status(value) == "alert"


def test_thresholds_are_configurable_and_inclusive() -> None:
    assert psi_status(0.0999) == "ok"
    assert psi_status(0.1) == "warn"
    assert psi_status(0.25) == "alert"
    assert psi_status(0.3, warn=0.2, alert=0.5) == "warn"


# --- histograms ------------------------------------------------------------------------
def test_histograms_from_devices_merge_into_the_histogram_of_all_values() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(0, 1, 300), rng.normal(0.5, 1, 200)
    edges = tuple(np.linspace(-2, 2, 9))
    merged = Histogram.from_values(a, edges).merge(Histogram.from_values(b, edges))
    assert merged == Histogram.from_values(np.concatenate([a, b]), edges)
    assert merged.n == 500


def test_bins_are_closed_on_the_left_and_open_at_both_ends() -> None:
    h = Histogram.from_values([-1e9, 0.0, 0.5, 1.0, 1e9], (0.0, 1.0))
    assert h.counts == (1.0, 2.0, 2.0)


def test_rebinning_is_exact_on_a_subset_and_proportional_otherwise() -> None:
    rng = np.random.default_rng(9)
    values = rng.uniform(0, 10, 1000)
    fine = Histogram.from_values(values, tuple(range(1, 10)))
    assert fine.rebin((2.0, 5.0, 8.0)) == Histogram.from_values(values, (2.0, 5.0, 8.0))
    # [0,1) holds 1 and [1,2) holds 3; a cut at 1.5 splits [1,2) half and half
    split = Histogram((1.0, 2.0), (1, 3, 0)).rebin((1.5,))
    assert split.counts == (2.5, 1.5)
    # open outer bins stay next to their finite end
    assert Histogram((5.0,), (4, 6)).rebin((1.0, 9.0)).counts == (0.0, 10.0, 0.0)
    with pytest.raises(ValueError, match="needs 3 counts"):
        Histogram((1.0, 2.0), (1, 2))


def test_coarsening_a_fine_device_histogram_gives_about_equal_mass_groups() -> None:
    values = np.random.default_rng(2).normal(130, 15, 5000)
    fine = Histogram.from_values(values, tuple(float(x) for x in range(4, 256, 4)))
    coarse = fine.coarsen(10)
    assert set(coarse.edges) <= set(fine.edges)
    assert coarse.n == pytest.approx(5000)
    shares = coarse.array() / coarse.n
    assert 8 <= len(shares) <= 10 and shares.min() > 0.05 and shares.max() < 0.2


# --- the CLI contract --------------------------------------------------------------------
def _write(path: Path, values) -> Path:
    path.write_text("\n".join(str(v) for v in values) + "\n")
    return path


def test_cli_prints_psi_status_and_bins_as_json(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    ref = _write(tmp_path / "ref.txt", rng.normal(0, 1, 1000).round(4))
    cur = _write(tmp_path / "cur.txt", rng.normal(1, 1, 400).round(4))
    res = CliRunner().invoke(psi_cli, ["--reference", str(ref), "--current", str(cur), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert isinstance(out["psi"], float) and out["status"] == "alert" and out["kind"] == "numeric"
    assert out["psi"] == pytest.approx(direct_psi(np.loadtxt(ref), np.loadtxt(cur)), rel=1e-5)
    assert sum(b["current"] for b in out["bins"]) == 400 and out["bins"][0]["lower"] is None


def test_cli_reads_categories_and_explains_bad_input(tmp_path: Path) -> None:
    ref = _write(tmp_path / "ref.txt", ["scratch", "spot"] * 100)
    cur = _write(tmp_path / "cur.txt", ["# a comment", "scratch", "", "spot"] * 50)
    res = CliRunner().invoke(psi_cli, ["--reference", str(ref), "--current", str(cur), "--json"])
    out = json.loads(res.output)
    assert out["kind"] == "categorical" and out["status"] == "ok" and out["current_n"] == 100
    empty = _write(tmp_path / "empty.txt", [])
    res = CliRunner().invoke(psi_cli, ["--reference", str(ref), "--current", str(empty)])
    assert res.exit_code != 0 and "no values" in res.output
    res = CliRunner().invoke(psi_cli, ["--reference", str(ref), "--current", str(cur), "--numeric"])
    assert res.exit_code != 0 and "not a number" in res.output
    text = CliRunner().invoke(psi_cli, ["--reference", str(ref), "--current", str(cur)])
    assert text.exit_code == 0 and "PSI" in text.output and "ok" in text.output
