"""The object store port: one congruence suite, run against the home folder and a real S3 server.

The S3 server is moto's (`moto[server]`, tests/helpers/s3_server.py), started on loopback by
the suite: the same HTTP API boto3 speaks to AWS or MinIO. Missing moto skips the S3 half
locally and fails it under CI=true.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from s3_server import new_bucket, s3_credentials, s3_server

from shared.config import Settings
from shared.objectstore import LocalObjectStore, ObjectStore, S3ObjectStore, open_object_store


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    s3_credentials(monkeypatch)
    return s3_endpoint


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects")
    endpoint = request.getfixturevalue("s3_env")
    return S3ObjectStore(new_bucket(endpoint), "tenant/", endpoint_url=endpoint)


def test_put_get_overwrite_delete(store: ObjectStore) -> None:
    store.put("frames/cam-01/f1.jpg", b"\xff\xd8\xffone")
    assert store.get("frames/cam-01/f1.jpg") == b"\xff\xd8\xffone"
    store.put("frames/cam-01/f1.jpg", b"two")
    assert store.get("frames/cam-01/f1.jpg") == b"two" and store.exists("frames/cam-01/f1.jpg")
    store.delete("frames/cam-01/f1.jpg")
    assert not store.exists("frames/cam-01/f1.jpg")
    store.delete("frames/cam-01/f1.jpg")  # deleting what is gone is fine
    with pytest.raises(FileNotFoundError):
        store.get("frames/cam-01/f1.jpg")


def test_put_if_absent_lets_exactly_one_racing_writer_create(store: ObjectStore) -> None:
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def write(i: int) -> None:
        barrier.wait()
        results.append(store.put_if_absent("models/v1/model.onnx", f"writer {i}".encode()))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    assert store.get("models/v1/model.onnx").startswith(b"writer ")
    assert store.put_if_absent("models/v1/model.onnx", b"again") is False


def test_list_by_prefix_and_scopes_keep_to_their_keys(store: ObjectStore) -> None:
    for key in ("frames/cam-02/b.json", "frames/cam-01/a.jpg", "uploads/x/doc.md", "frames-old/z"):
        store.put(key, b"x")
    assert store.list("frames/") == ["frames/cam-01/a.jpg", "frames/cam-02/b.json"]
    assert store.list() == ["frames-old/z", "frames/cam-01/a.jpg", "frames/cam-02/b.json", "uploads/x/doc.md"]
    frames = store.scoped("frames")
    assert frames.list() == ["cam-01/a.jpg", "cam-02/b.json"]
    assert frames.get("cam-01/a.jpg") == b"x"
    frames.put("cam-03/c.jpg", b"y")
    assert store.get("frames/cam-03/c.jpg") == b"y"
    assert not frames.exists("uploads/x/doc.md"), "a scope never sees keys outside it"


def test_a_large_object_round_trips(store: ObjectStore) -> None:
    data = os.urandom(6 << 20)
    store.put("datasets/big.bin", data)
    assert store.get("datasets/big.bin") == data


@pytest.mark.parametrize(
    "key", ["", "/etc/passwd", "../outside", "a/../../b", "a//b", ".hidden", "a/b/", "a\\b", "a b"]
)
def test_bad_keys_are_refused_by_both(store: ObjectStore, key: str) -> None:
    with pytest.raises(ValueError, match="invalid object key"):
        store.put(key, b"x")
    with pytest.raises(ValueError, match="invalid object key"):
        store.get(key)
    with pytest.raises(ValueError, match="invalid object key"):
        store.scoped(key)


def test_the_settings_choose_the_store(s3_env: str, tmp_path: Path) -> None:
    assert isinstance(open_object_store(Settings(home=tmp_path)), LocalObjectStore)
    bucket = new_bucket(s3_env)
    store = open_object_store(Settings(home=tmp_path, object_store_url=f"s3://{bucket}/site-a", s3_endpoint_url=s3_env))
    assert isinstance(store, S3ObjectStore)
    store.put("k", b"v")
    import boto3

    assert boto3.client("s3", endpoint_url=s3_env).get_object(Bucket=bucket, Key="site-a/k")["Body"].read() == b"v"
    for bad in ("http://bucket/x", "s3://", "s3://bucket/../x"):
        with pytest.raises(ValueError):
            open_object_store(Settings(home=tmp_path, object_store_url=bad, s3_endpoint_url=s3_env))
