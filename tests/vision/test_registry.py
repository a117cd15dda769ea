"""Promotion and rollback, per fleet and for all fleets, on a real MLflow registry: the embedded
SQLite store and a real `mlflow server` (PostgreSQL backend store, S3 artifacts), through the
same tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from registry_versions import Versions

from shared.config import Settings


@pytest.fixture(scope="module", params=["sqlite", pytest.param("server", marks=pytest.mark.postgres)])
def versions(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """The registry of versions, embedded or on a tracking server (which proxies artifacts to S3)."""
    pytest.importorskip("mlflow")
    pytest.importorskip("onnx")
    from vision.registry import ModelRegistry

    home = tmp_path_factory.mktemp(f"registry-{request.param}")
    if request.param == "sqlite":
        settings = Settings(home=home)
        yield Versions(settings, ModelRegistry.from_settings(settings))
        return
    from mlflow_server import mlflow_server
    from s3_server import new_bucket, s3_server
    from sqlalchemy import create_engine, make_url, text

    admin_url = request.getfixturevalue("postgres_admin_url")
    name = f"loopline_mlflow_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE template0'))
    backend = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    mp = pytest.MonkeyPatch()
    for key, value in (
        ("AWS_ACCESS_KEY_ID", "loopline-test"),
        ("AWS_SECRET_ACCESS_KEY", "x"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        mp.setenv(key, value)
    try:
        with s3_server() as s3, mlflow_server(backend, f"s3://{new_bucket(s3)}", s3, home / "mlflow.log") as url:
            settings = Settings(home=home, mlflow_tracking_uri=url)
            yield Versions(settings, ModelRegistry.from_settings(settings))
    finally:
        mp.undo()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_weights_round_trip_through_the_registrys_artifact_store(versions, tmp_path) -> None:  # noqa: ANN001
    v = versions.add()
    path = versions.registry.download(v, "weights/best.pt", tmp_path / "dl")
    assert path.read_bytes() == b"not trained"
    if versions.settings.mlflow_tracking_uri:
        assert versions.registry.get(v).source.startswith("mlflow-artifacts:/"), "kept by the server, not this disk"
        assert not (versions.settings.home / "mlartifacts").exists()


def test_a_fleet_rolls_back_to_what_it_ran_through_an_all_fleet_promotion(versions) -> None:
    registry = versions.registry
    v1, v2 = versions.add(), versions.add()
    registry.promote(v1)  # every fleet runs v1
    registry.promote(v2, fleet="line-7")
    assert registry.production("line-7").version == v2
    assert registry.rollback("line-7").version == v1
    assert registry.production("line-7").version == v1
    assert registry.production("line-8").version == v1  # other fleets never moved
    with pytest.raises(LookupError, match="no earlier production version"):
        registry.rollback("line-7")


def test_a_fleet_history_keeps_every_all_fleet_version_it_ran(versions) -> None:
    registry = versions.registry
    v1, v2, v3 = versions.add(), versions.add(), versions.add()
    registry.promote(v1)
    registry.promote(v2)
    registry.promote(v3, fleet="line-9")
    assert [registry.rollback("line-9").version for _ in range(2)] == [v2, v1]


def test_the_cli_rolls_a_fleet_back_after_an_all_fleet_promotion(versions, monkeypatch: pytest.MonkeyPatch) -> None:
    from vision.cli import vision

    monkeypatch.setenv("LOOPLINE_HOME", str(versions.settings.home))
    monkeypatch.setenv("LOOPLINE_MLFLOW_TRACKING_URI", versions.settings.mlflow_tracking_uri or "")
    v1, v2 = versions.add(), versions.add()
    run = CliRunner()
    assert run.invoke(vision, ["promote", v1]).exit_code == 0
    assert run.invoke(vision, ["promote", v2, "--fleet", "line-1"]).exit_code == 0
    result = run.invoke(vision, ["rollback", "--fleet", "line-1"])
    assert result.exit_code == 0, result.output
    assert f"rolled back to version {v1}" in result.output
