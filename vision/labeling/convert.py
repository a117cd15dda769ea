"""Between our detections and Label Studio's rectangles: pre-annotations out, YOLO labels in.

Label Studio places a rectangle in percent of the image (x, y of the top-left corner,
width, height, each 0–100) and names its class by label text. YOLO lines hold a class id
and a normalized centre and size. Class ids are always ours, by the model's class names
in the model's order: Label Studio's own YOLO export numbers classes alphabetically, which
would silently swap classes, so it is not used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import quoteattr

FROM_NAME, TO_NAME = "label", "image"


class LabelError(ValueError):
    """An annotation that cannot become a YOLO label (an unknown class, a rotated box)."""


def label_config(names: Sequence[str]) -> str:
    """The project's labeling interface: rectangles of the model's classes over the frame."""
    labels = "".join(f"<Label value={quoteattr(n)}/>" for n in names)
    return (
        f'<View><Image name="{TO_NAME}" value="$image" zoom="true"/>'
        f'<RectangleLabels name="{FROM_NAME}" toName="{TO_NAME}">{labels}</RectangleLabels></View>'
    )


def prediction(detections: Sequence[dict[str, Any]], width: int, height: int, model_version: str | None) -> dict:
    """A Label Studio prediction from a frame's detections (boxes x1, y1, x2, y2 in pixels)."""
    result = []
    for d in detections:
        try:  # a device's detections are its own account: a malformed one is dropped, not fatal
            x1, y1, x2, y2 = (float(v) for v in d["box"])
            name, score = str(d["name"]), float(d.get("score", 0.0))
        except (KeyError, TypeError, ValueError):
            continue
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2, score)):
            continue
        x1, x2 = max(0.0, min(x1, x2)), min(float(width), max(x1, x2))
        y1, y2 = max(0.0, min(y1, y2)), min(float(height), max(y1, y2))
        if x2 <= x1 or y2 <= y1:
            continue
        result.append(
            {
                "from_name": FROM_NAME,
                "to_name": TO_NAME,
                "type": "rectanglelabels",
                "original_width": width,
                "original_height": height,
                "value": {
                    "x": 100 * x1 / width,
                    "y": 100 * y1 / height,
                    "width": 100 * (x2 - x1) / width,
                    "height": 100 * (y2 - y1) / height,
                    "rotation": 0,
                    "rectanglelabels": [name],
                },
                "score": min(1.0, max(0.0, score)),
            }
        )
    scores = [r["score"] for r in result]
    return {
        "model_version": str(model_version or "unknown"),
        "score": min(scores) if scores else 0.0,  # the least sure box: what a labeler should look at
        "result": result,
    }


def yolo_lines(result: Sequence[dict[str, Any]], names: Sequence[str]) -> str:
    """YOLO label text ("cls cx cy w h" per line; "" for a frame with nothing to label)."""
    ids = {n: i for i, n in enumerate(names)}
    lines = []
    for r in result:
        if r.get("type") != "rectanglelabels":
            continue
        v = r.get("value") or {}
        try:
            rotation = float(v.get("rotation") or 0.0)
        except (TypeError, ValueError):
            raise LabelError(f"rotation {v.get('rotation')!r} is not a number") from None
        if abs(rotation) > 1e-6:
            raise LabelError("a rotated rectangle cannot be a YOLO box: draw it without rotation")
        for label in v.get("rectanglelabels") or []:
            if label not in ids:
                raise LabelError(f"class {label!r} is not one of the model's classes ({', '.join(names)})")
            try:
                x0, y0, w0, h0 = (float(v[k]) for k in ("x", "y", "width", "height"))
            except (KeyError, TypeError, ValueError):
                raise LabelError(f"a {label!r} rectangle without a readable position and size") from None
            if not all(math.isfinite(n) for n in (x0, y0, w0, h0)):
                raise LabelError(f"a {label!r} rectangle with a position or size that is not a number")
            x, y = _clip(x0), _clip(y0)
            w, h = _clip(x0 + w0) - x, _clip(y0 + h0) - y
            if w <= 0 or h <= 0:
                continue
            lines.append(f"{ids[label]} {(x + w / 2) / 100:.6f} {(y + h / 2) / 100:.6f} {w / 100:.6f} {h / 100:.6f}")
    return "".join(line + "\n" for line in lines)


def _clip(percent: float) -> float:
    return min(100.0, max(0.0, percent))
