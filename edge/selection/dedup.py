"""A 64-bit difference hash, so near-identical frames (a static scene) are labeled once.

Not a similarity search: just brightness gradients of a 9x8 thumbnail, robust to sensor
and JPEG noise and to small shifts in lighting, compared by Hamming distance. Small
objects barely move it, so on a scene that hardly changes (a production line) keep
dedup_distance low.
"""

from __future__ import annotations

import cv2
import numpy as np

FLAT = 2.0  # grey levels: neighbouring cells closer than this count as equal
SAMPLE = 64  # the shorter side is subsampled to about this many pixels before averaging


def dhash(frame: np.ndarray) -> int:
    """64-bit difference hash of a BGR or gray image."""
    step = max(1, min(frame.shape[:2]) // SAMPLE)  # every step-th pixel: 30x cheaper, same thumbnail
    view = np.ascontiguousarray(frame[::step, ::step])
    gray = cv2.cvtColor(view, cv2.COLOR_BGR2GRAY) if view.ndim == 3 and view.shape[2] == 3 else view
    small = cv2.resize(gray.astype(np.float32), (9, 8), interpolation=cv2.INTER_AREA)
    # a dead zone: in flat regions (walls, belts) noise would flip "brighter than" bits at random
    bits = (small[:, 1:] - small[:, :-1] > FLAT).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()
