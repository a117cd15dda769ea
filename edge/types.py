"""Types that cross the edge runtime's modules: detections and per-frame results."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Detection:
    """One detected object, with its box in source-image pixels (x1, y1, x2, y2)."""

    cls: int
    name: str
    score: float
    box: tuple[float, float, float, float]

    def to_json(self) -> dict:
        return {
            "cls": self.cls,
            "name": self.name,
            "score": round(self.score, 4),
            "box": [round(v, 1) for v in self.box],
        }


@dataclass
class FrameResult:
    """What `loopline edge run --json` prints per frame (a contract)."""

    frame: str
    detections: list[Detection]
    latency_ms: float
    selected: bool = False
    reason: str | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        out = {
            "frame": self.frame,
            "detections": [d.to_json() for d in self.detections],
            "latency_ms": round(self.latency_ms, 2),
            "selected": self.selected,
            "reason": self.reason,
        }
        out.update(self.extra)
        return out


__all__ = ["Detection", "FrameResult", "asdict"]
