"""Train → register → export (FP32/INT8/FP16) → evaluate → promote/rollback, through the CLI.

Tiny on purpose (a few 64 px images, one epoch): this checks the wiring and the contract
(names and JSON fields), not accuracy; accuracy belongs in evaluation/ benchmarks.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from shared.cli import main

pytest.importorskip("ultralytics")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("vision-home")
    return {"LOOPLINE_HOME": str(home), "LOOPLINE_TRAIN_THREADS": "2"}


def run(env: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def data(env, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plates")
    printed = run(
        env, "vision", "dataset", "synth", str(out), "--train", "16", "--val", "8", "--imgsz", "64", "--seed", "3"
    )
    return Path(printed.strip())


@pytest.fixture(scope="module")
def trained(env, data) -> dict:
    return json.loads(
        run(env, "vision", "train", "--data", str(data), "--epochs", "1", "--imgsz", "64", "--batch", "8", "--json")
    )


def test_train_registers_a_version_with_weights_and_metrics(trained, env) -> None:
    assert trained["version"] == "1"
    weights = Path(trained["weights"])
    assert weights.exists() and weights.is_relative_to(Path(env["LOOPLINE_HOME"]))
    assert {"mAP50", "mAP50-95", "per_class"} <= trained["metrics"].keys()
    name, _, digest = trained["dataset_version"].partition("@")
    assert name and len(digest) == 12  # the exact data the model was trained on
    listed = json.loads(run(env, "vision", "models", "--json"))
    assert listed[0]["version"] == "1" and "candidate" in listed[0]["aliases"]
    assert listed[0]["dataset_version"] == trained["dataset_version"]


def test_run_record_names_data_code_and_parameters(trained, env) -> None:
    from shared.config import Settings
    from vision.registry import ModelRegistry

    reg = ModelRegistry.from_settings(Settings(home=Path(env["LOOPLINE_HOME"])))
    mv = reg.get("1")
    assert mv.tags["dataset_version"] == trained["dataset_version"]
    assert mv.tags["code_version"]
    run_ = reg.client.get_run(mv.run_id)
    assert run_.data.params["epochs"] == "1" and run_.data.params["model"] == "yolov8n.yaml"
    assert "mAP50" in run_.data.metrics


def test_export_variants_are_scored_and_loadable(trained, env) -> None:
    import onnxruntime as ort

    out = json.loads(run(env, "vision", "export", "1", "--int8", "--fp16", "--json"))
    assert out["version"] == "1"
    assert set(out["onnx"]) == {"fp32", "int8", "fp16"}
    for precision, path in out["onnx"].items():
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        assert sess.get_inputs()[0].shape == [1, 3, 64, 64], precision
        assert out["variants"][precision]["mAP50"] >= 0.0
    assert out["preferred"] in out["onnx"]
    # The INT8 graph keeps the head's box decoding in float.
    import onnx

    q = onnx.load(out["onnx"]["int8"])
    decode_ops = [n for n in q.graph.node if n.name.startswith("/model.22/") and "cv" not in n.name.split("/")[2]]
    assert decode_ops and not any(n.op_type == "QuantizeLinear" and "/model.22/dfl" in n.name for n in q.graph.node)


def test_eval_of_a_version_and_of_a_file(trained, env, data) -> None:
    by_version = json.loads(run(env, "vision", "eval", "1", "--data", str(data), "--json"))
    by_file = json.loads(run(env, "vision", "eval", trained["weights"], "--data", str(data), "--json"))
    assert by_version["mAP50"] == by_file["mAP50"]
    assert {"mAP50", "mAP50-95", "per_class"} <= by_version.keys()


def test_promote_and_rollback(trained, env, data) -> None:
    second = json.loads(
        run(
            env,
            "vision",
            "train",
            "--data",
            str(data),
            "--epochs",
            "1",
            "--imgsz",
            "64",
            "--batch",
            "8",
            "--from",
            "1",
            "--json",
        )
    )
    assert second["version"] == "2"
    run(env, "vision", "promote", "1")
    run(env, "vision", "promote", "2")
    models = {m["version"]: m for m in json.loads(run(env, "vision", "models", "--json"))}
    assert "production" in models["2"]["aliases"]
    assert "rolled back to version 1" in run(env, "vision", "rollback")
    models = {m["version"]: m for m in json.loads(run(env, "vision", "models", "--json"))}
    assert "production" in models["1"]["aliases"]
    result = CliRunner().invoke(main, ["vision", "rollback"], env=env)
    assert result.exit_code != 0 and "nothing to roll back" in result.output


def test_training_refuses_pretrained_names_that_would_download(env, data) -> None:
    result = CliRunner().invoke(
        main, ["vision", "train", "--data", str(data), "--model", "yolov8n.pt", "--epochs", "1"], env=env
    )
    assert result.exit_code != 0
    assert "downloaded" in str(result.exception) or "downloaded" in result.output


def test_training_with_a_relative_home_keeps_everything_under_it(
    data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default LOOPLINE_HOME is relative (./.loopline); ultralytics must not re-root it."""
    monkeypatch.chdir(tmp_path)
    env = {"LOOPLINE_HOME": ".loopline", "LOOPLINE_TRAIN_THREADS": "2"}
    out = json.loads(
        run(env, "vision", "train", "--data", str(data), "--epochs", "1", "--imgsz", "64", "--batch", "8", "--json")
    )
    weights = (tmp_path / out["weights"]).resolve()
    assert weights.exists()
    assert weights.is_relative_to((tmp_path / ".loopline").resolve())
    assert (tmp_path / ".loopline" / "runs").is_dir()


def test_training_and_evaluation_run_as_jobs_through_the_api(trained, env, data) -> None:
    """The same work as the commands, submitted to the API: it answers at once and the job record follows."""
    import time

    from fastapi.testclient import TestClient

    import shared.jobs.api
    from shared.auth import KeyRegistry, UserEntry
    from shared.config import Settings
    from shared.server import create_app

    admin = {"X-API-Key": "test-key-root-0123456789"}
    settings = Settings(home=Path(env["LOOPLINE_HOME"]), train_threads=2, ingest_roots=str(data.parent))
    keys = KeyRegistry([UserEntry(name="root", key=admin["X-API-Key"], groups=[], admin=True)])

    def finished(client: TestClient, job: dict) -> dict:
        deadline = time.monotonic() + 300
        while job["state"] not in ("succeeded", "failed") and time.monotonic() < deadline:
            time.sleep(0.2)
            job = client.get(f"/v1/jobs/{job['job_id']}", headers=admin).json()
        return job

    with TestClient(create_app(settings, plugins=[shared.jobs.api.plugin], keys=keys)) as client:
        evaluation = client.post(
            "/v1/jobs", headers=admin, json={"kind": "vision.eval", "params": {"model": "1", "data": str(data)}}
        )
        training = client.post(
            "/v1/jobs",
            headers=admin,
            json={"kind": "vision.train", "params": {"data": str(data), "epochs": 1, "imgsz": 64, "batch": 8}},
        )
        assert evaluation.status_code == training.status_code == 202
        assert training.json()["queue"] == "train" and evaluation.json()["queue"] == "default"
        evaluated, trained_job = finished(client, evaluation.json()), finished(client, training.json())

    by_command = json.loads(run(env, "vision", "eval", "1", "--data", str(data), "--json"))
    assert evaluated["state"] == "succeeded", evaluated
    assert evaluated["result"]["mAP50"] == by_command["mAP50"]
    assert trained_job["state"] == "succeeded", trained_job
    assert trained_job["progress"] == {**trained_job["progress"], "done": 1, "total": 1, "unit": "epochs"}
    models = {m["version"] for m in json.loads(run(env, "vision", "models", "--json"))}
    assert str(trained_job["result"]["version"]) in models
