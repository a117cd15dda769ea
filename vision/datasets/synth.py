"""A deterministic synthetic "quality inspection" dataset: plates with defects, YOLO format.

Each image is a textured metal plate with 0–3 defects of three classes (scratch, spot,
crack). Defects are large relative to the image so a detector trained from scratch learns
them in minutes on a CPU. Shift knobs (lighting, contrast, blur, a changed defect look)
produce the same task under a distribution shift, for drift tests and demos.
Only numpy and OpenCV: the edge runtime's tests can generate frames with it too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("scratch", "spot", "crack")


@dataclass(frozen=True)
class Shift:
    """A distribution shift applied to generated images (all neutral by default)."""

    brightness: float = 0.0  # added to pixel values, -100..100
    contrast: float = 1.0  # multiplied around mid-grey
    blur: float = 0.0  # Gaussian sigma in pixels
    defect_look: bool = False  # spots become hollow rings, scratches turn light

    @classmethod
    def parse(cls, spec: str | None) -> Shift:
        """'brightness=40,blur=1.5,defect_look=1' → Shift."""
        if not spec:
            return cls()
        values: dict[str, float | bool] = {}
        for part in spec.split(","):
            key, _, raw = part.partition("=")
            key = key.strip()
            if key not in cls.__dataclass_fields__:
                raise ValueError(f"unknown shift '{key}' (known: {', '.join(cls.__dataclass_fields__)})")
            values[key] = raw.strip().lower() in {"1", "true", "yes"} if key == "defect_look" else float(raw)
        return cls(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Box:
    cls: int
    x1: float
    y1: float
    x2: float
    y2: float

    def yolo(self, w: int, h: int) -> str:
        cx, cy = (self.x1 + self.x2) / 2 / w, (self.y1 + self.y2) / 2 / h
        bw, bh = (self.x2 - self.x1) / w, (self.y2 - self.y1) / h
        return f"{self.cls} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}"


def render_plate(rng: np.random.Generator, size: int, shift: Shift = Shift()) -> tuple[np.ndarray, list[Box]]:
    """One BGR image and its boxes."""
    base = rng.uniform(110, 160)
    img = np.full((size, size, 3), base, np.float32)
    # brushed-metal texture: horizontal streaks plus noise
    streaks = rng.normal(0, 6, (size, 1, 1)).astype(np.float32)
    img += streaks + rng.normal(0, 4, (size, size, 1)).astype(np.float32)
    tint = rng.uniform(-8, 8, 3).astype(np.float32)
    img += tint
    boxes: list[Box] = []
    for _ in range(int(rng.integers(0, 4))):
        cls = int(rng.integers(0, len(CLASSES)))
        box = _draw_defect(img, rng, cls, size, shift)
        if box and all(_iou(box, b) < 0.1 for b in boxes):
            boxes.append(box)
    img = (img - 128.0) * shift.contrast + 128.0 + shift.brightness
    if shift.blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), shift.blur)
    return np.clip(img, 0, 255).astype(np.uint8), boxes


def _draw_defect(img: np.ndarray, rng: np.random.Generator, cls: int, size: int, shift: Shift) -> Box | None:
    s = size
    if cls == 0:  # scratch: a long thin straight line
        length = rng.uniform(0.35, 0.7) * s
        angle = rng.uniform(0, math.pi)
        cx, cy = rng.uniform(0.25, 0.75, 2) * s
        dx, dy = math.cos(angle) * length / 2, math.sin(angle) * length / 2
        p1, p2 = (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy))
        colour = (230, 230, 230) if shift.defect_look else (35, 35, 35)
        cv2.line(img, p1, p2, colour, max(1, s // 64), cv2.LINE_AA)
        pts = np.array([p1, p2])
        pad = max(2, s // 40)
    elif cls == 1:  # spot: a filled dark blob (a ring under the defect-look shift)
        r = int(rng.uniform(0.06, 0.12) * s)
        c = (int(rng.uniform(0.2, 0.8) * s), int(rng.uniform(0.2, 0.8) * s))
        thickness = max(2, r // 3) if shift.defect_look else -1
        cv2.circle(img, c, r, (40, 30, 60), thickness, cv2.LINE_AA)
        pts = np.array([[c[0] - r, c[1] - r], [c[0] + r, c[1] + r]])
        pad = 1
    else:  # crack: a jagged branching polyline
        n = int(rng.integers(5, 9))
        start = rng.uniform(0.25, 0.75, 2) * s
        heading = rng.uniform(0, 2 * math.pi)
        pts_list = [start]
        for _ in range(n):
            heading += rng.uniform(-0.9, 0.9)
            step = rng.uniform(0.04, 0.08) * s
            pts_list.append(pts_list[-1] + step * np.array([math.cos(heading), math.sin(heading)]))
        pts = np.clip(np.array(pts_list), 1, s - 2).astype(np.int32)
        cv2.polylines(img, [pts.reshape(-1, 1, 2)], False, (15, 15, 15), max(2, s // 48), cv2.LINE_AA)
        pad = max(2, s // 40)
    x1, y1 = pts.min(0) - pad
    x2, y2 = pts.max(0) + pad
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(s - 1, x2), min(s - 1, y2)
    if (x2 - x1) < 4 or (y2 - y1) < 4:
        return None
    return Box(cls, float(x1), float(y1), float(x2), float(y2))


def _iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))
    iy = max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    inter = ix * iy
    union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter
    return inter / union if union else 0.0


def generate(
    out: Path,
    *,
    train: int = 200,
    val: int = 50,
    imgsz: int = 160,
    seed: int = 0,
    shift: Shift = Shift(),
) -> Path:
    """Write images/{train,val}, labels/{train,val} and data.yaml under `out`; returns data.yaml."""
    out = Path(out)
    for split, count in (("train", train), ("val", val)):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([seed, 0 if split == "train" else 1])
        for i in range(count):
            img, boxes = render_plate(rng, imgsz, shift)
            stem = f"{split}_{i:05d}"
            cv2.imwrite(str(out / "images" / split / f"{stem}.png"), img)
            (out / "labels" / split / f"{stem}.txt").write_text("".join(b.yolo(imgsz, imgsz) + "\n" for b in boxes))
    data = out / "data.yaml"
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(CLASSES))
    data.write_text(f"path: {out.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return data
