"""The vision benchmark on a tiny synthetic VOC tree: import, train 1 epoch, export, score, time, report.

Sixteen 64 px plates of `vision.datasets.synth`, squeezed to 64x32 frames and written as Pascal
VOC (the format the benchmark reads), one thread, one round, no wait for an idle machine. It
checks the wiring, the input shaped like the frames, and the report a user reads, not accuracy
(one epoch learns nothing).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from vision.datasets.synth import CLASSES, render_plate

ROOT = Path(__file__).resolve().parents[3]
SPLITS = {"train": 8, "val": 4, "test": 4}


def write_voc(root: Path, counts: dict[str, int], size: int = 64, seed: int = 3, height: int = 32) -> Path:
    """Synthetic plates, squeezed to `height` rows, as a VOC tree: JPEGImages/, Annotations/ and
    ImageSets/Main/{split}.txt."""
    ann, jpg, main = root / "Annotations", root / "JPEGImages", root / "ImageSets" / "Main"
    for folder in (ann, jpg, main):
        folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for split, n in counts.items():
        stems = [f"{split}_{i:03d}" for i in range(n)]
        for stem in stems:
            img, boxes = render_plate(rng, size)
            cv2.imwrite(str(jpg / f"{stem}.jpg"), cv2.resize(img, (size, height), interpolation=cv2.INTER_AREA))
            sy = height / size
            objects = "".join(
                f"<object><name>{CLASSES[b.cls]}</name><difficult>0</difficult><bndbox><xmin>{b.x1:.0f}</xmin>"
                f"<ymin>{b.y1 * sy:.0f}</ymin><xmax>{b.x2:.0f}</xmax><ymax>{b.y2 * sy:.0f}</ymax></bndbox></object>"
                for b in boxes
            )
            (ann / f"{stem}.xml").write_text(
                f"<annotation><filename>{stem}.jpg</filename><size><width>{size}</width>"
                f"<height>{height}</height><depth>3</depth></size>{objects}</annotation>"
            )
        (main / f"{split}.txt").write_text("".join(f"{s}\n" for s in stems))
    return root


@pytest.mark.slow
def test_every_path_is_scored_and_timed_and_the_targets_checked(tmp_path: Path) -> None:
    pytest.importorskip("ultralytics")
    voc, out = write_voc(tmp_path / "VOC", SPLITS), tmp_path / "out"
    cmd = [sys.executable, "-m", "evaluation.benchmarks.vision", str(voc), "--out", str(out), "--epochs", "1"]
    cmd += ["--imgsz", "64", "--batch", "8", "--threads", "1", "--rounds", "1", "--warmup", "1", "--wait-idle", "0"]
    proc = subprocess.run([*cmd, "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report == json.loads((out / "bench_vision.json").read_text())
    assert "-m evaluation.benchmarks.vision " in report["command"]

    assert report["dataset"]["images"] == SPLITS
    assert report["training"]["epochs"] == 1 and report["training"]["curve"]["epochs"] == 1
    assert set(report["export"]["variants_on_val"]) >= {"fp32", "int8", "fp16"}
    # 64x32 frames at imgsz 64: every variant takes a 64-wide, 32-high input, not 64x64
    assert report["export"]["input_hw"] == {"fp32": [32, 64], "int8": [32, 64], "fp16": [32, 64]}
    assert report["export"]["ultralytics_fp32"]["input_hw"] == [64, 64]  # what ultralytics exports by default
    assert set(report["accuracy"]) == {"pt", "fp32", "fp16", "int8"}
    for name, a in report["accuracy"].items():
        assert 0 <= a["mAP50"] <= 1 and a["size_mb"] > 0, name

    timing = report["timing"]["1"]
    assert timing["wait_idle"] is None  # --wait-idle 0: no wait
    paths = timing["paths"]
    expected = {"ultralytics PyTorch predict", "ultralytics ONNX predict (FP32)", "edge FP32", "edge INT8", "edge FP16"}
    expected.add("ultralytics ONNX predict (FP32, edge's file)")
    assert expected <= set(paths)
    for name in expected:
        assert paths[name]["frames"] == SPLITS["test"] and 0 < paths[name]["median_ms"] <= paths[name]["p95_ms"], name
    for name in ("edge FP32", "edge INT8", "edge FP16"):
        assert 0 < paths[name]["prepost_share_of_run"], name
    assert set(timing["bare_session_run"]) == {"FP32", "INT8"}

    checks = {c["check"] for c in report["targets"]}
    assert {"edge FP32 / PyTorch predict", "edge INT8 / ultralytics ONNX predict", "mAP50 FP32 - INT8 (test)"} <= checks
    assert "edge FP32 / ultralytics ONNX predict on the edge's file" in checks
    assert all(isinstance(c["pass"], bool) for c in report["targets"])
    assert set(report["seconds"]) == {"import", "train", "export", "accuracy", "latency", "total"}

    table = (out / "bench_vision.txt").read_text()
    for part in ("accuracy on the test split:", "latency per frame, 1 thread(s)", "targets:", "edge INT8"):
        assert part in table
    assert "exported input 64x32 (ultralytics ONNX predict: its own 64x64 export)" in table
    assert "inputs: edge 64x32 (--input-shape frames); ultralytics PyTorch predict 64x32" in table
    vs = table.split("edge runtime vs ultralytics")[1].split("targets:")[0].splitlines()
    assert sum(line.startswith("1 ") and "edge " in line for line in vs) == 3  # FP32, INT8, FP16 at 1 thread
