"""A real `mlflow server` for the tests: PostgreSQL as its backend store, S3 (moto) for artifacts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from live_server import free_port


@contextmanager
def mlflow_server(backend_uri: str, artifacts: str, s3_endpoint: str, log: Path) -> Iterator[str]:
    """`mlflow server` on a free loopback port, proxying artifacts to `artifacts` (s3://…); yields its URL."""
    exe = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    port = free_port()
    env = os.environ | {
        "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "loopline-test",
        "AWS_SECRET_ACCESS_KEY": "loopline-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    cmd = [exe, "server", "--backend-store-uri", backend_uri, "--artifacts-destination", artifacts]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
