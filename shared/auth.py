"""Who is calling: API keys → principals (user, groups, admin), device tokens → devices.

Both come from YAML files. Users have a key (or its sha256, so the file need not hold
secrets), groups and an admin flag; every user also reads the `public` group. Devices have
an id, a fleet and a token (or its sha256). Secrets are compared in constant time. Nothing
here knows about documents or frames: the verticals enforce groups and device ids.

    users:                                  devices:
      - name: alice                           - id: line1-cam01
        key_sha256: 2c26b46b68ffc68…            fleet: line-1
        groups: [engineering]                   token_sha256: 5e88489…   # or `token: …`
      - name: ops
        key: change-me
        admin: true
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

PUBLIC_GROUP = "public"
LOCAL_ADMIN = "local-admin"

T = TypeVar("T")


def secret_digest(secret: str) -> str:
    """The sha256 hex digest a key or token is stored as (`key_sha256`, `token_sha256`)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def find_by_secret(candidates: Iterable[tuple[str, T]], secret: str | None) -> T | None:
    """The candidate whose digest (see `secret_digest`) is the secret's, or None.

    Compares in constant time and always against every candidate, so the answer's timing
    tells nothing about which digest matched or how much of it. An empty secret matches none.
    """
    if not secret:
        return None
    digest = secret_digest(secret)
    found = None
    for known, candidate in candidates:
        if hmac.compare_digest(known, digest):
            found = candidate
    return found


class Principal(BaseModel):
    name: str
    groups: list[str] = Field(default_factory=list)
    admin: bool = False
    local: bool = Field(
        False, exclude=True, description="The machine's own CLI (the local admin token), not a network caller."
    )

    @property
    def readable_groups(self) -> list[str] | None:
        """Groups whose documents this principal may read; None means all (admins)."""
        if self.admin:
            return None
        return sorted(set(self.groups) | {PUBLIC_GROUP})


class UserEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo (`group:`) must not silently drop a user's groups

    name: str = Field(min_length=1)
    key: str | None = Field(None, min_length=8)
    key_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    groups: list[str] = Field(default_factory=list)
    admin: bool = False

    @model_validator(mode="after")
    def _one_key(self) -> UserEntry:
        if not (self.key or self.key_sha256):
            raise ValueError(f"user '{self.name}' needs a 'key' or a 'key_sha256'")
        return self

    def digest(self) -> str:
        return self.key_sha256 or secret_digest(self.key)  # type: ignore[arg-type]


class ApiKeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    users: list[UserEntry] = Field(default_factory=list)


class KeyRegistry:
    """Resolves API keys and user names to principals."""

    def __init__(self, users: list[UserEntry]) -> None:
        names = [u.name for u in users]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"duplicate users in the API keys file: {sorted(dupes)}")
        self._users = {u.name: u for u in users}
        self._digests = [(u.digest(), u) for u in users]

    @classmethod
    def from_file(cls, path: Path) -> KeyRegistry:
        if not path.exists():
            return cls([])
        data = yaml.safe_load(path.read_text()) or {}
        try:
            parsed = ApiKeysFile.model_validate(data)
        except Exception as exc:
            raise ValueError(f"{path}: invalid API keys file: {exc}") from exc
        return cls(parsed.users)

    def add(self, entry: UserEntry) -> None:
        if entry.name in self._users:
            raise ValueError(f"user '{entry.name}' already exists")
        self._users[entry.name] = entry
        self._digests.append((entry.digest(), entry))

    def authenticate(self, key: str | None) -> Principal | None:
        found = find_by_secret(self._digests, key)
        return _principal(found) if found else None

    def user(self, name: str) -> Principal | None:
        u = self._users.get(name)
        return _principal(u) if u else None

    def principal_for(self, user: str | None, *, source: object = "the API keys file") -> Principal:
        """Who a CLI command acts as: the local admin, or `user` (`--user`); ValueError naming `source` if unknown."""
        if user is None:
            return local_admin()
        found = self.user(user)
        if found is None:
            raise ValueError(f"unknown user '{user}' (not in {source})")
        return found

    def __len__(self) -> int:
        return len(self._users)


def _principal(u: UserEntry) -> Principal:
    return Principal(name=u.name, groups=sorted(set(u.groups)), admin=u.admin)


def local_admin() -> Principal:
    """The machine's own CLI user: an admin who may act on the server's files."""
    return Principal(name=LOCAL_ADMIN, admin=True, local=True)


def request_secret(headers: Mapping[str, str]) -> str | None:
    """The credential of a request: `X-API-Key: KEY`, else `Authorization: Bearer KEY`."""
    key = headers.get("x-api-key")
    if key:
        return key
    auth = headers.get("authorization", "")
    if not auth.lower().startswith("bearer "):
        return None
    return auth[7:].strip() or None


# --- devices ----------------------------------------------------------------------------
class Device(BaseModel):
    model_config = ConfigDict(extra="forbid")

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
    model_config = ConfigDict(extra="forbid")

    devices: list[Device] = Field(default_factory=list)


class DeviceRegistry:
    """Resolves device tokens to devices; a device only ever acts as itself."""

    def __init__(self, devices: list[Device]) -> None:
        ids = [d.id for d in devices]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate device ids in the devices file")
        self._devices = list(devices)

    @classmethod
    def from_file(cls, path: Path) -> DeviceRegistry:
        if not path.exists():
            return cls([])
        try:
            parsed = DevicesFile.model_validate(yaml.safe_load(path.read_text()) or {})
        except Exception as exc:
            raise ValueError(f"{path}: invalid devices file: {exc}") from exc
        return cls(parsed.devices)

    def authenticate(self, token: str | None) -> Device | None:
        return find_by_secret(((d.digest(), d) for d in self._devices), token)

    def get(self, device_id: str) -> Device | None:
        """The registered device of this id (stream announcements carry no token, only the id)."""
        return next((d for d in self._devices if d.id == device_id), None)

    def __len__(self) -> int:
        return len(self._devices)
