"""The API keys and devices files: what an operator writes is checked when it is read.

A typo must be an error at start, not a user who silently loses their groups or a device
that silently falls into the default fleet.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.auth import DeviceRegistry, KeyRegistry, secret_digest


def test_a_keys_file_is_read_with_its_groups_and_hashed_keys(tmp_path: Path) -> None:
    path = tmp_path / "api_keys.yaml"
    path.write_text(
        "users:\n"
        "  - {name: ada, key: ada-key-0123456789, groups: [engineering]}\n"
        f"  - {{name: ops, key_sha256: {secret_digest('ops-key-0123456789')}, admin: true}}\n"
    )
    keys = KeyRegistry.from_file(path)
    assert keys.authenticate("ada-key-0123456789").readable_groups == ["engineering", "public"]
    assert keys.authenticate("ops-key-0123456789").admin
    assert keys.authenticate("nobody-0123456789") is None


@pytest.mark.parametrize(
    "entry",
    ["{name: ada, key: ada-key-0123456789, group: [engineering]}", "{name: ada, key: ada-key-0123456789, admn: true}"],
)
def test_a_misspelled_key_in_the_keys_file_is_an_error(tmp_path: Path, entry: str) -> None:
    path = tmp_path / "api_keys.yaml"
    path.write_text(f"users:\n  - {entry}\n")
    with pytest.raises(ValueError) as err:
        KeyRegistry.from_file(path)
    assert str(path) in str(err.value) and ("group" in str(err.value) or "admn" in str(err.value))


def test_a_misspelled_key_in_the_devices_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "devices.yaml"
    path.write_text("devices:\n  - {id: cam-01, flet: line-1, token: a-long-random-device-token}\n")
    with pytest.raises(ValueError) as err:
        DeviceRegistry.from_file(path)
    assert str(path) in str(err.value) and "flet" in str(err.value)
    path.write_text("devices:\n  - {id: cam-01, fleet: line-1, token: a-long-random-device-token}\n")
    assert DeviceRegistry.from_file(path).authenticate("a-long-random-device-token").fleet == "line-1"
