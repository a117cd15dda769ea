"""Export a trained detector to ONNX, and derive its INT8 and FP16 variants.

ONNX export is ultralytics' own (simplified with onnxslim, static shape). The input is square
(imgsz x imgsz) or, given the frames' size, the frames' aspect ratio: imgsz on the long side and
the short side the smallest stride multiple that holds the scaled frame (320x256 for 640x480 at
320), the rectangle ultralytics' PyTorch predict letterboxes such frames to: for 4:3 frames it
has a fifth fewer pixels than the square, whose extra rows are only padding. INT8 is ONNX
Runtime static quantization (QDQ, per-channel weights) calibrated on dataset images
pre-processed exactly as the edge runtime does. The detection head's box-decoding nodes stay
in float: its final Concat mixes pixel boxes with 0–1 scores, and one shared scale for both
destroys either the boxes or the scores (measured: mAP 0 when the whole graph is quantized).
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
_HEAD = re.compile(r"^/model\.(\d+)/")


def frame_input_hw(imgsz: int, frame_hw: tuple[int, int], stride: int = 32) -> tuple[int, int]:
    """(height, width) of a model input for frames of `frame_hw`: `imgsz` on the frame's long side,
    the short side rounded up to a multiple of `stride` — what ultralytics' `LetterBox(auto=True)`
    gives such a frame, so nothing but the stride remainder is padding."""
    h, w = frame_hw
    if h < 1 or w < 1:
        raise ValueError(f"frame size must be positive (got {h}x{w})")
    if imgsz < stride or imgsz % stride:  # as ultralytics' check_imgsz: round up to the stride
        rounded = max(math.ceil(imgsz / stride), 1) * stride
        log.warning("imgsz %d is not a multiple of the model stride %d; using %d", imgsz, stride, rounded)
        imgsz = rounded
    r = imgsz / max(h, w)
    short = max(math.ceil(round(min(h, w) * r) / stride) * stride, stride)
    return (imgsz, short) if h >= w else (short, imgsz)


def typical_frame_hw(images: Sequence[Path], limit: int = 64) -> tuple[int, int] | None:
    """The most common (height, width) among up to `limit` images spread over `images` (as OpenCV
    decodes them, EXIF rotation applied), or None when none is readable."""
    import cv2

    step = max(1, math.ceil(len(images) / limit))
    shapes = Counter(img.shape[:2] for img in (cv2.imread(str(p)) for p in images[::step]) if img is not None)
    if not shapes:
        return None
    (h, w), _ = shapes.most_common(1)[0]
    return int(h), int(w)


def export_onnx(
    weights: Path, out: Path, *, imgsz: int | tuple[int, int], frame_hw: tuple[int, int] | None = None
) -> Path:
    """FP32 ONNX through ultralytics' exporter (call prepare_ultralytics first).

    `imgsz` is a side (square input) or (height, width); with `frame_hw` an int `imgsz` is the
    long side of an input shaped like those frames (`frame_input_hw`, at the model's stride).
    The input size lands in the model's `imgsz` metadata, which the edge runtime reads.
    """
    from ultralytics import YOLO

    model = YOLO(str(weights))
    if frame_hw is not None:
        if not isinstance(imgsz, int):
            raise ValueError(f"with frame_hw, imgsz is the long side (an int), got {imgsz!r}")
        imgsz = frame_input_hw(imgsz, frame_hw, stride=int(model.model.stride.max()))
    size = list(imgsz) if isinstance(imgsz, (tuple, list)) else imgsz
    produced = Path(model.export(format="onnx", imgsz=size, simplify=True, dynamic=False, opset=17))
    out.parent.mkdir(parents=True, exist_ok=True)
    produced.replace(out)
    log.info("FP32 ONNX %s, input (height, width) %s", out, size)
    return out


def onnx_input_hw(path: Path) -> tuple[int, int]:
    """(height, width) of an exported model's static input."""
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return int(dims[2].dim_value), int(dims[3].dim_value)


def head_decode_nodes(model) -> list[str]:  # noqa: ANN001 - an onnx.ModelProto
    """Names of the detection head's decoding nodes: everything in the last module of the
    graph except the convolution branches (cv2: boxes, cv3: classes) that feed it."""
    indices = [int(m.group(1)) for n in model.graph.node if (m := _HEAD.match(n.name))]
    if not indices:
        return []
    head = f"/model.{max(indices)}/"
    return [
        n.name
        for n in model.graph.node
        if n.name.startswith(head) and not re.match(rf"{re.escape(head)}(cv2|cv3|one2one_cv2|one2one_cv3)\.", n.name)
    ]


class _Calibration:
    """Feeds letterboxed calibration images to the ONNX Runtime quantizer."""

    def __init__(self, images: Sequence[Path], input_name: str, input_hw: tuple[int, int]) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = self._batches(images, input_name, input_hw)

    @staticmethod
    def _batches(images: Sequence[Path], input_name: str, input_hw: tuple[int, int]) -> Iterator[dict[str, np.ndarray]]:
        import cv2

        from edge.preprocess import preprocess

        for path in images:
            img = cv2.imread(str(path))
            if img is None:
                log.warning("calibration image %s is unreadable; skipped", path)
                continue
            yield {input_name: preprocess(img, input_hw)[0]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def quantize_int8(fp32_onnx: Path, calibration_images: list[Path], out: Path) -> Path:
    """Static INT8 (QDQ, per-channel) with the head's decoding left in float."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration_images:
        raise ValueError("INT8 quantization needs calibration images (none given)")
    model = onnx.load(str(fp32_onnx))
    inp = model.graph.input[0]
    dims = inp.type.tensor_type.shape.dim
    input_hw = int(dims[2].dim_value), int(dims[3].dim_value)
    exclude = head_decode_nodes(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    prepped = out.with_suffix(".pre.onnx")
    try:
        quant_pre_process(str(fp32_onnx), str(prepped), skip_symbolic_shape=True)
        source = prepped
    except Exception as exc:  # pre-processing is an optimisation; quantize the raw graph otherwise
        log.warning("quantization pre-processing failed (%s); quantizing the exported graph as is", exc)
        source = fp32_onnx
    quantize_static(
        str(source),
        str(out),
        _Calibration(calibration_images, inp.name, input_hw),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        nodes_to_exclude=exclude,
    )
    prepped.unlink(missing_ok=True)
    _copy_metadata(fp32_onnx, out)
    log.info(
        "INT8 model %s (%d head nodes kept in float, %d calibration images)", out, len(exclude), len(calibration_images)
    )
    return out


def convert_fp16(fp32_onnx: Path, out: Path) -> Path:
    """FP16 weights and activations, with float32 inputs and outputs kept for the runtime."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(fp32_onnx))
    half = convert_float_to_float16(model, keep_io_types=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(half, str(out))
    _copy_metadata(fp32_onnx, out)
    return out


def _copy_metadata(src: Path, dst: Path) -> None:
    """Keep ultralytics' metadata (names, imgsz, stride) on derived models."""
    import onnx

    a, b = onnx.load(str(src)), onnx.load(str(dst))
    have = {p.key for p in b.metadata_props}
    for prop in a.metadata_props:
        if prop.key not in have:
            b.metadata_props.add(key=prop.key, value=prop.value)
    onnx.save(b, str(dst))
