"""The object store port: bytes under keys. A local folder by default, an S3 bucket when configured.

Keys are '/'-separated and validated by both adapters through `check_key`, so a key can never
escape the store's root or prefix. Writers racing on one key never see each other's partial
writes; `put_if_absent` lets exactly one of them create a key (on S3, a conditional put with
`If-None-Match: *`; locally, a hard link that fails when the name exists). A missing key is a
`FileNotFoundError` from either. `open_object_store` picks the adapter from the settings
(`LOOPLINE_OBJECT_STORE_URL`); tests/shared/test_objectstore.py runs one congruence suite
against both, the S3 one against a real S3 server (moto's) it starts.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from shared.config import Settings

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


class ObjectStore(Protocol):
    def put(self, key: str, data: bytes) -> None: ...

    def put_if_absent(self, key: str, data: bytes) -> bool: ...

    def delete(self, key: str) -> None: ...

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> list[str]: ...

    def scoped(self, prefix: str) -> ObjectStore:
        """The same store seen under `prefix/`: one part of the service keeps to its own keys."""
        ...


def check_key(key: str) -> str:
    if not _KEY.match(key) or ".." in key.split("/"):
        raise ValueError(f"invalid object key {key!r}: use letters, digits, '.', '_', '-' and '/' only")
    return key


class LocalObjectStore:
    """Objects as files under a root folder, written atomically (temp file + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def scoped(self, prefix: str) -> LocalObjectStore:
        return LocalObjectStore(self._path(prefix))

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = self._write_temp(path, data)
        try:
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create `key` with `data` unless it exists; True when this call created it.

        The complete temp file is hard-linked to the final name: the link fails if the name
        exists, and readers never see a partly written object.
        """
        path = self._path(key)
        tmp = self._write_temp(path, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def _write_temp(self, path: Path, data: bytes) -> Path:
        """`data` in a temp file beside `path`, named per call so concurrent writers never share one."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def list(self, prefix: str = "") -> list[str]:
        base = self.root
        return sorted(
            p.relative_to(base).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".") and p.relative_to(base).as_posix().startswith(prefix)
        )


class S3ObjectStore:
    """Objects in an S3 bucket (AWS, MinIO, Ceph, …) under an optional key prefix, through boto3.

    Credentials and region come the way boto3 finds them (environment, profile, instance role);
    `endpoint_url` points at an S3-compatible server.
    """

    def __init__(self, bucket: str, prefix: str = "", *, client: Any = None, endpoint_url: str | None = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("s3", endpoint_url=endpoint_url)
        self.client = client
        self.bucket = bucket
        self.prefix = prefix

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def scoped(self, prefix: str) -> S3ObjectStore:
        return S3ObjectStore(self.bucket, self._key(prefix) + "/", client=self.client)

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
        except self.client.exceptions.ClientError as exc:
            # 412: the key exists; 409: a concurrent conditional write to it is in flight (S3 says: retry,
            # and that one will find the key) — either way, this call did not create it.
            if _status(exc) in (409, 412):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def get(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            raise FileNotFoundError(f"no object {key!r} in s3://{self.bucket}/{self.prefix}") from None

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.ClientError as exc:
            if _status(exc) == 404:
                return False
            raise
        return True

    def list(self, prefix: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
        return sorted(o["Key"][len(self.prefix) :] for page in pages for o in page.get("Contents", []))


def _status(exc: Any) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def open_object_store(settings: Settings) -> ObjectStore:
    """The store the settings name: `s3://bucket/prefix` (LOOPLINE_OBJECT_STORE_URL), else the home folder."""
    url = settings.object_store_url
    if not url:
        return LocalObjectStore(settings.home)
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"LOOPLINE_OBJECT_STORE_URL={url!r}: use s3://BUCKET or s3://BUCKET/PREFIX")
    prefix = parts.path.strip("/")
    if prefix:
        check_key(prefix)
    try:
        return S3ObjectStore(parts.netloc, prefix + "/" if prefix else "", endpoint_url=settings.s3_endpoint_url)
    except ImportError as exc:
        raise ValueError(f"LOOPLINE_OBJECT_STORE_URL={url!r} needs boto3: pip install 'loopline[s3]'") from exc
