"""What logs, errors and benchmark reports show of server URLs and connection strings: no password."""

from __future__ import annotations

import pytest

from shared.redact import masked_text, masked_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://alice:s3cret@nats:4222", "nats://alice:***@nats:4222"),
        ("nats://a:p1@h1:4222,nats://b:p2@h2:4222", "nats://a:***@h1:4222,nats://b:***@h2:4222"),
        ("nats://a:p1@h1:4222, nats://h2:4222", "nats://a:***@h1:4222, nats://h2:4222"),
        ("nats://a:pa,ss@h:4222", "nats://a:***@h:4222"),  # a comma inside the password
        ("nats://a:p@ss@h:4222", "nats://a:***@h:4222"),  # an unencoded '@' inside the password
        ("nats://s3cret-token@nats:4222", "nats://***@nats:4222"),  # NATS token authentication
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("postgresql://u@db/loopline", "postgresql://u@db/loopline"),  # a user alone is no secret there
        ("postgresql://u:pw@db/loopline?sslmode=require", "postgresql://u:***@db/loopline?sslmode=require"),
        (
            "postgresql://db/loopline?password=pw&sslmode=require",
            "postgresql://db/loopline?password=***&sslmode=require",
        ),
    ],
)
def test_a_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert masked_url(url) == shown


def test_a_benchmark_command_line_is_reported_without_passwords() -> None:
    command = (
        "python -m evaluation.benchmarks.freshness corpus --dsn host=db port=5432 password='a b' user=u "
        "--nats-url nats://svc:n4ts-pw@nats:4222 --json"
    )
    assert masked_text(command) == (
        "python -m evaluation.benchmarks.freshness corpus --dsn host=db port=5432 password=*** user=u "
        "--nats-url nats://svc:***@nats:4222 --json"
    )
    assert (
        masked_text("--dsn postgresql://u:pg-pw@db/x sslpassword=k3y")
        == "--dsn postgresql://u:***@db/x sslpassword=***"
    )
