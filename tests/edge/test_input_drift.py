"""The input-drift rule: frames that stop looking like the training frames are sampled, clean ones are not.

A model that goes blind under a lighting change has no hesitant detections left; this rule
notices the change in the frames themselves, against the reference that ships with the model.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from edge.quality import QUALITY_EDGES, FixedHistograms, frame_quality
from edge.selection import FrameSelector, InputDrift, SelectionConfigError, default_selector, load_rules
from edge.types import Detection
from vision.datasets.synth import Shift, render_plate

SIZE = 96
DARK_AND_FLAT = Shift(brightness=70, contrast=0.6)  # a lamp failed: washed out, low contrast


def plates(seed: int, n: int, shift: Shift = Shift()) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [render_plate(rng, SIZE, shift)[0] for _ in range(n)]


@pytest.fixture(scope="module")
def reference() -> dict:
    """What `vision export` ships with a model: quality histograms of its 300 training frames."""
    counts = FixedHistograms(QUALITY_EDGES)
    for img in plates(0, 300):
        counts.add(frame_quality(img))
    return counts.to_json()["histograms"]


def drift_rule(reference, *, rng_seed: int = 0, boost=None, **params) -> InputDrift:
    (rule,) = load_rules(
        [{"type": "input_drift", "name": "drift", **params}],
        rng=random.Random(rng_seed),
        reference=lambda: reference,
        boost=boost,
    )
    return rule


def kept(selector: FrameSelector, frames: list[np.ndarray], start: float = 0.0) -> list[int]:
    """Indices of the frames the selector keeps (one frame a second)."""
    return [i for i, f in enumerate(frames) if selector.decide(f, [], now=start + i)[0]]


def test_a_lighting_shift_is_sampled_at_its_share_once_min_frames_are_in(reference: dict) -> None:
    rule = drift_rule(reference)
    picked = kept(FrameSelector([rule]), plates(1, 400, DARK_AND_FLAT))
    assert picked and min(picked) >= 19  # nothing before 20 frames are in the window
    assert 60 <= len(picked) <= 130  # 25% of the 381 frames from then on (95, ± 3.5 sigma)
    assert set(rule.last_psi) == {"brightness", "contrast", "sharpness"}
    assert rule.last_psi["brightness"] > 1.0 and rule.drifting


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_clean_frames_are_never_sampled(reference: dict, seed: int) -> None:
    rule = drift_rule(reference)
    assert kept(FrameSelector([rule]), plates(seed, 600)) == []
    assert all(psi < rule.last_needed[f] for f, psi in rule.last_psi.items()) and not rule.drifting


def test_sampling_stops_a_window_after_the_lights_are_fixed(reference: dict) -> None:
    rule = drift_rule(reference)
    sel = FrameSelector([rule])
    assert kept(sel, plates(3, 100, DARK_AND_FLAT))
    after = kept(sel, plates(14, 300), start=100.0)
    assert all(i < 50 for i in after)  # once the window holds only clean frames, nothing more


def test_without_a_reference_the_rule_never_matches(reference: dict) -> None:
    rule = drift_rule(None, share=1.0)
    assert kept(FrameSelector([rule]), plates(5, 100, DARK_AND_FLAT)) == []
    assert rule.last_psi == {} and rule.last_needed == {}


def test_a_reference_arriving_later_is_used_from_then_on(reference: dict) -> None:
    current: list[dict | None] = [None]  # a device whose model came without a reference, then got one
    (rule,) = load_rules([{"type": "input_drift", "name": "drift", "share": 1.0}], reference=lambda: current[0])
    sel = FrameSelector([rule])
    shifted = plates(6, 60, DARK_AND_FLAT)
    assert kept(sel, shifted[:30]) == []
    current[0] = reference
    assert kept(sel, shifted[30:], start=30.0) == list(range(19, 30))  # frames are judged from then on


def test_a_broken_feature_in_the_reference_is_skipped_and_the_others_judged(reference: dict, caplog) -> None:
    broken = {**reference, "brightness": {"edges": [1, 2], "counts": [1]}}
    rule = drift_rule(broken, share=1.0)
    assert kept(FrameSelector([rule]), plates(7, 40, DARK_AND_FLAT))
    assert "brightness" not in rule.last_psi and {"contrast", "sharpness"} <= set(rule.last_psi)
    assert "no usable histogram of brightness" in caplog.text


def test_centrals_boost_multiplies_the_share_up_to_every_frame(reference: dict) -> None:
    rule = drift_rule(reference, boost=lambda: 4.0)  # 25% × 4
    picked = kept(FrameSelector([rule]), plates(8, 120, DARK_AND_FLAT))
    assert picked == list(range(19, 120))


def test_centrals_boost_multiplies_the_random_share_too() -> None:
    def picks(boost: float) -> int:
        (rule,) = load_rules(
            [{"type": "random", "name": "r", "share": 0.02}], rng=random.Random(7), boost=lambda: boost
        )
        return sum(rule.matches(np.zeros((8, 8, 3), np.uint8), []) for _ in range(10_000))

    assert 140 <= picks(1.0) <= 260
    assert 650 <= picks(4.0) <= 950  # 8%
    assert picks(100.0) == 10_000  # capped at every frame


def test_the_selectors_quota_holds_back_drift_frames_as_any_others(reference: dict) -> None:
    sel = FrameSelector([drift_rule(reference, share=1.0)], per_minute=5)
    assert kept(sel, plates(9, 45, DARK_AND_FLAT)) == [19, 20, 21, 22, 23]  # one frame a second
    assert sel.stats() == {"selected": {"drift": 5}, "suppressed": {"per_minute": 21}}


def test_the_selectors_dedup_holds_back_the_same_drifting_scene(reference: dict) -> None:
    sel = FrameSelector([drift_rule(reference, share=1.0)], dedup_distance=3)
    assert kept(sel, plates(10, 1, DARK_AND_FLAT) * 30) == [19]  # a camera staring at one washed-out plate
    assert sel.stats()["suppressed"] == {"duplicate": 10}


def test_the_window_sees_every_frame_even_when_an_earlier_rule_matched(reference: dict) -> None:
    every = load_rules([{"type": "detections_number", "name": "any", "max": 0}])  # matches any frame with a detection
    rule = drift_rule(reference, share=1.0)
    sel = FrameSelector([*every, rule])
    shifted = plates(13, 30, DARK_AND_FLAT)
    box = [Detection(0, "scratch", 0.9, (0.0, 0.0, 8.0, 8.0))]
    assert [sel.decide(f, box, now=float(i))[1] for i, f in enumerate(shifted)] == ["any"] * 30
    assert sel.decide(plates(11, 1, DARK_AND_FLAT)[0], [], now=30.0) == (True, "drift")


def test_the_default_selector_asks_drift_between_uncertain_and_random(reference: dict) -> None:
    sel = default_selector(0.25, rng=random.Random(0), reference=lambda: reference, boost=lambda: 4.0)
    assert [r.name for r in sel.rules] == ["uncertain", "drift", "random"]
    reasons = [sel.decide(f, [], now=60.0 * i)[1] for i, f in enumerate(plates(12, 60, DARK_AND_FLAT))]
    assert set(reasons[:19]) == {None} and set(reasons[19:]) == {"drift"}  # boost 4 × 25%: every frame


def test_every_bad_param_is_reported_at_load() -> None:
    with pytest.raises(SelectionConfigError) as err:
        load_rules(
            [
                {"type": "input_drift", "name": "a", "window": 1, "threshold": 0, "share": 2, "bins": 1},
                {
                    "type": "input_drift",
                    "name": "b",
                    "window": 10,
                    "min_frames": 30,
                    "features": ["brightness", "glare"],
                },
                {"type": "input_drift", "name": "c", "features": [], "windwo": 5},
            ]
        )
    problems = err.value.problems
    expected = [
        "rule #1 ('a'), type input_drift: param 'window' must be an integer >= 2, got 1",
        "rule #1 ('a'), type input_drift: param 'bins' must be an integer >= 2, got 1",
        "rule #1 ('a'), type input_drift: param 'threshold' must be a number in (0, inf], got 0.0",
        "rule #1 ('a'), type input_drift: param 'share' must be a number in (0, 1], got 2.0",
        "rule #2 ('b'), type input_drift: param 'min_frames' (30) must not exceed 'window' (10)",
        "rule #2 ('b'), type input_drift: param 'features': unknown 'glare' "
        "(known: brightness, contrast, sharpness, blue_green, red_green)",
        "rule #3 ('c'), type input_drift: param 'features' must be a non-empty list of names, got []",
        "rule #3 ('c'), type input_drift: unknown param 'windwo'",
    ]
    assert sorted(problems) == sorted(expected)
