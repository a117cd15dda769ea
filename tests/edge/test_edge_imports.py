"""The edge package must install and run on numpy, onnxruntime, OpenCV and click alone.

An allow-list, not a block-list: in a fresh interpreter that imports every module of `edge`
and renders the help of the `edge` command and each of its sub-commands, every top-level
module loaded, or even tried and caught, must be in the standard library, be `edge` itself,
or be one of numpy, onnxruntime, cv2 and click, or something those four load or try when
imported alone in another fresh interpreter. A second check reads the source: imports inside
functions that the first one never runs must name only the standard library, those four or
`edge`.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

EDGE_DEPENDENCIES = ("numpy", "onnxruntime", "cv2", "click")
TRAINING_STACK = ("torch", "torchvision", "ultralytics", "llama_index", "mlflow", "ragas", "sentence_transformers")
REPO = Path(__file__).resolve().parents[2]

# Records the top-level name of every import that reaches the finders (i.e. is not loaded yet).
RECORDER = """
import importlib.abc, json, sys

attempts = set()

class Record(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        attempts.add(name.split(".")[0])
        return None

sys.meta_path.insert(0, Record())
"""

# What the allowed packages bring along: everything loaded or tried by importing them alone.
BASELINE = (
    RECORDER
    + """
for name in sys.argv[1].split(","):
    __import__(name)
print(json.dumps(sorted(attempts | {n.split(".")[0] for n in sys.modules})))
"""
)

# Anything outside the allow-list (read from stdin) is refused at import and recorded.
PROBE = """
import importlib, importlib.abc, json, pkgutil, sys

ALLOWED = set(json.loads(sys.stdin.read())) | set(sys.stdlib_module_names)
attempts = []

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in ALLOWED:
            attempts.append(name)
            raise ModuleNotFoundError(f"not on the edge allow-list: {name}", name=name)
        return None

sys.meta_path.insert(0, Refuse())
import edge
errors = []
modules = ["edge"] + [m.name for m in pkgutil.walk_packages(edge.__path__, "edge.", onerror=errors.append)]
for name in modules:
    importlib.import_module(name)
from click.testing import CliRunner
from edge.cli import edge as group
commands = [[]] + [[name] for name in sorted(group.commands)]
helps = {" ".join(cmd) or "edge": CliRunner().invoke(group, [*cmd, "--help"]).exit_code for cmd in commands}
loaded = sorted({n.split(".")[0] for n in sys.modules} - ALLOWED)
print(json.dumps({"modules": modules, "attempts": attempts, "loaded": loaded, "errors": errors, "helps": helps}))
"""


def _python(code: str, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        input=stdin,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def allowed_modules() -> set[str]:
    """`edge`, its four dependencies and what they load or try when imported alone (stdlib aside)."""
    brought = set(json.loads(_python(BASELINE, ",".join(EDGE_DEPENDENCIES))))
    return {"edge", *EDGE_DEPENDENCIES} | (brought - set(sys.stdlib_module_names))


def test_every_edge_module_loads_only_the_allow_list() -> None:
    allowed = allowed_modules()
    assert not allowed & set(TRAINING_STACK), (
        f"the edge dependencies themselves pull in {allowed & set(TRAINING_STACK)}"
    )

    report = json.loads(_python(PROBE, stdin=json.dumps(sorted(allowed))))
    assert {"edge.cli", "edge.detector", "edge.preprocess", "edge.postprocess", "edge.sources", "edge.bench"} <= set(
        report["modules"]
    ), report["modules"]
    assert report["attempts"] == [], f"edge modules tried to import {report['attempts']} (allowed: {sorted(allowed)})"
    assert report["loaded"] == [], f"edge modules loaded {report['loaded']}"
    assert report["errors"] == [], report
    assert {"edge", "run", "bench", "agent"} <= set(report["helps"]), report["helps"]
    assert set(report["helps"].values()) == {0}, report["helps"]


def test_imports_inside_functions_name_only_the_allow_list() -> None:
    allowed = {"edge", *EDGE_DEPENDENCIES} | set(sys.stdlib_module_names)
    found = []
    for path in sorted((REPO / "edge").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            found += [f"{path.relative_to(REPO)}:{node.lineno}: {n}" for n in names if n.split(".")[0] not in allowed]
    assert found == [], "edge imports outside numpy, onnxruntime, cv2, click and the stdlib:\n" + "\n".join(found)
