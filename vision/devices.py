"""Device identities live in `shared.auth` (the composition root authenticates devices)."""

from shared.auth import Device, DeviceRegistry, DevicesFile

__all__ = ["Device", "DeviceRegistry", "DevicesFile"]
