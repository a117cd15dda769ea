"""Run an exported ultralytics ONNX detector on one frame with ONNX Runtime on the CPU.

Reads class names and input size from the metadata ultralytics writes into the ONNX file, so
the .onnx is the whole deployable artefact. Glues preprocess → session.run → postprocess and
times each step; it does not read frames or decide what to do with detections.
"""

from __future__ import annotations

import ast
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge.postprocess import postprocess
from edge.preprocess import preprocess
from edge.types import Detection

log = logging.getLogger(__name__)

EXPORT_HINT = "export a trained model with ultralytics: YOLO('best.pt').export(format='onnx')"


class ModelError(RuntimeError):
    """A model file that cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class Timings:
    """Milliseconds spent per step on one frame."""

    pre_ms: float
    run_ms: float
    post_ms: float

    @property
    def total_ms(self) -> float:
        return self.pre_ms + self.run_ms + self.post_ms


@dataclass(frozen=True)
class ModelInfo:
    """What the runtime needs to know about a model besides its graph."""

    names: dict[int, str]
    imgsz: tuple[int, int]
    end2end: bool


def _literal(meta: dict[str, str], key: str) -> object | None:
    raw = meta.get(key)
    if raw is None:
        return None
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        log.warning("ignoring unparsable ONNX metadata %s=%r", key, raw)
        return None


def read_model_info(session: ort.InferenceSession, path: Path) -> ModelInfo:
    """Names, input size and head type from ultralytics' metadata, falling back to the graph's shapes."""
    meta = session.get_modelmeta().custom_metadata_map
    inp, out = session.get_inputs()[0], session.get_outputs()[0]
    if len(inp.shape) != 4 or (isinstance(inp.shape[1], int) and inp.shape[1] != 3):
        raise ModelError(f"{path}: input {inp.name} has shape {inp.shape}, expected (1, 3, H, W); {EXPORT_HINT}")
    task = meta.get("task", "detect")
    if task != "detect" or len(out.shape) != 3:
        raise ModelError(
            f"{path}: a '{task}' model with output shape {out.shape}; the edge runtime runs detection models only"
        )

    imgsz = _literal(meta, "imgsz")
    if isinstance(imgsz, int):
        imgsz = [imgsz, imgsz]
    if not (isinstance(imgsz, (list, tuple)) and len(imgsz) == 2 and all(isinstance(v, int) for v in imgsz)):
        h, w = inp.shape[2], inp.shape[3]
        if not (isinstance(h, int) and isinstance(w, int)):
            raise ModelError(f"{path}: no 'imgsz' metadata and a dynamic input shape {inp.shape}; {EXPORT_HINT}")
        imgsz = [h, w]

    names = _literal(meta, "names")
    if isinstance(names, (list, tuple)):
        names = dict(enumerate(names))
    if not isinstance(names, dict):
        nc = out.shape[1] - 4 if len(out.shape) == 3 and isinstance(out.shape[1], int) else 0
        log.warning("%s has no class names in its metadata; using class numbers", path)
        names = {i: str(i) for i in range(max(nc, 0))}
    return ModelInfo(
        names={int(k): str(v) for k, v in names.items()},
        imgsz=(int(imgsz[0]), int(imgsz[1])),
        end2end=meta.get("end2end", "False").strip().lower() == "true",
    )


def load_session(path: Path, threads: int | None = None, *, spin_wait: bool = True) -> ort.InferenceSession:
    """A CPU session, or a ModelError naming the file and the fix.

    `spin_wait=False` makes its worker threads block between operators instead of spinning
    (ONNX Runtime's default). Measured with yolov8n at 320x256 on 2 threads of a 2-core machine:
    idle, spinning is faster (10.2 vs 12.9 ms per session.run); with another process busy on a
    core, spinning workers take the time slices the model needs (35 vs 18 ms per frame).
    """
    if not path.exists():
        raise ModelError(f"model file {path} not found; {EXPORT_HINT}")
    if not path.is_file():
        raise ModelError(f"model path {path} is not a file (pass the .onnx file itself)")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if not spin_wait:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises several pybind types for bad files; all mean the same to a user
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"{path} is not a loadable ONNX model (empty, truncated or not ONNX: {detail}); "
            f"re-export or re-download it — {EXPORT_HINT}"
        ) from exc


class Detector:
    """An ONNX detector: `detect(frame)` → detections in the frame's pixels."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        conf: float = 0.25,
        iou: float = 0.7,
        threads: int | None = None,
        max_det: int = 300,
        spin_wait: bool = True,
    ) -> None:
        if not 0.0 <= conf <= 1.0 or not 0.0 <= iou <= 1.0:
            raise ValueError(f"conf and iou must be within 0..1 (got conf={conf}, iou={iou})")
        self.path = Path(model_path)
        self.conf, self.iou, self.max_det = conf, iou, max_det
        self.session = load_session(self.path, threads, spin_wait=spin_wait)
        self.info = read_model_info(self.session, self.path)
        self._input = self.session.get_inputs()[0].name
        self._output = self.session.get_outputs()[0].name

    @property
    def names(self) -> dict[int, str]:
        return dict(self.info.names)

    @property
    def imgsz(self) -> tuple[int, int]:
        return self.info.imgsz

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """Bare `session.run` on a preprocessed 1x3xHxW tensor; the raw first output."""
        return self.session.run([self._output], {self._input: tensor})[0]

    def detect_timed(self, image_bgr: np.ndarray) -> tuple[list[Detection], Timings]:
        """Detections plus how long preprocessing, the model and postprocessing took."""
        t0 = time.perf_counter()
        tensor, geo = preprocess(image_bgr, self.info.imgsz)
        t1 = time.perf_counter()
        output = self.infer(tensor)
        t2 = time.perf_counter()
        detections = postprocess(
            output,
            geo,
            self.info.names,
            conf=self.conf,
            iou=self.iou,
            max_det=self.max_det,
            end2end=self.info.end2end,
        )
        t3 = time.perf_counter()
        return detections, Timings((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        """Detections in source pixels, highest score first."""
        return self.detect_timed(image_bgr)[0]
