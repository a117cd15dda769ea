"""A real S3 server on loopback for the tests: moto's, speaking the HTTP API boto3 speaks to AWS or MinIO."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from live_server import free_port


@contextmanager
def s3_server() -> Iterator[str]:
    """Yields the endpoint URL; skips without moto[server] (fails under CI=true)."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires moto[server] for the S3 tests: {exc}", pytrace=False)
        pytest.skip(f"moto[server] is not installed: {exc}")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials where boto3 reads them (moto accepts any)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "loopline-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "loopline-test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def new_bucket(endpoint: str) -> str:
    import boto3

    name = f"loopline-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)
    return name
