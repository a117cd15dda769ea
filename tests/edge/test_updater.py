"""Model updates against a real HTTP server: verified, test-loaded, swapped atomically, rolled back."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from fake_central import FLEET, TOKEN, FakeCentral, mean_model

from edge.updater import ModelUpdater, UpdateStatus

pytest.importorskip("onnx", reason="the tiny test models are built with onnx (vision extra)")


def ort_loader(path: Path) -> None:
    """What the device does before switching: build a session and run it on a blank frame."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    sess.run(None, {sess.get_inputs()[0].name: np.zeros((1, 3, 32, 32), np.float32)})


@pytest.fixture
def central():
    with FakeCentral() as c:
        yield c


def updater(models: Path, central: FakeCentral, loader=ort_loader) -> ModelUpdater:
    return ModelUpdater(models, central=central.url, token=TOKEN, fleet=FLEET, loader=loader, timeout=5)


def model_files(models: Path) -> list[str]:
    return sorted(p.name for p in models.iterdir() if p.suffix == ".onnx" or p.name.startswith("."))


V1, V2, V3 = mean_model(1.0), mean_model(2.0), mean_model(3.0)
VERSIONS = {"1": V1, "2": V2, "3": V3}


def following(models: Path, central: FakeCentral, *versions: str) -> ModelUpdater:
    """An updater that has followed central through `versions`: each published, then checked."""
    up = updater(models, central)
    for version in versions:
        central.publish(version, VERSIONS[version])
        up.check()
    return up


def test_a_fresh_device_installs_the_fleet_model(tmp_path: Path, central: FakeCentral) -> None:
    central.publish("1", V1)
    up = updater(tmp_path / "models", central)
    assert up.current() is None
    result = up.check()
    assert (result.status, result.version) == (UpdateStatus.UPDATED, "1")
    cur = up.current()
    assert cur is not None and (cur.version, cur.names, cur.imgsz, cur.precision) == (
        "1",
        ["scratch", "dent"],
        32,
        "fp32",
    )
    assert up.path(cur).read_bytes() == V1
    pointer = json.loads((tmp_path / "models" / "current").read_text())
    assert (pointer["version"], pointer["sha256"], pointer["file"]) == ("1", hashlib.sha256(V1).hexdigest(), cur.file)
    assert central.requests[0] == ("/v1/devices/model?fleet=line-1", f"Bearer {TOKEN}")
    assert all(auth == f"Bearer {TOKEN}" for _, auth in central.requests)


def test_the_same_version_is_not_downloaded_again(tmp_path: Path, central: FakeCentral) -> None:
    up = following(tmp_path / "models", central, "1")
    assert up.check().status is UpdateStatus.UP_TO_DATE
    assert central.downloads() == 1


def test_a_new_version_is_swapped_in_and_the_old_kept_as_previous(tmp_path: Path, central: FakeCentral) -> None:
    models = tmp_path / "models"
    up = following(models, central, "1")
    central.publish("2", V2)
    assert up.check().status is UpdateStatus.UPDATED
    assert (up.current().version, up.previous().version) == ("2", "1")
    assert json.loads((models / "previous").read_text())["version"] == "1"
    assert model_files(models) == sorted([up.current().file, up.previous().file])
    central.publish("3", V3)
    up.check()
    assert (up.current().version, up.previous().version) == ("3", "2")
    assert len(model_files(models)) == 2  # the one before previous is deleted


def test_central_going_back_to_the_previous_version_needs_no_download(tmp_path: Path, central: FakeCentral) -> None:
    up = following(tmp_path / "models", central, "1", "2")
    central.publish("1", V1)  # promoted back on the central side
    downloads = central.downloads()
    assert up.check().status is UpdateStatus.UPDATED
    assert (up.current().version, up.previous().version) == ("1", "2")
    assert central.downloads() == downloads
    assert up.path(up.current()).read_bytes() == V1


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        ({"sha256": hashlib.sha256(b"other").hexdigest()}, "sha256 mismatch"),
        ({"mode": "truncate"}, "truncated download"),
        ({"mode": "extra"}, "larger than the announced"),
    ],
)
def test_a_corrupted_or_truncated_download_is_rejected_and_the_current_model_kept(
    tmp_path: Path, central: FakeCentral, tamper: dict, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    models = tmp_path / "models"
    up = following(models, central, "1")
    central.publish("2", V2, sha256=tamper.get("sha256"))
    central.mode = tamper.get("mode", "")
    result = up.check()
    assert result.status is UpdateStatus.REJECTED and message in result.detail
    assert up.current().version == "1" and up.path(up.current()).read_bytes() == V1
    assert model_files(models) == [up.current().file]  # no partial download left behind
    assert "model 2 rejected" in caplog.text and "keeping model 1" in caplog.text
    central.mode = ""
    central.publish("2", V2)
    assert up.check().status is UpdateStatus.UPDATED  # a transfer problem is retried next poll


def test_a_download_failing_its_sha256_check_is_not_fetched_again(tmp_path: Path, central: FakeCentral) -> None:
    """Central serving other bytes than it announces does so on every poll: 1 download, not one per poll."""
    models = tmp_path / "models"
    up = following(models, central, "1")
    wrong = hashlib.sha256(b"other").hexdigest()
    central.publish("2", V2, sha256=wrong)
    assert up.check().status is UpdateStatus.REJECTED
    for again in (up, updater(models, central)):  # also after a restart
        result = again.check()
        assert result.status is UpdateStatus.SKIPPED and "sha256 mismatch" in result.detail
    assert central.downloads() == 2  # v1 once, v2 once
    assert "sha256 mismatch" in up.rejected()[f"2:{wrong}"]
    assert up.current().version == "1"
    central.publish("2", V2)  # announced right this time: a new (version, sha256) pair
    assert up.check().status is UpdateStatus.UPDATED


def test_a_model_that_fails_its_test_load_is_rejected_for_good(tmp_path: Path, central: FakeCentral) -> None:
    up = following(tmp_path / "models", central, "1")
    central.publish("2", b"\x08\x07 not an onnx graph " * 10)  # right sha256, wrong content
    result = up.check()
    assert result.status is UpdateStatus.REJECTED and "test load failed" in result.detail
    assert up.current().version == "1"
    before = central.downloads()
    assert up.check().status is UpdateStatus.SKIPPED
    assert central.downloads() == before  # not fetched again
    central.publish("2", V2)  # republished, fixed: new sha256
    assert up.check().status is UpdateStatus.UPDATED


def test_a_model_with_a_fixed_input_size_passes_the_blank_frame_test(tmp_path: Path, central: FakeCentral) -> None:
    central.publish("1", mean_model(1.0, side=32))
    up = updater(tmp_path / "models", central)
    assert up.check().status is UpdateStatus.UPDATED


def test_rollback_restores_the_previous_model_and_never_reinstalls_the_bad_one(
    tmp_path: Path, central: FakeCentral
) -> None:
    models = tmp_path / "models"
    up = following(models, central, "1", "2")
    restored = up.rollback("operator said so")
    assert restored is not None and restored.version == "1"
    assert up.current().version == "1" and up.previous() is None
    assert not (models / "previous").exists()
    assert model_files(models) == [up.current().file]
    assert up.check().status is UpdateStatus.SKIPPED
    assert up.rollback().version == "1"  # nothing earlier: stays


def test_report_failure_rolls_back_only_the_model_that_failed(tmp_path: Path, central: FakeCentral) -> None:
    up = following(tmp_path / "models", central, "1", "2")
    assert up.report_failure(RuntimeError("boom"), version="1").version == "2"  # stale report: ignored
    assert up.report_failure(RuntimeError("boom"), version="2").version == "1"
    assert "failed at run time: RuntimeError: boom" in up.rejected()[f"2:{hashlib.sha256(V2).hexdigest()}"]


def test_state_survives_a_restart(tmp_path: Path, central: FakeCentral) -> None:
    models = tmp_path / "models"
    following(models, central, "1", "2")
    again = updater(models, central)
    assert (again.current().version, again.previous().version) == ("2", "1")
    again.rollback("bad")
    third = updater(models, central)
    assert third.current().version == "1" and third.check().status is UpdateStatus.SKIPPED


def test_leftovers_of_an_interrupted_update_are_cleaned_at_start(tmp_path: Path, central: FakeCentral) -> None:
    models = tmp_path / "models"
    up = following(models, central, "1")
    (models / ".download-abc.part").write_bytes(b"half a model")
    (models / ".current.tmp").write_text("{")
    (models / "model-9-deadbeef.onnx").write_bytes(V3)  # downloaded, never switched to
    again = updater(models, central)
    assert again.current().version == "1"
    assert sorted(p.name for p in models.iterdir()) == sorted(["current", up.current().file])


def test_central_down_or_without_a_model_keeps_the_current_one(tmp_path: Path, central: FakeCentral) -> None:
    up = updater(tmp_path / "models", central)
    assert up.check().status is UpdateStatus.NO_MODEL
    central.publish("1", V1)
    up.check()
    central.down()
    result = up.check()
    assert result.status is UpdateStatus.UNAVAILABLE and "Connection refused" in result.detail
    assert up.current().version == "1"


def test_an_invalid_manifest_is_named_and_ignored(tmp_path: Path, central: FakeCentral) -> None:
    central.publish("1", V1)
    central.manifest.pop("sha256")
    up = updater(tmp_path / "models", central)
    result = up.check()
    assert result.status is UpdateStatus.REJECTED and result.detail == "missing field(s) sha256"
    assert up.current() is None


# --- what ships with the model: the input reference; what central asks: the sampling boost ----
REFERENCE = {"brightness": {"edges": [100.0, 150.0], "counts": [3, 90, 7]}}


def test_the_reference_ships_with_the_model_and_survives_a_restart(tmp_path: Path, central: FakeCentral) -> None:
    models = tmp_path / "models"
    central.publish("1", V1)["reference"] = REFERENCE
    up = updater(models, central)
    assert up.check().status is UpdateStatus.UPDATED
    assert up.current().reference == REFERENCE
    assert updater(models, central).current().reference == REFERENCE  # read back from the pointer file


def test_a_reference_added_later_to_the_same_model_is_taken_without_a_download(
    tmp_path: Path, central: FakeCentral
) -> None:
    models = tmp_path / "models"
    up = following(models, central, "1")
    assert up.current().reference is None  # exported before references existed
    central.manifest["reference"] = REFERENCE
    assert up.check().status is UpdateStatus.UP_TO_DATE
    assert up.current().reference == REFERENCE and central.downloads() == 1
    assert updater(models, central).current().reference == REFERENCE


def test_the_sampling_boost_follows_central_and_outlives_an_outage(tmp_path: Path, central: FakeCentral) -> None:
    up = following(tmp_path / "models", central, "1")
    assert up.sampling_boost() == 1.0  # central said nothing about sampling
    central.manifest["sampling"] = {"boost": 4.0, "reason": "drift alert open on vision:line-1: brightness"}
    assert up.check().status is UpdateStatus.UP_TO_DATE  # the model is the same, the wish is new
    assert up.sampling() == {"boost": 4.0, "reason": "drift alert open on vision:line-1: brightness"}
    central.down()
    assert up.check().status is UpdateStatus.UNAVAILABLE
    assert up.sampling_boost() == 4.0  # kept while central cannot be asked
    central.up()
    central.manifest["sampling"] = {"boost": 1.0, "reason": None}  # the alert resolved
    up.check()
    assert up.sampling_boost() == 1.0


def test_a_new_device_samples_normally_until_central_answers(tmp_path: Path, central: FakeCentral) -> None:
    central.down()
    up = updater(tmp_path / "models", central)
    assert up.check().status is UpdateStatus.UNAVAILABLE and up.sampling_boost() == 1.0
    central.up()
    central.publish("1", V1)["sampling"] = {"boost": "lots"}
    up.check()
    assert up.sampling_boost() == 1.0  # not a number: ignored
