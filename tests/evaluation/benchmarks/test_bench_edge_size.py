"""The edge-size benchmark on a tiny edge venv the test builds itself, measured with --venv.

A real run installs numpy, onnxruntime, OpenCV and click from the package index (minutes);
here the venv is made without pip and gets links to those packages as this environment has
them, plus the repository's edge/ package and a `loopline` launcher with only the edge
group. Everything after the install is the real thing: sizes, importability, the timed edge
import in fresh interpreters, the console script, the main venv's reference.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from evaluation.benchmarks.edge_size import MUST_BE_ABSENT, edge_size, render

ROOT = Path(__file__).resolve().parents[3]
LAUNCHER = """#!{python}
import sys

import click

from edge.cli import edge

sys.exit(click.Group("loopline", commands={{"edge": edge}})())
"""


def edge_venv(where: Path) -> Path:
    """A venv holding only links to numpy, onnxruntime, cv2 and click (and their .libs) and edge/."""
    modules = [pytest.importorskip(name) for name in ("numpy", "onnxruntime", "cv2", "click")]
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    site = Path(
        subprocess.run(
            [str(where / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    for module in modules:
        package = Path(module.__file__).parent
        for item in [package, *package.parent.glob(f"{package.name}*.libs"), *package.parent.glob("opencv*.libs")]:
            if not (site / item.name).exists():
                (site / item.name).symlink_to(item)
    (site / "edge").symlink_to(ROOT / "edge")
    script = where / "bin" / "loopline"
    script.write_text(LAUNCHER.format(python=where / "bin" / "python"))
    script.chmod(0o755)
    return where


@pytest.mark.slow
def test_an_edge_venv_is_measured_against_the_main_one(tmp_path: Path) -> None:
    venv = edge_venv(tmp_path / "edge-venv")
    result = CliRunner().invoke(edge_size, ["--venv", str(venv), "--runs", "1", "--train-runs", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["venv"] == str(venv.resolve()) and report["pip_seconds"] == {}
    assert "-m evaluation.benchmarks.edge_size --venv " in report["command"]

    [m] = report["measurements"]  # --venv installs nothing, so no "edge + base deps" round
    assert not any(m["importable"][name] for name in MUST_BE_ABSENT)
    assert m["edge_module"].startswith(str(venv.resolve()))  # the venv's own edge/, not the checkout on a path
    assert m["edge_import"]["ok"] and 0 < m["edge_import"]["import_s"] <= m["edge_import"]["interpreter_wall_s"]
    assert m["cli"]["ok"] and m["cli"]["help"]["rc"] == 0 and report["cli_needs"] == []
    assert {e["name"] for e in m["largest"]} >= {"numpy", "onnxruntime", "edge"}

    main = report["main_venv"]
    assert main["site_packages_mb"] > m["site_packages_mb"]  # the links take no room
    if main["train_import"]["ok"]:  # the main venv has the training stack (make setup installs it)
        assert main["train_import"]["runs"] == 1 and main["train_import"]["import_s"] > 0

    table = render(report)
    assert table.splitlines()[0].startswith("environment")
    assert "OK (absent: torch, ultralytics, llama_index, mlflow)" in table
    assert "main venv (training stack)" in table


def test_a_venv_and_a_new_one_are_not_asked_for_together(tmp_path: Path) -> None:
    result = CliRunner().invoke(edge_size, ["--venv", str(tmp_path), "--keep", str(tmp_path / "new")])
    assert result.exit_code == 2 and "pass one of them" in result.output
    result = CliRunner().invoke(edge_size, ["--venv", str(tmp_path)])
    assert result.exit_code == 2 and "no bin/python" in result.output
