"""`loopline edge`: run or benchmark an exported detector on a device.

Needs only the edge extra (numpy, onnxruntime, OpenCV): imports of those happen at module load
so a missing extra is reported by `loopline` as such. Results go to stdout (one JSON object per
line with --json), progress and skipped-file notes to stderr. The command line only parses,
wires and prints; detection, sources, timing, frame selection and the device loop (`agent`)
live in their own modules.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np

from edge.agent import agent
from edge.bench import measure
from edge.detector import Detector, ModelError
from edge.selection import default_selector
from edge.sources import FrameSource, SourceError, open_source
from edge.types import Detection, FrameResult

log = logging.getLogger(__name__)

Decide = Callable[[np.ndarray, list[Detection], float], tuple[bool, str | None]]

MODEL_HELP = "Exported ONNX detector (ultralytics export; class names and input size are read from it)."
SOURCE_HELP = "Image folder, image file, video file, camera index (0) or rtsp:// / http:// stream URL."


def _load_detector(model: Path, conf: float, iou: float, threads: int | None) -> Detector:
    try:
        return Detector(model, conf=conf, iou=iou, threads=threads)
    except ModelError as exc:
        raise click.ClickException(str(exc)) from exc


def _open(source: str) -> FrameSource:
    try:
        return open_source(source)
    except SourceError as exc:
        raise click.ClickException(str(exc)) from exc


def _frame_selector(conf: float, model: Path | None = None) -> Decide:
    """The default labeling selector (hesitant detections, drifted input, a small random share,
    rate-limited); the input reference is the `reference.json` export wrote beside the model, if any."""
    reference = None
    if model is not None and (model.parent / "reference.json").is_file():
        try:
            reference = json.loads((model.parent / "reference.json").read_text())
        except (OSError, ValueError) as exc:
            log.warning("input reference beside %s unreadable (%s): frames are not selected for drift", model, exc)
    selector = default_selector(conf, reference=lambda: reference)
    return lambda frame, detections, now: selector.decide(frame, detections, now=now)


def _human(result: FrameResult) -> str:
    found = ", ".join(f"{d.name} {d.score:.2f}" for d in result.detections) or "nothing"
    chosen = f"  [selected: {result.reason}]" if result.selected else ""
    return f"{result.frame}: {found} ({result.latency_ms:.1f} ms){chosen}"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def edge() -> None:
    """Run exported detectors on devices: one-off runs, benchmarks and the device agent.

    Inference is ONNX Runtime on the CPU; torch and ultralytics are not needed here.
    """


edge.add_command(agent)


@edge.command()
@click.option("--model", required=True, type=click.Path(path_type=Path), help=MODEL_HELP)
@click.option("--source", required=True, help=SOURCE_HELP)
@click.option("--conf", default=0.25, show_default=True, type=click.FloatRange(0, 1), help="Minimum score kept.")
@click.option("--iou", default=0.7, show_default=True, type=click.FloatRange(0, 1), help="NMS IoU threshold.")
@click.option(
    "--threads", type=click.IntRange(min=1), default=None, help="ONNX Runtime intra-op threads (default: all cores)."
)
@click.option(
    "--max-frames", type=click.IntRange(min=1), default=None, help="Stop after this many frames (cameras, streams)."
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='One JSON object per frame: {"frame", "detections", "latency_ms", "selected", "reason"}.',
)
def run(
    model: Path, source: str, conf: float, iou: float, threads: int | None, max_frames: int | None, as_json: bool
) -> None:
    """Detect objects in every frame of SOURCE and print the results.

    Boxes are [x1, y1, x2, y2] in source-image pixels; latency_ms covers preprocessing, the
    model and postprocessing. Unreadable images are reported on stderr and skipped.
    """
    detector = _load_detector(model, conf, iou, threads)
    decide = _frame_selector(conf, model)
    frames = _open(source)
    count, started = 0, time.perf_counter()
    try:
        for frame_id, image in frames:
            detections, timings = detector.detect_timed(image)
            selected, reason = decide(image, detections, time.time())
            result = FrameResult(frame_id, detections, timings.total_ms, selected=selected, reason=reason)
            click.echo(json.dumps(result.to_json()) if as_json else _human(result))
            count += 1
            if max_frames and count >= max_frames:
                break
    finally:
        frames.close()
    click.echo(f"{count} frames in {time.perf_counter() - started:.1f} s, {frames.skipped} skipped", err=True)
    if count == 0:
        raise click.ClickException(f"no readable frames in {source}")


@edge.command()
@click.option("--model", required=True, type=click.Path(path_type=Path), help=MODEL_HELP)
@click.option("--source", required=True, help="Folder of images (or a video) to time on; decoded before timing.")
@click.option(
    "--conf",
    default=0.25,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Minimum score kept (affects NMS time).",
)
@click.option(
    "--threads", type=click.IntRange(min=1), default=None, help="ONNX Runtime intra-op threads (default: all cores)."
)
@click.option("--warmup", default=5, show_default=True, type=click.IntRange(min=0), help="Untimed frames first.")
@click.option("--repeat", default=1, show_default=True, type=click.IntRange(min=1), help="Passes over the frames.")
@click.option(
    "--max-frames", default=500, show_default=True, type=click.IntRange(min=1), help="Frames loaded from SOURCE."
)
@click.option(
    "--json", "as_json", is_flag=True, help='Print {"frames", "median_ms", "p95_ms", "fps", "run_median_ms"}.'
)
def bench(
    model: Path, source: str, conf: float, threads: int | None, warmup: int, repeat: int, max_frames: int, as_json: bool
) -> None:
    """Time the detector per frame: end to end (pre + model + post) and bare session.run.

    fps is timed frames divided by their summed end-to-end latency (one stream, no batching).
    """
    detector = _load_detector(model, conf, 0.7, threads)
    frames = _open(source)
    try:
        images = [image for _, (_, image) in zip(range(max_frames), frames)]
    finally:
        frames.close()
    if not images:
        raise click.ClickException(f"no readable frames in {source}")
    click.echo(f"loaded {len(images)} frames; {warmup} warm-up, {len(images) * repeat} timed", err=True)
    result = measure(detector, images, warmup=warmup, repeat=repeat)
    if as_json:
        click.echo(json.dumps(result.to_json()))
    else:
        click.echo(
            f"{result.frames} frames: median {result.median_ms:.2f} ms, p95 {result.p95_ms:.2f} ms, "
            f"{result.fps:.1f} fps; session.run median {result.run_median_ms:.2f} ms"
        )


if __name__ == "__main__":  # pragma: no cover
    edge()
