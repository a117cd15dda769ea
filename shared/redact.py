"""Secrets out of what is shown: server URLs and connection strings as logs, errors and reports may print them.

`nats://alice:s3cret@nats:4222` is shown as `nats://alice:***@nats:4222`, a NATS token URL
(`nats://TOKEN@nats:4222`) as `nats://***@nats:4222`, a libpq `password=...` as `password=***`.
Where the text cannot be parsed, more is masked rather than less. What this module does not do:
keep secrets out of the values used to connect (only what is displayed is changed).
"""

from __future__ import annotations

import re

MASK = "***"
TOKEN_SCHEMES = {"nats", "tls", "ws", "wss"}  # a user without a password in these URLs is a token
_KEYWORD = re.compile(r"(?i)\b(\w*password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)")
_WORD = re.compile(r"\S+")
_NEXT_URL = re.compile(r"(,\s*)(?=[A-Za-z][\w+.-]*://)")  # a comma before another URL: a server list


def masked_url(url: str) -> str:
    """`url` (or a comma-separated list of them) with the password in each replaced by `***`."""
    parts = _NEXT_URL.split(url)  # [url, separator, url, ...]: a comma inside a password stays in its URL
    return _KEYWORD.sub(rf"\1{MASK}", "".join(p if i % 2 else _masked_one(p) for i, p in enumerate(parts)))


def masked_text(text: str) -> str:
    """`text` with the passwords of the URLs in it and of `password=...` settings replaced by `***`."""
    text = _KEYWORD.sub(rf"\1{MASK}", text)
    return _WORD.sub(lambda m: masked_url(m.group()) if "://" in m.group() else m.group(), text)


def _masked_one(url: str) -> str:
    head, sep, rest = url.partition("://")
    if not sep:  # `user:pass@host` without a scheme
        return f"{MASK}@{url.rpartition('@')[2]}" if "@" in url else url
    if "@" not in rest:
        return url
    userinfo, _, host = rest.rpartition("@")  # the last '@': a password may hold an unencoded one
    user, colon, _ = userinfo.partition(":")
    if colon:
        return f"{head}://{user}:{MASK}@{host}"
    scheme = head.rsplit(None, 1)[-1].lstrip("(\"'[").lower() if head.strip() else ""
    return f"{head}://{MASK}@{host}" if scheme in TOKEN_SCHEMES else url
