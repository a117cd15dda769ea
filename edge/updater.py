"""Model updates on the device: poll, download, verify, test-load, swap atomically, roll back.

`GET {central}/v1/devices/model?fleet=F` (Bearer token) answers the fleet's model:
`{"version", "sha256", "size", "precision", "url", "names", "imgsz", "reference", "sampling"}`
with `url` relative to central (an absolute URL is used as is). `reference` (the quality
histograms of the training frames, for the input-drift rule) is kept with the model;
`sampling` (`{"boost", "reason"}`: central asks for more frames while the fleet drifts) is
remembered from every answer, also when the model is up to date. A new version is downloaded to a temp file in the
models folder, checked (size, sha256), test-loaded by the injected `loader(path)` and only
then made current by replacing the `current` pointer file (os.replace); the old pointer
becomes `previous`. A version that failed to load, failed at run time or whose download did
not match its announced sha256 is remembered in `rejected.json` and neither downloaded nor
installed again (a republished fix has a new sha256); cut or oversized transfers are retried. Everything
is on disk, so a restarted device resumes with the right model. It does not run models
itself: `loader` and the agent's detector factory do.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from enum import Enum
from http.client import HTTPException, IncompleteRead
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MODEL_PATH = "/v1/devices/model"
CURRENT, PREVIOUS, REJECTED = "current", "previous", "rejected.json"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ModelInfo:
    """An installed model: the manifest fields plus its file name in the models folder."""

    version: str
    sha256: str
    size: int
    file: str
    precision: str | None = None
    names: Any = None
    imgsz: Any = None
    installed_at: float = 0.0
    reference: Any = None  # {feature: {"edges", "counts"}} over the training frames, or None

    def key(self) -> str:
        return f"{self.version}:{self.sha256}"


class UpdateStatus(str, Enum):  # noqa: UP042 - StrEnum would change what str() and f-strings print
    UP_TO_DATE = "up_to_date"
    UPDATED = "updated"
    REJECTED = "rejected"  # this version failed a check; the current model is kept
    SKIPPED = "skipped"  # a version rejected before (sha256 mismatch, load or run-time failure)
    NO_MODEL = "no_model"  # central has no model for this fleet (404)
    UNAVAILABLE = "unavailable"  # central unreachable or erroring; try again later


@dataclass(frozen=True)
class UpdateResult:
    status: UpdateStatus
    version: str | None = None
    detail: str = ""


class ModelUpdater:
    """Keeps `models_dir` holding the fleet's model; `loader(path)` must raise on a bad model."""

    def __init__(
        self,
        models_dir: Path,
        *,
        central: str,
        token: str,
        fleet: str,
        loader: Callable[[Path], object],
        opener: urllib.request.OpenerDirector | None = None,
        clock: Callable[[], float] = time.time,
        timeout: float = 30.0,
    ) -> None:
        self.dir = Path(models_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.central = central.rstrip("/")
        self.fleet = fleet
        self._token = token
        self._loader = loader
        self._opener = opener or urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._clock = clock
        self.timeout = timeout
        self._lock = threading.Lock()
        self._sampling: dict[str, Any] = {"boost": 1.0, "reason": None}
        self._current = self._read_pointer(CURRENT)
        self._previous = self._read_pointer(PREVIOUS)
        if self._current is None and self._previous is not None:
            log.warning("models: current model unusable; resuming with previous %s", self._previous.version)
            self._write_pointer(CURRENT, self._previous)
            self._current, self._previous = self._previous, None
            self._remove_pointer(PREVIOUS)
        self._clean(temps=True)

    # --- state -----------------------------------------------------------------------
    def current(self) -> ModelInfo | None:
        return self._current

    def previous(self) -> ModelInfo | None:
        return self._previous

    def path(self, info: ModelInfo) -> Path:
        return self.dir / info.file

    def sampling(self) -> dict[str, Any]:
        """Central's last word on sampling: {"boost", "reason"}; boost 1.0 before any answer,
        the last one kept while central is unreachable."""
        return dict(self._sampling)

    def sampling_boost(self) -> float:
        return float(self._sampling["boost"])

    def rejected(self) -> dict[str, str]:
        """{version:sha256 -> why} of versions that will not be installed again."""
        try:
            return json.loads((self.dir / REJECTED).read_text())
        except (FileNotFoundError, ValueError):
            return {}

    # --- updating --------------------------------------------------------------------
    def check(self) -> UpdateResult:
        """Poll central once and install its model if it is new and passes every check."""
        try:
            manifest = self._get_manifest()
        except _NoModel as exc:
            return UpdateResult(UpdateStatus.NO_MODEL, detail=str(exc))
        except _Unavailable as exc:
            log.warning("model update check failed: %s; keeping %s", exc, self._describe_current())
            return UpdateResult(UpdateStatus.UNAVAILABLE, detail=str(exc))
        self._follow_sampling(manifest)
        problem = _manifest_problem(manifest)
        if problem:
            log.error("model manifest from central is invalid (%s); keeping %s", problem, self._describe_current())
            return UpdateResult(
                UpdateStatus.REJECTED, manifest.get("version") if isinstance(manifest, dict) else None, problem
            )
        version, sha = str(manifest["version"]), manifest["sha256"].lower()
        cur = self._current
        if cur is not None and (cur.version, cur.sha256) == (version, sha):
            self._follow_reference(cur, _reference_of(manifest))
            return UpdateResult(UpdateStatus.UP_TO_DATE, version)
        if f"{version}:{sha}" in self.rejected():
            return UpdateResult(UpdateStatus.SKIPPED, version, self.rejected()[f"{version}:{sha}"])
        prev = self._previous
        if prev is not None and (prev.version, prev.sha256) == (version, sha):
            return self._swap_back(prev.key())  # central went back to the model we still have: no download
        return self._install(manifest, version, sha)

    def _follow_sampling(self, manifest: Any) -> None:
        """Remember central's sampling wish; an answer without one (an older central) means 1.0."""
        raw = manifest.get("sampling") if isinstance(manifest, dict) else None
        boost, reason = 1.0, None
        if isinstance(raw, dict):
            value = raw.get("boost", 1.0)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < float("inf"):
                boost = float(value)
            else:
                log.warning("central's sampling boost %r is not a number >= 0; using 1.0", value)
            reason = raw.get("reason") if isinstance(raw.get("reason"), str) else None
        if boost != self._sampling["boost"]:
            log.info("central asks for %g× frame sampling now (%s)", boost, reason or "no reason given")
        self._sampling = {"boost": boost, "reason": reason}

    def _follow_reference(self, cur: ModelInfo, reference: Any) -> None:
        """The model is the same but its reference is new (exported before references existed, then
        backfilled): keep the new one with the model, without downloading anything."""
        if reference is None or reference == cur.reference:
            return
        with self._lock:
            if self._current is not cur:  # changed meanwhile; the next poll decides
                return
            info = replace(cur, reference=reference)
            self._write_pointer(CURRENT, info)
            self._current = info
        log.info("model %s: input reference updated from central", cur.version)

    def _swap_back(self, key: str) -> UpdateResult:
        with self._lock:
            cur, prev = self._current, self._previous
            if prev is None or prev.key() != key:  # a rollback got there first; the next poll decides
                return UpdateResult(UpdateStatus.SKIPPED, key.rsplit(":", 1)[0], "models changed during the check")
            if cur is not None:
                self._write_pointer(PREVIOUS, cur)
            self._write_pointer(CURRENT, prev)
            self._current, self._previous = prev, cur
        log.info("model switched back to %s (still on disk) as central asks", prev.version)
        return UpdateResult(UpdateStatus.UPDATED, prev.version, "switched back to the previous model")

    def _install(self, manifest: dict[str, Any], version: str, sha: str) -> UpdateResult:
        part = self.dir / f".download-{uuid.uuid4().hex}.part"
        try:
            self._download(_resolve(self.central, manifest["url"]), part, int(manifest["size"]), sha)
        except _Unavailable as exc:
            part.unlink(missing_ok=True)
            log.warning(
                "model %s: download failed (%s); keeping %s, will retry", version, exc, self._describe_current()
            )
            return UpdateResult(UpdateStatus.UNAVAILABLE, version, str(exc))
        except _BadDownload as exc:
            part.unlink(missing_ok=True)
            if isinstance(exc, _WrongContent):  # the same bytes come again on every poll: not worth a retry
                self._reject(version, sha, str(exc))
            log.error("model %s rejected: %s; keeping %s", version, exc, self._describe_current())
            return UpdateResult(UpdateStatus.REJECTED, version, str(exc))
        try:
            self._loader(part)
        except Exception as exc:
            part.unlink(missing_ok=True)
            detail = f"test load failed: {type(exc).__name__}: {exc}"
            self._reject(version, sha, detail)
            log.error("model %s rejected: %s; keeping %s", version, detail, self._describe_current())
            return UpdateResult(UpdateStatus.REJECTED, version, detail)
        info = ModelInfo(
            version=version,
            sha256=sha,
            size=int(manifest["size"]),
            file=f"model-{re.sub(r'[^A-Za-z0-9._-]', '_', version)[:64]}-{sha[:12]}.onnx",
            precision=manifest.get("precision"),
            names=manifest.get("names"),
            imgsz=manifest.get("imgsz"),
            installed_at=self._clock(),
            reference=_reference_of(manifest),
        )
        os.replace(part, self.dir / info.file)
        _fsync_dir(self.dir)
        with self._lock:
            if info.key() in self.rejected():  # rejected meanwhile by report_failure()
                return UpdateResult(UpdateStatus.SKIPPED, version, "rejected during install")
            old = self._current
            if old is not None:
                self._write_pointer(PREVIOUS, old)
            self._write_pointer(CURRENT, info)  # the switch: one atomic rename
            self._current, self._previous = info, old
            self._clean()
        log.info("model updated: %s -> %s (%s)", old.version if old else "none", version, info.file)
        return UpdateResult(UpdateStatus.UPDATED, version)

    def rollback(self, reason: str = "rolled back by hand") -> ModelInfo | None:
        """Make the previous model current again and never reinstall the abandoned one.

        Returns the model now current; with no previous model nothing changes.
        """
        with self._lock:
            bad, prev = self._current, self._previous
            if prev is None:
                log.error(
                    "cannot roll back %s (%s): no previous model on this device", self._describe_current(), reason
                )
                return bad
            if bad is not None:
                self._reject(bad.version, bad.sha256, reason)
            self._write_pointer(CURRENT, prev)
            self._remove_pointer(PREVIOUS)
            self._current, self._previous = prev, None
            self._clean()
        log.warning("model rolled back: %s -> %s (%s)", bad.version if bad else "none", prev.version, reason)
        return prev

    def report_failure(self, error: BaseException | str, *, version: str | None = None) -> ModelInfo | None:
        """The current model failed at run time: roll back to the previous one.

        `version` is the model that failed; if another one is current by now, nothing changes.
        """
        detail = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        cur = self._current
        if version is not None and (cur is None or cur.version != version):
            log.info(
                "failure of model %s reported, but %s is current now; nothing to roll back",
                version,
                self._describe_current(),
            )
            return cur
        return self.rollback(f"failed at run time: {detail}")

    # --- HTTP ------------------------------------------------------------------------
    def _request(self, url: str) -> urllib.request.Request:
        return urllib.request.Request(url, headers={"Authorization": f"Bearer {self._token}"})

    def _get_manifest(self) -> Any:
        url = f"{self.central}{MODEL_PATH}?{urllib.parse.urlencode({'fleet': self.fleet})}"
        try:
            with self._opener.open(self._request(url), timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise _NoModel(f"central has no model for fleet '{self.fleet}'") from exc
            raise _Unavailable(f"GET {url}: HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError, HTTPException) as exc:
            raise _Unavailable(f"GET {url}: {getattr(exc, 'reason', exc)}") from exc
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise _Unavailable(f"GET {url}: answer is not JSON ({raw[:80]!r})") from exc

    def _download(self, url: str, dst: Path, size: int, sha: str) -> None:
        h, got = hashlib.sha256(), 0
        try:
            with self._opener.open(self._request(url), timeout=self.timeout) as resp, open(dst, "wb") as out:
                while block := resp.read(1 << 16):
                    got += len(block)
                    if got > size:
                        raise _BadDownload(f"download is larger than the announced {size} bytes")
                    h.update(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
        except urllib.error.HTTPError as exc:
            raise _Unavailable(f"GET {url}: HTTP {exc.code}") from exc
        except IncompleteRead as exc:
            raise _BadDownload(f"truncated download: connection closed after {got} of {size} bytes") from exc
        except (urllib.error.URLError, OSError, HTTPException) as exc:
            raise _Unavailable(f"GET {url}: {getattr(exc, 'reason', exc)} after {got} of {size} bytes") from exc
        if got != size:
            raise _BadDownload(f"truncated download: {got} of {size} bytes")
        if h.hexdigest() != sha:
            raise _WrongContent(f"sha256 mismatch: got {h.hexdigest()}, manifest says {sha}")

    # --- disk ------------------------------------------------------------------------
    def _read_pointer(self, name: str) -> ModelInfo | None:
        path = self.dir / name
        try:
            info = ModelInfo(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            log.error("models: pointer %s is unreadable (%s); ignored", path, exc)
            return None
        if not (self.dir / info.file).is_file():
            log.error("models: %s points at missing file %s; ignored", name, info.file)
            return None
        return info

    def _write_pointer(self, name: str, info: ModelInfo) -> None:
        tmp = self.dir / f".{name}.tmp"
        with open(tmp, "w") as fh:
            json.dump(asdict(info), fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.dir / name)
        _fsync_dir(self.dir)

    def _remove_pointer(self, name: str) -> None:
        (self.dir / name).unlink(missing_ok=True)
        _fsync_dir(self.dir)

    def _reject(self, version: str, sha: str, reason: str) -> None:
        rejected = self.rejected()
        rejected[f"{version}:{sha}"] = reason[:500]
        tmp = self.dir / f".{REJECTED}.tmp"
        tmp.write_text(json.dumps(rejected, indent=1))
        os.replace(tmp, self.dir / REJECTED)

    def _clean(self, *, temps: bool = False) -> None:
        """Delete model files no pointer refers to; with temps, also leftovers of interrupted
        work (only at open: later, a download may be in flight in another thread)."""
        keep = {i.file for i in (self._current, self._previous) if i is not None}
        for entry in self.dir.iterdir():
            stale = entry.suffix == ".onnx" and entry.name not in keep
            if entry.is_file() and (stale or (temps and entry.name.startswith("."))):
                entry.unlink(missing_ok=True)

    def _describe_current(self) -> str:
        return f"model {self._current.version}" if self._current else "no model"


class _NoModel(Exception):
    pass


class _Unavailable(Exception):
    pass


class _BadDownload(Exception):
    pass


class _WrongContent(_BadDownload):
    """Every byte arrived, but not the announced ones."""


def _manifest_problem(m: Any) -> str | None:
    if not isinstance(m, dict):
        return f"expected a JSON object, got {type(m).__name__}"
    missing = [k for k in ("version", "sha256", "size", "url") if k not in m]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    if not isinstance(m["sha256"], str) or not _SHA256.match(m["sha256"].lower()):
        return f"sha256 is not 64 hex digits: {m['sha256']!r}"
    if not isinstance(m["size"], int) or isinstance(m["size"], bool) or m["size"] <= 0:
        return f"size must be a positive integer, got {m['size']!r}"
    if not isinstance(m["url"], str) or not m["url"]:
        return f"url must be a non-empty string, got {m['url']!r}"
    return None


def _reference_of(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest's input reference when it is an object (the selection rule checks its content)."""
    reference = manifest.get("reference")
    return reference if isinstance(reference, dict) and reference else None


def _resolve(central: str, url: str) -> str:
    """`url` relative to central (keeping central's own path prefix), or absolute as is."""
    if urllib.parse.urlsplit(url).scheme:
        return url
    return f"{central}/{url.lstrip('/')}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
