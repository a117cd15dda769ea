"""Uploaded originals go to the deployment's object store (a bucket when scaled out), and leave with their document."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from s3_server import new_bucket, s3_credentials, s3_server

import rag.api
from shared.auth import KeyRegistry, UserEntry
from shared.config import Settings
from shared.server import create_app

ADMIN = {"X-API-Key": "test-key-root-0123456789"}
PLAN = b"# Tundra plan\n\nThe Tundra support plan covers robots stationed above the Arctic Circle.\n"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with s3_server() as endpoint:
        yield endpoint


def test_an_upload_keeps_its_original_in_the_bucket_until_its_document_is_deleted(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    s3_credentials(monkeypatch)
    bucket = new_bucket(s3_endpoint)
    settings = Settings(home=tmp_path / "home", object_store_url=f"s3://{bucket}/acme", s3_endpoint_url=s3_endpoint)
    keys = KeyRegistry([UserEntry(name="root", key=ADMIN["X-API-Key"], groups=[], admin=True)])
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)

    def keys_in_bucket() -> list[str]:
        return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="acme/uploads/").get("Contents", [])]

    with TestClient(create_app(settings, plugins=[rag.api.plugin], keys=keys)) as client:
        r = client.post(
            "/v1/documents", files={"file": ("-tundra plan.md", PLAN, "text/markdown")}, data={}, headers=ADMIN
        )
        assert r.status_code == 201, r.text
        doc = r.json()["document"]
        [key] = keys_in_bucket()
        assert key.startswith("acme/uploads/") and key.endswith("tundra_plan.md")
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == PLAN

        assert client.delete(f"/v1/documents/{doc['id']}", headers=ADMIN).status_code in (200, 204)
        assert keys_in_bucket() == []
