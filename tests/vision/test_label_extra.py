"""The `label` extra lives with the training stack: one environment, one OpenCV, all working.

label-studio-sdk pins opencv-python-headless<4.13 (and through it numpy<2.3); ultralytics needs
opencv-python; both write cv2/. `make` keeps the GUI build alone (Makefile), so the one thing
`pip check` may report is the SDK's headless build being absent. Here: cv2 decodes, YOLO
builds offline, the SDK makes a client and reads a labeling config, all in this interpreter.
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import pytest

pytest.importorskip("label_studio_sdk", reason="the 'label' extra is not installed")
pytest.importorskip("ultralytics", reason="the 'vision' extra is not installed")

CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="scratch"/><Label value="spot"/><Label value="crack"/>
  </RectangleLabels>
</View>"""


def test_cv2_decodes_an_image() -> None:
    import cv2

    image = np.zeros((24, 32, 3), np.uint8)
    image[4:12, 8:20] = (0, 128, 255)
    ok, png = cv2.imencode(".png", image)
    assert ok
    assert np.array_equal(cv2.imdecode(png, cv2.IMREAD_COLOR), image)


def test_ultralytics_builds_yolo_offline(tmp_path_factory: pytest.TempPathFactory) -> None:
    from vision.yolo_env import prepare_ultralytics

    prepare_ultralytics(tmp_path_factory.mktemp("yolo-home"))
    from ultralytics import YOLO

    model = YOLO("yolov8n.yaml")
    assert sum(p.numel() for p in model.model.parameters()) > 1_000_000
    result = model.predict(np.zeros((64, 64, 3), np.uint8), imgsz=64, device="cpu", verbose=False)
    assert len(result) == 1


def test_the_sdk_makes_a_client_and_reads_a_config() -> None:
    from label_studio_sdk.client import LabelStudio
    from label_studio_sdk.label_interface import LabelInterface

    client = LabelStudio(base_url="http://127.0.0.1:9", api_key="0" * 40)  # no request is made
    assert hasattr(client, "projects") and hasattr(client, "tasks")
    interface = LabelInterface(CONFIG)
    assert interface.get_control("label").labels == ["scratch", "spot", "crack"]
    box = {"x": 10, "y": 20, "width": 5, "height": 5, "rotation": 0, "rectanglelabels": ["spot"]}
    prediction = {"result": [{"from_name": "label", "to_name": "image", "type": "rectanglelabels", "value": box}]}
    assert interface.validate_prediction(prediction)


def test_one_opencv_build_and_numpy_for_everyone() -> None:
    """Only the GUI build provides cv2, and `pip check` reports nothing but the absent headless build."""
    import cv2

    assert version("opencv-python")
    with pytest.raises(PackageNotFoundError):
        version("opencv-python-headless")
    assert cv2.__version__.split(".")[0] == version("opencv-python").split(".")[0]
    checked = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    problems = [line for line in checked.stdout.splitlines() if line.strip() and "No broken requirements" not in line]
    allowed = re.compile(r"label-studio-sdk \S+ requires opencv-python-headless, which is not installed\.")
    assert all(allowed.fullmatch(line) for line in problems), checked.stdout
