"""Frame sources: image folders, single images, video files, cameras and network streams.

Each yields (frame_id, BGR uint8 frame). A bad image in a folder is logged and skipped so one
corrupt file cannot stop a device; a source that cannot be opened at all fails at once with
the reason. Does not resize, decode models or reconnect dropped streams.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

log = logging.getLogger(__name__)

Frame = tuple[str, np.ndarray]
IMAGE_SUFFIXES = frozenset({".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


class SourceError(RuntimeError):
    """A source that cannot be opened; the message says which and why."""


class FrameSource(Protocol):
    """Iterable of frames that holds a device or file open until closed."""

    skipped: int  # unreadable images passed over so far

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...


def read_image(path: Path) -> np.ndarray | None:
    """BGR image, or None (with a warning) when the file is not a readable image."""
    try:
        data = np.fromfile(path, dtype=np.uint8)  # imdecode also copes with non-ASCII paths
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except (OSError, cv2.error) as exc:
        log.warning("skipped %s: cannot read it (%s)", path, exc)
        return None
    if image is None:
        log.warning("skipped %s: not a readable image (empty, truncated or unsupported format)", path)
    return image


class ImageFolder:
    """The images directly inside a folder, in file-name order."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise SourceError(f"{self.folder} is not a folder")
        self.skipped = 0

    def files(self) -> list[Path]:
        entries = sorted(p for p in self.folder.iterdir() if p.is_file())
        images = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
        if len(images) < len(entries):
            log.info("%s: ignoring %d files without an image suffix", self.folder, len(entries) - len(images))
        return images

    def __iter__(self) -> Iterator[Frame]:
        for path in self.files():
            image = read_image(path)
            if image is None:
                self.skipped += 1
                continue
            yield str(path), image

    def close(self) -> None:
        """Nothing is held open between frames."""


class ImageFile:
    """A single image as a one-frame source."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.skipped = 0

    def __iter__(self) -> Iterator[Frame]:
        image = read_image(self.path)
        if image is None:
            self.skipped += 1
            return
        yield str(self.path), image

    def close(self) -> None:
        """Nothing is held open."""


class Capture:
    """A video file, camera or stream read through cv2.VideoCapture; ids are '<label>#<n>'."""

    def __init__(self, target: str | int, label: str) -> None:
        self.label = label
        self.skipped = 0
        self._cap = cv2.VideoCapture(target)
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError(f"cannot open {label} (no such device, unsupported codec or unreachable stream)")

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        while True:
            ok, frame = self._cap.read()
            if not ok or frame is None:
                log.info("%s ended after %d frames", self.label, index)
                return
            yield f"{self.label}#{index:06d}", frame
            index += 1

    def close(self) -> None:
        self._cap.release()


def _redact(url: str) -> str:
    """Drop credentials from a stream URL before it appears in output or logs."""
    scheme, _, rest = url.partition("://")
    host = rest.rsplit("@", 1)[-1] if "@" in rest.split("/", 1)[0] else rest
    return f"{scheme}://{host}"


def open_source(spec: str) -> FrameSource:
    """A camera index ('0'), a stream URL, an image folder, an image file or a video file."""
    spec = spec.strip()
    if spec.isdigit():
        return Capture(int(spec), f"camera{spec}")
    if spec.lower().startswith(STREAM_SCHEMES):
        return Capture(spec, _redact(spec))
    path = Path(spec).expanduser()
    if path.is_dir():
        return ImageFolder(path)
    if not path.exists():
        raise SourceError(f"source {spec!r} not found (expected a folder, image, video, camera index or URL)")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageFile(path)
    return Capture(str(path), str(path))
