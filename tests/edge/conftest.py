"""Session fixtures for the edge runtime: a tiny detector trained here, its ONNX and INT8 exports,
square and shaped like wide frames.

The model is trained from scratch on synthetic plates in about half a minute. It is weak, but
it must give image-dependent, localised boxes or the parity tests compare nothing; AdamW at a
high rate without mosaic gets there in 10 short epochs (2 epochs only give constant scores
and whole-image boxes). ultralytics is imported only here, after `prepare_ultralytics`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import pytest

IMGSZ = 96
WIDE_FRAME_HW = (120, 200)  # frames of the rectangular export: 96 on the long side → a 64x96 input


@dataclass(frozen=True)
class TinyModel:
    """A trained model in both formats plus the images it was trained and validated on."""

    pt: Path
    onnx: Path
    imgsz: int
    train_images: list[Path]
    val_images: list[Path]


@pytest.fixture(scope="session")
def yolo(tmp_path_factory: pytest.TempPathFactory):
    """The ultralytics YOLO class, configured offline in a throwaway home first."""
    if importlib.util.find_spec("ultralytics") is None:
        pytest.skip("ultralytics not installed (the 'vision' extra); model-based edge tests need it")
    from vision.yolo_env import prepare_ultralytics

    prepare_ultralytics(tmp_path_factory.mktemp("yolo-home"))
    from ultralytics import YOLO

    return YOLO


@pytest.fixture(scope="session")
def tiny_model(yolo, tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """Train yolov8n from scratch on 64 synthetic 96 px plates and export it to ONNX."""
    from vision.datasets.synth import generate

    root = tmp_path_factory.mktemp("tiny-model")
    data = generate(root / "synth", train=64, val=8, imgsz=IMGSZ, seed=0)
    model = yolo("yolov8n.yaml")
    model.train(
        data=str(data),
        epochs=10,
        imgsz=IMGSZ,
        batch=4,
        workers=0,
        device="cpu",
        amp=False,
        plots=False,
        val=False,
        optimizer="AdamW",
        lr0=0.01,
        warmup_epochs=0,
        mosaic=0.0,
        seed=0,
        deterministic=True,
        project=str(root / "runs"),
        name="tiny",
        exist_ok=True,
        verbose=False,
    )
    pt = Path(model.trainer.best)
    onnx = Path(model.export(format="onnx", imgsz=IMGSZ, simplify=True, opset=17))
    images = root / "synth" / "images"
    return TinyModel(
        pt=pt,
        onnx=onnx,
        imgsz=IMGSZ,
        train_images=sorted((images / "train").glob("*.png")),
        val_images=sorted((images / "val").glob("*.png")),
    )


@pytest.fixture(scope="session")
def int8_onnx(tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The FP32 model quantized by the vision vertical's exporter (skipped until it exists)."""
    try:
        from vision.export import quantize_int8
    except ImportError as exc:
        pytest.skip(f"vision.export.quantize_int8 not available ({exc}); INT8 parity not checked")
    out = tmp_path_factory.mktemp("int8") / "tiny-int8.onnx"
    return Path(quantize_int8(tiny_model.onnx, tiny_model.train_images[:32], out))


@pytest.fixture(scope="session")
def rect_onnx(tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model exported by the vision vertical's exporter for wide frames (a non-square input)."""
    import shutil

    from vision.export import export_onnx

    folder = tmp_path_factory.mktemp("rect")
    weights = Path(shutil.copy(tiny_model.pt, folder))  # ultralytics writes best.onnx beside the weights
    return export_onnx(weights, folder / "tiny-rect.onnx", imgsz=IMGSZ, frame_hw=WIDE_FRAME_HW)


@pytest.fixture(scope="session")
def rect_int8_onnx(rect_onnx: Path, tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rectangular model quantized, calibrated on images letterboxed to its own input."""
    from vision.export import quantize_int8

    out = tmp_path_factory.mktemp("rect-int8") / "tiny-rect-int8.onnx"
    return Path(quantize_int8(rect_onnx, tiny_model.train_images[:32], out))
