"""`loopline edge run|bench`: the JSON contract, run as a user would (a subprocess).

stdout must carry only results (one JSON object per frame, or one for bench); notes on skipped
files and progress go to stderr.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.detector import Detector

REPO = Path(__file__).resolve().parents[2]
FRAME_KEYS = {"frame", "detections", "latency_ms", "selected", "reason"}
DETECTION_KEYS = {"cls", "name", "score", "box"}
BENCH_KEYS = {"frames", "median_ms", "p95_ms", "fps", "run_median_ms"}


def loopline(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def folder(tiny_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three plates (one of them wide), a corrupt image and a stray text file."""
    out = tmp_path_factory.mktemp("frames")
    for src in tiny_model.val_images[:2]:
        shutil.copy(src, out / src.name)
    wide = cv2.imread(str(tiny_model.val_images[2]))
    cv2.imwrite(str(out / "c_wide.png"), cv2.resize(wide, (200, 120)))
    (out / "b_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    (out / "notes.txt").write_text("not a frame")
    return out


def test_run_prints_one_json_line_per_readable_frame(tiny_model, folder: Path) -> None:
    proc = loopline(
        "edge", "run", "--model", str(tiny_model.onnx), "--source", str(folder), "--conf", "0.001", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    readable = sorted(p for p in folder.iterdir() if p.suffix == ".png")
    assert [line["frame"] for line in lines] == [str(p) for p in readable]
    assert "b_broken.jpg" in proc.stderr and "skipped" in proc.stderr

    detector = Detector(tiny_model.onnx, conf=0.001)
    for line, path in zip(lines, readable):
        assert set(line) == FRAME_KEYS
        assert isinstance(line["selected"], bool) and (line["reason"] is None or isinstance(line["reason"], str))
        assert line["latency_ms"] > 0
        h, w = cv2.imread(str(path)).shape[:2]
        for det in line["detections"]:
            assert set(det) == DETECTION_KEYS
            # above --conf before rounding; JSON scores have 4 decimals, so 0.00104 prints as 0.001
            assert detector.names[det["cls"]] == det["name"] and 0.001 <= det["score"] <= 1
            x1, y1, x2, y2 = det["box"]
            assert 0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h, (det, (h, w))
        expected = [d.to_json() for d in detector.detect(cv2.imread(str(path)))]
        assert line["detections"] == expected, "the CLI must print what the Detector finds, in source pixels"
    assert sum(len(line["detections"]) for line in lines) > 0


def test_run_reads_a_video_file(tiny_model, tmp_path: Path) -> None:
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (120, 80))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG video")
    frame = np.full((80, 120, 3), 128, np.uint8)
    for _ in range(4):
        writer.write(frame)
    writer.release()
    proc = loopline(
        "edge", "run", "--model", str(tiny_model.onnx), "--source", str(video), "--max-frames", "3", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["frame"] for line in proc.stdout.splitlines()] == [f"{video}#{i:06d}" for i in range(3)]


def test_bench_prints_the_latency_summary(tiny_model, folder: Path) -> None:
    proc = loopline(
        "edge",
        "bench",
        "--model",
        str(tiny_model.onnx),
        "--source",
        str(folder),
        "--warmup",
        "1",
        "--threads",
        "1",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    [line] = proc.stdout.splitlines()
    result = json.loads(line)
    assert set(result) == BENCH_KEYS
    assert result["frames"] == 3
    assert 0 < result["run_median_ms"] <= result["median_ms"] <= result["p95_ms"]
    assert 0 < result["fps"] < 1e6


def test_bad_model_or_source_fail_with_a_message_not_a_traceback(tiny_model, tmp_path: Path) -> None:
    missing = loopline("edge", "run", "--model", str(tmp_path / "gone.onnx"), "--source", str(tmp_path), "--json")
    assert missing.returncode != 0 and missing.stdout == ""
    assert "gone.onnx not found" in missing.stderr and "Traceback" not in missing.stderr
    nowhere = loopline("edge", "run", "--model", str(tiny_model.onnx), "--source", str(tmp_path / "nowhere"))
    assert nowhere.returncode != 0 and "not found" in nowhere.stderr and "Traceback" not in nowhere.stderr
    empty = loopline("edge", "bench", "--model", str(tiny_model.onnx), "--source", str(tmp_path))
    assert empty.returncode != 0 and "no readable frames" in empty.stderr
