"""The edge package must install and run without the training stack.

A fresh interpreter, with the heavy packages made unimportable, imports every module of
`edge` and renders the CLI's help; any attempt to import them, even one caught and ignored,
fails the test, and so does finding them loaded afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FORBIDDEN = ("torch", "torchvision", "ultralytics", "llama_index", "mlflow", "ragas")
REPO = Path(__file__).resolve().parents[2]

PROBE = """
import importlib, importlib.abc, json, pkgutil, sys

FORBIDDEN = set(sys.argv[1].split(","))
attempts = []

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FORBIDDEN:
            attempts.append(name)
            raise ModuleNotFoundError(f"blocked: {name}", name=name)
        return None

sys.meta_path.insert(0, Block())
import edge
errors = []
modules = ["edge"] + [m.name for m in pkgutil.walk_packages(edge.__path__, "edge.", onerror=errors.append)]
for name in modules:
    importlib.import_module(name)
from click.testing import CliRunner
from edge.cli import edge as group
helps = [CliRunner().invoke(group, [*cmd, "--help"]).exit_code for cmd in ([], ["run"], ["bench"])]
loaded = sorted(n for n in sys.modules if n.split(".")[0] in FORBIDDEN)
print(json.dumps({"modules": modules, "attempts": attempts, "loaded": loaded, "errors": errors, "helps": helps}))
"""


def test_every_edge_module_imports_without_the_training_stack() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(FORBIDDEN)],
        cwd=REPO,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"edge.cli", "edge.detector", "edge.preprocess", "edge.postprocess", "edge.sources", "edge.bench"} <= set(
        report["modules"]
    ), report["modules"]
    assert report["attempts"] == [], f"edge modules tried to import {report['attempts']}"
    assert report["loaded"] == [], f"edge modules loaded {report['loaded']}"
    assert report["errors"] == [] and report["helps"] == [0, 0, 0], report
