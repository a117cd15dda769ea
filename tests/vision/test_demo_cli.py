"""`loopline demo --json`: the closed loop end to end, as its contract's fields report it.

The whole demo in a subprocess, as a person runs it, with the fewest epochs: the figures are
not judged here (a model trained for one epoch sees little), the path and the contract are —
Label Studio started, frames streamed, sent and labeled, a candidate judged, the device on
the fleet's production model. `make demo` runs it at full length.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from labelstudio import executable, free_port

pytest.importorskip("ultralytics")
pytest.importorskip("label_studio_sdk")

pytestmark = pytest.mark.slow


def test_demo_closes_the_loop_and_reports_the_contract(tmp_path: Path) -> None:
    exe = executable()
    home = tmp_path / "home"  # the demo's Label Studio migrates its database while the model trains
    env = {
        **os.environ,
        "LOOPLINE_HOME": str(home),
        "LOOPLINE_LABEL_STUDIO_BIN": exe,
        "LOOPLINE_LABEL_STUDIO_PORT": str(free_port()),
        "LOOPLINE_TRAIN_THREADS": "2",
    }
    cli = [sys.executable, "-m", "shared.cli"]
    try:
        run = subprocess.run(
            [*cli, "demo", "--epochs", "1", "--retrain-epochs", "1", "--shift", "brightness=-60,blur=1", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        out = json.loads(run.stdout)
    finally:
        demo_env = env | {"LOOPLINE_HOME": str(home / "demo-loop")}  # the demo's own server, left running
        subprocess.run([*cli, "labelstudio", "down"], env=demo_env, capture_output=True, timeout=60)
    for side in ("before", "after"):
        for key in ("map50_shifted", "map50_clean"):
            assert isinstance(out[side][key], float), (side, key)
    frames = out["frames"]
    assert frames["streamed"] >= 400 and 0 < frames["sent"] < frames["streamed"]
    assert frames["labeled"] == frames["sent"], "the simulated labeler labeled every frame sent"
    assert out["labelstudio"]["url"].startswith("http://127.0.0.1:") and out["labelstudio"]["project_id"]
    expected = out["promoted_version"] or out["production_version"]
    assert out["device_model_version"] == expected, "the device runs the fleet's production model"
    assert out["drift_alert"] and "brightness" in out["drift_alert"]["features"], "the shift raised central's alarm"
    assert out["gate"]["checks"], "the candidate was judged"
