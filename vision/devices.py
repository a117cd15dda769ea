"""Device identities: each device has an id, a fleet and a token (or its sha256).

    devices:
      - id: line1-cam01
        fleet: line-1
        token_sha256: 5e88489…    # or `token: …` in clear

A device only ever acts as itself: uploads are checked against the token's device id.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, Field, model_validator

from shared.auth import find_by_secret, secret_digest


class Device(BaseModel):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    fleet: str = Field("default", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    token: str | None = Field(None, min_length=16)
    token_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _one_token(self) -> Device:
        if not (self.token or self.token_sha256):
            raise ValueError(f"device '{self.id}' needs a 'token' or a 'token_sha256'")
        return self

    def digest(self) -> str:
        return self.token_sha256 or secret_digest(self.token)  # type: ignore[arg-type]


class DevicesFile(BaseModel):
    devices: list[Device] = Field(default_factory=list)


class DeviceRegistry:
    def __init__(self, devices: list[Device]) -> None:
        ids = [d.id for d in devices]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate device ids in the devices file")
        self._devices = list(devices)

    @classmethod
    def from_file(cls, path: Path) -> DeviceRegistry:
        if not path.exists():
            return cls([])
        return cls(DevicesFile.model_validate(yaml.safe_load(path.read_text()) or {}).devices)

    def authenticate(self, token: str | None) -> Device | None:
        return find_by_secret(((d.digest(), d) for d in self._devices), token)

    def __len__(self) -> int:
        return len(self._devices)
