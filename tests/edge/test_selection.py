"""Frame selection: rules configured as data, the first match wins, quotas and dedup hold back."""

from __future__ import annotations

import random

import cv2
import numpy as np
import pytest

from edge.selection import (
    RULE_BUILDERS,
    FrameSelector,
    SelectionConfigError,
    default_selector,
    dhash,
    hamming,
    load_rules,
)
from edge.types import Detection


def det(score: float, cls: int = 0, name: str = "scratch") -> Detection:
    return Detection(cls=cls, name=name, score=score, box=(1.0, 2.0, 30.0, 40.0))


def scene(seed: int, h: int = 96, w: int = 128) -> np.ndarray:
    """A synthetic camera frame: a few coloured boxes placed by `seed`."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), int(rng.integers(60, 200)), np.uint8)
    for _ in range(4):
        x, y = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.rectangle(img, (x, y), (x + int(rng.integers(20, 60)), y + int(rng.integers(20, 60))), color, -1)
    return img


def jitter(img: np.ndarray, seed: int) -> np.ndarray:
    """The same scene a moment later: sensor noise and a slight brightness change."""
    noise = np.random.default_rng(seed).normal(4, 3, img.shape)
    return np.clip(img.astype(np.float64) + noise, 0, 255).astype(np.uint8)


FRAME = scene(0)


# --- configuration --------------------------------------------------------------------
def test_registry_knows_the_five_rules() -> None:
    assert set(RULE_BUILDERS) == {"close_to_threshold", "classes", "detections_number", "random", "input_drift"}


def test_config_problems_are_all_reported_at_once_and_named() -> None:
    """Unknown type (with the known ones), duplicate name, bad and misspelt params: one error lists them all."""
    config = [
        {"type": "close_to_threshold", "name": "uncertain", "threshold": 0.3},
        {"type": "blurry", "name": "blur"},
        {"type": "classes", "name": "uncertain", "classes": ["scratch"]},
        {"type": "close_to_threshold", "name": "wide", "threshold": 1.5, "detla": 0.1},
        {"type": "detections_number", "name": "count"},
        {"type": "random", "share": 0},
    ]
    with pytest.raises(SelectionConfigError) as err:
        load_rules(config)
    problems = err.value.problems
    text = str(err.value)
    assert (
        "rule #2 ('blur'): unknown type 'blurry' "
        "(known: classes, close_to_threshold, detections_number, input_drift, random)" in problems
    )
    assert any("rule #3 ('uncertain')" in p and "duplicate name" in p for p in problems)
    assert any("'wide'" in p and "param 'threshold' must be a number in [0, 1], got 1.5" in p for p in problems)
    assert any("'wide'" in p and "unknown param 'detla'" in p for p in problems)
    assert any("'count'" in p and "'min' and/or 'max'" in p for p in problems)
    assert any("rule #6" in p and "'name' must be a non-empty string" in p for p in problems)
    assert any("rule #6" in p and "param 'share' must be a number in (0, 1]" in p for p in problems)
    assert len(problems) == 7, text


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ({"type": "classes", "name": "c", "classes": []}, "param 'classes' must be a non-empty list"),
        ({"type": "classes", "name": "c"}, "param 'classes' is required"),
        ({"type": "detections_number", "name": "d", "min": 5, "max": 2}, "'min' (5) must not exceed 'max' (2)"),
        ({"type": "detections_number", "name": "d", "max": -1}, "param 'max' must be an integer >= 0"),
        ({"type": "close_to_threshold", "name": "t", "threshold": "0.3"}, "got '0.3'"),
    ],
)
def test_bad_params_are_named(entry: dict, fragment: str) -> None:
    with pytest.raises(SelectionConfigError, match=None) as err:
        load_rules([entry])
    assert any(fragment in p for p in err.value.problems), err.value.problems


def test_config_must_be_a_list() -> None:
    with pytest.raises(SelectionConfigError, match="must be a list"):
        load_rules({"type": "random", "name": "r"})  # type: ignore[arg-type]


def test_selector_refuses_duplicate_rule_names_built_by_hand() -> None:
    a = load_rules([{"type": "random", "name": "r", "share": 1}])
    with pytest.raises(SelectionConfigError, match="duplicate rule name 'r'"):
        FrameSelector(a + a)


# --- the rules ------------------------------------------------------------------------
def test_close_to_threshold_matches_scores_inside_the_band_only() -> None:
    (rule,) = load_rules([{"type": "close_to_threshold", "name": "u", "threshold": 0.5, "delta": 0.1}])
    assert rule.matches(FRAME, [det(0.9), det(0.41)])
    assert rule.matches(FRAME, [det(0.6)])
    assert not rule.matches(FRAME, [det(0.39), det(0.61), det(0.95)])
    assert not rule.matches(FRAME, [])


def test_close_to_threshold_can_be_limited_to_classes() -> None:
    (rule,) = load_rules([{"type": "close_to_threshold", "name": "u", "threshold": 0.5, "classes": ["dent"]}])
    assert not rule.matches(FRAME, [det(0.5, 0, "scratch")])
    assert rule.matches(FRAME, [det(0.5, 1, "dent")])


def test_classes_rule_matches_by_name_or_id() -> None:
    (by_name, by_id) = load_rules(
        [
            {"type": "classes", "name": "rare", "classes": ["crack"]},
            {"type": "classes", "name": "rare-id", "classes": [7], "min_score": 0.5},
        ]
    )
    assert by_name.matches(FRAME, [det(0.9), det(0.3, 2, "crack")])
    assert not by_name.matches(FRAME, [det(0.9, 7, "scratch")])
    assert by_id.matches(FRAME, [det(0.6, 7, "whatever")])
    assert not by_id.matches(FRAME, [det(0.4, 7, "whatever")])


def test_detections_number_matches_fewer_than_min_or_more_than_max() -> None:
    (rule,) = load_rules([{"type": "detections_number", "name": "odd", "min": 1, "max": 3}])
    assert rule.matches(FRAME, [])
    assert not rule.matches(FRAME, [det(0.9)])
    assert not rule.matches(FRAME, [det(0.9)] * 3)
    assert rule.matches(FRAME, [det(0.9)] * 4)


def test_detections_number_can_count_one_class() -> None:
    (rule,) = load_rules([{"type": "detections_number", "name": "crowd", "max": 1, "classes": ["dent"]}])
    assert not rule.matches(FRAME, [det(0.9)] * 5)
    assert rule.matches(FRAME, [det(0.9, 1, "dent")] * 2)


def test_random_rule_picks_about_its_share_reproducibly_with_a_seed() -> None:
    def picks(seed: int) -> list[bool]:
        (rule,) = load_rules([{"type": "random", "name": "r", "share": 0.02}], rng=random.Random(seed))
        return [rule.matches(FRAME, []) for _ in range(10_000)]

    first = picks(7)
    assert 140 <= sum(first) <= 260  # 2% of 10 000, well inside 5 sigma
    assert picks(7) == first
    assert picks(8) != first


# --- the selector ---------------------------------------------------------------------
def rules_u_then_random() -> FrameSelector:
    rules = load_rules(
        [
            {"type": "close_to_threshold", "name": "uncertain", "threshold": 0.5, "delta": 0.1},
            {"type": "classes", "name": "rare", "classes": ["crack"]},
        ]
    )
    return FrameSelector(rules)


def test_reason_is_the_first_matching_rule() -> None:
    sel = rules_u_then_random()
    assert sel.decide(scene(1), [det(0.95, 2, "crack"), det(0.5)], now=0.0) == (True, "uncertain")
    assert sel.decide(scene(2), [det(0.95, 2, "crack")], now=1.0) == (True, "rare")
    assert sel.decide(scene(3), [det(0.95)], now=2.0) == (False, None)
    assert sel.stats() == {"selected": {"uncertain": 1, "rare": 1}, "suppressed": {}}


def test_per_minute_limit_holds_back_but_still_reports_the_reason() -> None:
    rules = load_rules([{"type": "random", "name": "all", "share": 1.0}], rng=random.Random(0))
    sel = FrameSelector(rules, per_minute=3)
    got = [sel.decide(scene(i), [], now=100.0 + i) for i in range(5)]
    assert got == [(True, "all")] * 3 + [(False, "all")] * 2
    assert sel.decide(scene(10), [], now=160.5) == (True, "all")  # the first selection left the window
    assert sel.stats() == {"selected": {"all": 4}, "suppressed": {"per_minute": 2}}


def test_per_day_limit_is_a_sliding_24h_window() -> None:
    rules = load_rules([{"type": "random", "name": "all", "share": 1.0}])
    sel = FrameSelector(rules, per_minute=100, per_day=2)
    assert sel.decide(scene(1), [], now=0.0)[0]
    assert sel.decide(scene(2), [], now=3600.0)[0]
    assert sel.decide(scene(3), [], now=7200.0) == (False, "all")
    assert sel.decide(scene(4), [], now=86_400.5) == (True, "all")
    assert sel.stats()["suppressed"] == {"per_day": 1}


def test_near_duplicates_of_recent_selections_are_suppressed() -> None:
    rules = load_rules([{"type": "random", "name": "all", "share": 1.0}])
    sel = FrameSelector(rules, dedup_distance=5)
    base = scene(42)
    assert sel.decide(base, [], now=0.0) == (True, "all")
    assert sel.decide(jitter(base, 1), [], now=1.0) == (False, "all")
    assert sel.decide(jitter(base, 2), [], now=2.0) == (False, "all")
    assert sel.decide(scene(43), [], now=3.0) == (True, "all")
    assert sel.stats() == {"selected": {"all": 2}, "suppressed": {"duplicate": 2}}


def test_dedup_off_keeps_identical_frames() -> None:
    rules = load_rules([{"type": "random", "name": "all", "share": 1.0}])
    sel = FrameSelector(rules, dedup_distance=None)
    assert [sel.decide(FRAME, [], now=float(i))[0] for i in range(3)] == [True, True, True]


def test_dhash_is_stable_under_noise_and_differs_between_scenes() -> None:
    a = scene(5)
    assert hamming(dhash(a), dhash(jitter(a, 3))) <= 2
    assert hamming(dhash(a), dhash(cv2.cvtColor(a, cv2.COLOR_BGR2GRAY))) == 0
    assert min(hamming(dhash(a), dhash(scene(s))) for s in range(6, 16)) > 3


def test_dhash_of_camera_sized_frames_sees_the_scene_not_the_noise() -> None:
    big = [cv2.resize(scene(s), (1280, 720), interpolation=cv2.INTER_LINEAR) for s in (5, 6)]
    assert hamming(dhash(big[0]), dhash(jitter(big[0], 9))) <= 2
    assert hamming(dhash(big[0]), dhash(scene(5))) <= 2  # the same scene at another resolution
    assert hamming(dhash(big[0]), dhash(big[1])) > 3


def test_default_selector_keeps_hesitant_frames_and_a_random_few() -> None:
    now = [1000.0]
    sel = default_selector(0.25, clock=lambda: now[0], rng=random.Random(3))
    assert sel.decide(scene(1), [det(0.30)]) == (True, "uncertain")
    assert sel.decide(scene(2), [det(0.90)], now=1001.0) == (False, None)
    picked = 0
    for i in range(400):  # confident frames: only the 2% random share, under the quotas
        now[0] = 2000.0 + 60 * i
        picked += sel.decide(scene(100 + i), [det(0.9)])[0]
    assert 1 <= picked <= 20
    assert sel.stats()["selected"]["random"] == picked
    assert sel.per_minute == 10 and sel.per_day == 1000 and sel.dedup_distance == 3


def test_a_selector_is_built_from_data_with_its_limits() -> None:
    sel = FrameSelector.from_config(
        {
            "rules": [{"type": "random", "name": "all", "share": 1.0}],
            "per_minute": 1,
            "per_day": 5,
            "dedup_distance": 2,
        },
        rng=random.Random(0),
    )
    assert (sel.per_minute, sel.per_day, sel.dedup_distance) == (1, 5, 2)
    assert sel.decide(scene(1), [], now=0.0) == (True, "all")
    assert sel.decide(scene(2), [], now=1.0) == (False, "all")
    bare = FrameSelector.from_config([{"type": "classes", "name": "rare", "classes": [3]}])
    assert (bare.per_minute, bare.per_day, bare.dedup_distance) == (None, None, None)


def test_selector_config_problems_include_settings_and_rules() -> None:
    with pytest.raises(SelectionConfigError) as err:
        FrameSelector.from_config({"rules": [{"type": "nope", "name": "x"}], "per_minut": 3, "per_day": -1})
    problems = err.value.problems
    assert any("unknown setting 'per_minut'" in p for p in problems)
    assert any("'per_day' must be an integer >= 0 or null, got -1" in p for p in problems)
    assert any("unknown type 'nope'" in p for p in problems)
