"""Promotion and rollback, per fleet and for all fleets, on a real MLflow registry."""

from __future__ import annotations

import pytest
from click.testing import CliRunner


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
    v1, v2 = versions.add(), versions.add()
    run = CliRunner()
    assert run.invoke(vision, ["promote", v1]).exit_code == 0
    assert run.invoke(vision, ["promote", v2, "--fleet", "line-1"]).exit_code == 0
    result = run.invoke(vision, ["rollback", "--fleet", "line-1"])
    assert result.exit_code == 0, result.output
    assert f"rolled back to version {v1}" in result.output
