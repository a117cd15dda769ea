"""The loop's pure parts: the class ids of labels, what a device's detections become, the gate's verdicts."""

from __future__ import annotations

import pytest

from vision.labeling.client import pick_annotation
from vision.labeling.convert import LabelError, prediction, yolo_lines
from vision.loop.gate import GateRules, judge

NAMES = ["scratch", "spot", "crack"]


def _rect(label: str, **value: float) -> dict:
    v = {"x": 10.0, "y": 20.0, "width": 30.0, "height": 40.0, "rotation": 0} | value
    return {"type": "rectanglelabels", "value": v | {"rectanglelabels": [label]}}


def test_labels_use_the_models_class_ids_not_alphabetical_ones() -> None:
    assert yolo_lines([_rect("crack"), _rect("scratch")], NAMES).splitlines() == [
        "2 0.250000 0.400000 0.300000 0.400000",
        "0 0.250000 0.400000 0.300000 0.400000",
    ]
    assert yolo_lines([], NAMES) == "", "no rectangle: an explicit 'nothing here'"
    assert yolo_lines([_rect("spot", x=90.0, width=30.0)], NAMES) == "1 0.950000 0.400000 0.100000 0.400000\n"


@pytest.mark.parametrize(
    "result",
    [
        [_rect("dent")],
        [_rect("spot", rotation=15)],
        [{"type": "rectanglelabels", "value": {"rectanglelabels": ["spot"]}}],
        [_rect("spot", x=float("nan"))],
        [_rect("spot", rotation="a lot")],  # type: ignore[arg-type]
    ],
)
def test_annotations_that_cannot_be_labels_say_why(result: list) -> None:
    with pytest.raises(LabelError):
        yolo_lines(result, NAMES)


def test_malformed_device_detections_are_dropped_not_fatal() -> None:
    dets = [
        {"name": "spot", "score": 0.4, "box": [10, 10, 30, 30]},
        {"name": "spot", "score": 0.4, "box": [1, 2, 3]},
        {"score": 0.4, "box": [1, 2, 3, 4]},
        {"name": "crack", "score": float("nan"), "box": [1, 2, 3, 4]},
        {"name": "crack", "score": 0.9, "box": [50, 50, 50, 60]},  # no area
    ]
    pred = prediction(dets, 100, 100, "3")
    assert [r["value"]["rectanglelabels"] for r in pred["result"]] == [["spot"]]
    assert pred["model_version"] == "3" and pred["score"] == pytest.approx(0.4)


def test_the_latest_submitted_annotation_counts_over_a_later_skip() -> None:
    anns = [
        {"id": 1, "updated_at": "2026-01-01T10:00:00Z", "was_cancelled": False, "result": [_rect("spot")]},
        {"id": 2, "updated_at": "2026-01-01T11:00:00Z", "was_cancelled": True, "result": []},
    ]
    picked = pick_annotation(7, "cam/f", anns)
    assert picked is not None and picked.annotation_id == 1 and not picked.cancelled
    only_skip = pick_annotation(7, "cam/f", anns[1:])
    assert only_skip is not None and only_skip.cancelled
    assert pick_annotation(7, "cam/f", []) is None


def _scores(clean: float, new: float | None, per_class: dict[str, float]) -> dict:
    return {
        "clean": {"mAP50": clean, "per_class": {k: {"ap50": v} for k, v in per_class.items()}},
        "new": None if new is None else {"mAP50": new},
    }


def test_the_gate() -> None:
    prod = _scores(0.60, 0.10, {"spot": 0.9, "crack": 0.5})
    better = _scores(0.59, 0.40, {"spot": 0.88, "crack": 0.45})
    assert judge(prod, better).passed
    worse_clean = _scores(0.55, 0.40, {"spot": 0.88, "crack": 0.45})
    assert judge(prod, worse_clean).reasons[0].startswith("clean mAP50 0.550")
    no_gain = _scores(0.60, 0.10, {"spot": 0.9, "crack": 0.5})
    assert [c["check"] for c in judge(prod, no_gain).checks if not c["passed"]] == ["new_map50"]
    collapsed = _scores(0.62, 0.40, {"spot": 0.99, "crack": 0.2})
    assert [c["check"] for c in judge(prod, collapsed).checks if not c["passed"]] == ["class_crack"]
    blind = judge(_scores(0.6, None, {}), _scores(0.6, None, {}))
    assert not blind.passed and "no held-out" in blind.reasons[0]
    assert judge(prod, no_gain, GateRules(min_gain=-1.0)).passed, "a negative gain forces a refresh"
