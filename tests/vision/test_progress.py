"""Progress of `vision train` and `vision export` on stderr: when asked or on a terminal only.

Stdout keeps the result (one JSON object with --json); training shows one line per epoch
(losses and mAP on val), export one line as each step starts and ends, with its duration.
Tiny on purpose: 64 px images, one or two epochs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from terminal import run_in_terminal

from shared.cli import main

pytest.importorskip("ultralytics")

EPOCH = re.compile(
    r"^epoch (\d+)/(\d+)  box \d+\.\d{3}  cls \d+\.\d{3}  dfl \d+\.\d{3}  mAP50 \d\.\d{3}  mAP50-95 \d\.\d{3}  "
    r"\(\d+\.\ds(, \d+s left)?\)$",
    re.MULTILINE,
)
STEP_END = re.compile(r"^\[(\d+)/(\d+)\] (.+): (.+) \((\d+\.\d)s\)$", re.MULTILINE)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("progress-home")
    return {"LOOPLINE_HOME": str(home), "LOOPLINE_TRAIN_THREADS": "2"}


def invoke(env: dict[str, str], *args: str) -> Result:
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def data(env, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plates")
    synth = invoke(env, "vision", "dataset", "synth", str(out), "--train", "16", "--val", "8", "--imgsz", "64")
    return Path(synth.stdout.strip())


def train_args(data: Path, epochs: int, *extra: str) -> list[str]:
    return ["vision", "train", "--data", str(data), "--epochs", str(epochs), "--imgsz", "64", "--batch", "8", *extra]


@pytest.fixture(scope="module")
def forced(env, data) -> Result:
    """A two-epoch training with --progress, off a terminal."""
    return invoke(env, *train_args(data, 2, "--json", "--progress"))


def test_train_shows_each_epoch_when_forced(forced: Result) -> None:
    assert json.loads(forced.stdout)["version"]  # stdout is the JSON object alone
    epochs = [(int(m[0]), int(m[1])) for m in EPOCH.findall(forced.stderr)]
    assert epochs == [(1, 2), (2, 2)]  # once each: the final validation of best.pt is not an epoch


def test_train_keeps_ultralytics_console_output_away(forced: Result) -> None:
    """ultralytics' per-batch bars and tables (headers, it/s) do not reach the terminal."""
    lines = forced.stderr.splitlines()
    assert lines[0].startswith("training yolov8n.yaml for 2 epochs at 64px")
    assert len(lines) == 3, forced.stderr
    assert "GPU_mem" not in forced.stderr and "it/s" not in forced.stderr


def test_train_is_quiet_off_a_terminal(env, data) -> None:
    result = invoke(env, *train_args(data, 1))
    assert result.stderr.startswith("training yolov8n.yaml for 1 epochs")
    assert not EPOCH.search(result.stderr)
    assert re.match(r"version \d+: mAP50 \d\.\d{3}", result.stdout)


def test_train_on_a_terminal_shows_epochs_and_keeps_stdout_json(env, data) -> None:
    """On a terminal the epochs show by default, --json included (stdout stays one JSON object)."""
    out, shown = run_in_terminal(*train_args(data, 1, "--json"), env=env)
    assert json.loads(out)["metrics"]["mAP50"] >= 0
    assert [m[:2] for m in EPOCH.findall(shown)] == [("1", "1")]


def test_export_shows_each_step_with_its_duration_when_forced(env, forced: Result) -> None:
    version = json.loads(forced.stdout)["version"]
    result = invoke(env, "vision", "export", version, "--int8", "--fp16", "--json", "--progress")
    out = json.loads(result.stdout)
    ended = STEP_END.findall(result.stderr)
    assert [(int(n), int(total)) for n, total, *_ in ended] == [(n, 11) for n in range(1, 12)]
    names = [name for _, _, name, _, _ in ended]
    assert names[:3] == [
        "export FP32 ONNX (64 px)",
        "quantize INT8 (static QDQ, calibrated on 16 training images)",
        "convert to FP16",
    ]
    assert names[3:9] == [
        f"{what} {p} {how}"
        for p in ("FP32", "INT8", "FP16")
        for what, how in (("score", "on val"), ("time", "with the edge runtime"))
    ]
    results = {name: found for _, _, name, found, _ in ended}
    assert results["score FP32 on val"] == f"mAP50 {out['variants']['fp32']['mAP50']:.3f}, " + (
        f"mAP50-95 {out['variants']['fp32']['mAP50-95']:.3f}"
    )
    assert results["time INT8 with the edge runtime"] == f"{out['variants']['int8']['latency_ms']} ms/image"
    assert results["choose the preferred variant and record it"] == f"preferred {out['preferred']}"
    # Each step is announced before it runs, so a slow one shows what the wait is for.
    starts = re.findall(r"^\[(\d+)/11\] .+ …$", result.stderr, re.MULTILINE)
    assert starts == [str(n) for n in range(1, 12)]


def test_export_is_quiet_off_a_terminal(env, forced: Result) -> None:
    version = json.loads(forced.stdout)["version"]
    result = invoke(env, "vision", "export", version, "--json")
    assert json.loads(result.stdout)["preferred"] == "fp32"
    assert "[1/" not in result.stderr
