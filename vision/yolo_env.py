"""Make ultralytics safe to run offline, before it is imported.

Found on these machines with ultralytics 8.4: only `*.yaml` model names or local weights
(`*.pt` names download even with YOLO_OFFLINE=1); settings sync and integrations must be
off in a project-owned config dir; its dataset check reaches for Arial.ttf unless a local
one is in place; importing it sets OMP_NUM_THREADS=1 when unset (training then uses one
core). Call `prepare_ultralytics(home)` before the first `import ultralytics`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)


def _find_font() -> Path | None:
    candidates = [
        Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
        Path("/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf"),
    ]
    try:
        import matplotlib

        candidates.append(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf")
    except ImportError:
        pass
    return next((c for c in candidates if c.exists()), None)


def prepare_ultralytics(home: Path, threads: int | None = None) -> Path:
    """Set the environment for offline, multi-core ultralytics; returns its config dir."""
    cfg = (Path(home) / "ultralytics").resolve()
    (cfg / "Ultralytics").mkdir(parents=True, exist_ok=True)
    os.environ["YOLO_CONFIG_DIR"] = str(cfg)
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "0"
    os.environ["YOLO_VERBOSE"] = os.environ.get("YOLO_VERBOSE", "False")
    os.environ.setdefault("MPLCONFIGDIR", str(cfg / "matplotlib"))
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ["OMP_NUM_THREADS"] = str(threads or os.cpu_count() or 1)
    settings = cfg / "Ultralytics" / "settings.json"
    wanted = {
        "sync": False,
        "hub": False,
        "clearml": False,
        "comet": False,
        "dvc": False,
        "mlflow": False,
        "neptune": False,
        "raytune": False,
        "tensorboard": False,
        "wandb": False,
    }
    current = {}
    if settings.exists():
        try:
            current = json.loads(settings.read_text())
        except ValueError:
            current = {}
    if any(current.get(k) != v for k, v in wanted.items()):
        current.update(wanted)
        settings.write_text(json.dumps(current, indent=2))
    font = cfg / "Ultralytics" / "Arial.ttf"
    if not font.exists():
        src = _find_font()
        if src is None:
            log.warning("no local TTF font found; ultralytics may try to download Arial.ttf")
        else:
            shutil.copyfile(src, font)
    return cfg
