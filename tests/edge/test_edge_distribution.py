"""The loopline-edge distribution (edge/pyproject.toml): what a device installs instead of loopline.

Both wheels are built from a copy of the sources (nothing is written into the checkout). The
edge wheel must declare only numpy, onnxruntime, headless OpenCV and click, hold only the edge
package, and, installed into a fresh venv (dependencies from the package index or pip's cache),
run `loopline edge` on a tiny ONNX model made here with none of the central stack importable.
docker/edge.Dockerfile must build its image's environment the same way: its pip steps, user
and entry point are read from the file.
"""

from __future__ import annotations

import email.parser
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from dockerfile import dockerfile_stages
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parents[2]
EDGE = REPO / "edge"
DOCKERFILE = REPO / "docker" / "edge.Dockerfile"
PACKAGES = ("shared", "rag", "vision", "edge", "evaluation")  # what the main wheel is built from
EDGE_DEPENDENCIES = {"numpy", "onnxruntime", "opencv-python-headless", "click"}
# What the central service needs and a device must not carry (import names).
CENTRAL_ONLY = ("pydantic", "sqlalchemy", "alembic", "yaml", "torch", "ultralytics", "llama_index", "shared", "rag")


def _pyproject(path: Path) -> dict:
    return tomllib.loads(path.read_text(encoding="utf-8"))


ROOT_PROJECT = _pyproject(REPO / "pyproject.toml")["project"]
EDGE_PROJECT = _pyproject(EDGE / "pyproject.toml")["project"]


def _run(args: list[str | Path], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """A subprocess outside the checkout: nothing of ours is importable from its cwd or PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _copy_sources(dest: Path) -> Path:
    """The files the wheels are built from, without caches or a local build's leftovers."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for package in PACKAGES:
        shutil.copytree(REPO / package, dest / package, ignore=ignore)
    shutil.rmtree(dest / "edge" / "build", ignore_errors=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    return dest


def _build_wheel(project: str, cwd: Path, out: Path) -> Path:
    """`pip wheel` offline with this venv's setuptools; `./` keeps pip from reading the path as a PyPI name."""
    proc = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            out,
            project,
        ],
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    return wheel


@dataclass(frozen=True)
class Wheels:
    edge: Path
    main: Path


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Wheels:
    src = _copy_sources(tmp_path_factory.mktemp("sources"))
    edge = _build_wheel("./edge", src, tmp_path_factory.mktemp("edge-wheel"))
    main = _build_wheel("./", src, tmp_path_factory.mktemp("main-wheel"))
    return Wheels(edge=edge, main=main)


def _wheel_metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(zf.read(name).decode())


def _requirements(specs: list[str]) -> dict[str, SpecifierSet]:
    return {(r := Requirement(s)).name: r.specifier for s in specs}


# --- what the wheels declare and hold ---------------------------------------------------------
def test_edge_wheel_requires_only_the_four_runtime_packages(wheels: Wheels) -> None:
    meta = _wheel_metadata(wheels.edge)
    assert meta["Name"] == "loopline-edge"
    requires = _requirements(meta.get_all("Requires-Dist") or [])
    assert set(requires) == EDGE_DEPENDENCIES, f"loopline-edge requires {sorted(requires)}"
    assert all(str(spec).startswith(">=") for spec in requires.values()), requires

    # The same lower bounds as the main project's `edge` extra and its click.
    main = _requirements(ROOT_PROJECT["optional-dependencies"]["edge"]) | _requirements(ROOT_PROJECT["dependencies"])
    assert requires == {name: main[name] for name in requires}, "edge/pyproject.toml's bounds differ from the root's"


def test_edge_version_follows_the_main_project(wheels: Wheels) -> None:
    meta = _wheel_metadata(wheels.edge)
    assert meta["Version"] == ROOT_PROJECT["version"], "bump edge/pyproject.toml's version with the root's"
    assert meta["Requires-Python"] == ROOT_PROJECT["requires-python"]


def test_edge_wheel_holds_every_edge_module_and_nothing_else(wheels: Wheels) -> None:
    with zipfile.ZipFile(wheels.edge) as zf:
        names = zf.namelist()
        entry_points = zf.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    dist_info = f"loopline_edge-{EDGE_PROJECT['version']}.dist-info/"
    stray = [n for n in names if not n.startswith(dist_info) and not (n.startswith("edge/") and n.endswith(".py"))]
    assert stray == [], f"the edge wheel ships files outside the edge package: {stray}"

    shipped = {n for n in names if n.startswith("edge/")}
    sources = {p.relative_to(REPO).as_posix() for p in EDGE.rglob("*.py") if "build" not in p.relative_to(EDGE).parts}
    assert shipped == sources, (
        f"missing from the wheel (a subpackage not in edge/pyproject.toml's packages?): {sorted(sources - shipped)}"
    )
    assert re.search(r"^loopline = edge\.device_cli:main$", entry_points, re.M), entry_points


def test_main_wheel_still_ships_edge_but_not_its_build_file(wheels: Wheels) -> None:
    with zipfile.ZipFile(wheels.main) as zf:
        names = set(zf.namelist())
    assert {"edge/cli.py", "edge/device_cli.py", "edge/selection/selector.py"} <= names
    assert not [n for n in names if n.startswith("edge/") and not n.endswith(".py")], sorted(names)


# --- installed on its own -------------------------------------------------------------------
def _tiny_detector(path: Path) -> Path:
    """A 32 px one-class detector: one box (model pixels 8..24) scored by the frame's mean brightness.

    Shaped like an ultralytics export (output (1, 4+classes, anchors), names and imgsz in the
    metadata), so the edge runtime reads it as it reads a trained model.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    box = numpy_helper.from_array(np.full((1, 4, 1), 16.0, dtype=np.float32), "box")  # cx, cy, w, h
    one_anchor = numpy_helper.from_array(np.array([1, 1, 1], dtype=np.int64), "one_anchor")
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["images"], ["mean"], axes=[1, 2, 3], keepdims=1),
            helper.make_node("Reshape", ["mean", "one_anchor"], ["score"]),
            helper.make_node("Concat", ["box", "score"], ["output0"], axis=1),
        ],
        "tiny-detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 5, 1])],
        initializer=[box, one_anchor],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    helper.set_model_props(model, {"task": "detect", "names": "{0: 'plate'}", "imgsz": "[32, 32]"})
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


@pytest.mark.slow
def test_edge_wheel_installs_and_runs_alone_in_a_fresh_venv(wheels: Wheels, tmp_path: Path) -> None:
    venv = tmp_path / "device"
    made = _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", python]  # this venv's pip: the device venv stays bare
    installed = _run([*pip, "install", "-q", wheels.edge], cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr[-3000:]

    listed = _run([*pip, "list", "--format", "json"], cwd=tmp_path)
    dists = {d["name"].lower() for d in json.loads(listed.stdout)}
    assert {"loopline-edge", *EDGE_DEPENDENCIES} <= dists and "loopline" not in dists, sorted(dists)
    checked = _run([*pip, "check"], cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    probe = "import importlib.util, json, sys; print(json.dumps({n: importlib.util.find_spec(n) is not None for n in sys.argv[1:]}))"
    importable = json.loads(_run([python, "-c", probe, *CENTRAL_ONLY], cwd=tmp_path).stdout)
    assert not any(importable.values()), f"importable on the device: {[n for n, ok in importable.items() if ok]}"

    command = [venv / "bin" / dockerfile_entrypoint()[0], *dockerfile_entrypoint()[1:]]  # the image's `loopline edge`
    helped = _run([*command, "--help"], cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert {"run", "bench", "agent"} <= set(re.findall(r"^  (\w+)", helped.stdout, re.M)), helped.stdout
    central = _run([venv / "bin" / "loopline", "rag", "--help"], cwd=tmp_path)
    assert central.returncode != 0 and "No such command 'rag'" in central.stderr

    model = _tiny_detector(tmp_path / "tiny.onnx")
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "a_bright.png"), np.full((64, 64, 3), 255, np.uint8))
    cv2.imwrite(str(frames / "b_dark.png"), np.zeros((64, 64, 3), np.uint8))
    ran = _run([*command, "run", "--model", model, "--source", frames, "--json"], cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    bright, dark = [json.loads(line) for line in ran.stdout.splitlines()]
    assert bright["frame"].endswith("a_bright.png") and dark["frame"].endswith("b_dark.png")
    (found,) = bright["detections"]
    assert found["name"] == "plate" and found["score"] == pytest.approx(1.0)
    assert found["box"] == pytest.approx([16, 16, 48, 48], abs=0.01)  # model pixels 8..24, frame twice the size
    assert dark["detections"] == []
    assert "2 frames" in ran.stderr


# --- the image builds the same environment ----------------------------------------------------
def dockerfile_entrypoint() -> list[str]:
    return dockerfile_stages(DOCKERFILE)[-1].exec_form("ENTRYPOINT")


def _positional(args: list[str]) -> list[str]:
    """Arguments that are not options or option values (the options used here take none, but -w/--wheel-dir)."""
    out, skip = [], False
    for word in args[1:]:
        if skip:
            skip = False
        elif word in ("-w", "--wheel-dir"):
            skip = True
        elif not word.startswith("-"):
            out.append(word)
    return out


def test_edge_dockerfile_installs_the_wheel_this_test_installs(wheels: Wheels) -> None:
    build, final = dockerfile_stages(DOCKERFILE)

    # Built from the repository root as the context: every COPY source exists there.
    for stage in (build, final):
        for copy in stage.all("COPY"):
            words = copy.split()
            if not any(w.startswith("--from") for w in words):
                missing = [w for w in words[:-1] if not w.startswith("--") and not (REPO / w).exists()]
                assert not missing, f"COPY {copy}: not in the repository root (the build context): {missing}"

    # The builder makes the pure-Python edge wheel, nothing else.
    (wheel_cmd,) = build.pip_commands()
    assert wheel_cmd[0] == "wheel" and "--no-deps" in wheel_cmd and _positional(wheel_cmd) == ["./edge"], wheel_cmd

    # The image installs that wheel alone, with the dependencies it declares: what the venv test did.
    installs = [cmd for cmd in final.pip_commands() if cmd[0] == "install"]
    assert len(installs) == 1, f"one pip install in the final stage, of the edge wheel: {installs}"
    (install,) = installs
    assert "--no-deps" not in install
    targets = _positional(install)
    assert targets and all(fnmatch.fnmatch(wheels.edge.name, Path(t).name) for t in targets), (
        f"the image installs {targets}, not (only) the edge wheel {wheels.edge.name}"
    )

    # Slim Python that satisfies the wheel's Requires-Python, no torch, not root, `loopline edge`.
    match = re.fullmatch(r"python:(\d+\.\d+)-slim", final.image)
    assert match, f"final stage base image {final.image!r}, expected python:X.Y-slim"
    assert match[1] + ".0" in SpecifierSet(EDGE_PROJECT["requires-python"])
    assert not [r for r in final.all("RUN") + build.all("RUN") if "torch" in r]
    users = final.all("USER")
    assert users and users[-1].split(":")[0] not in ("root", "0"), f"the image runs as {users or 'root'}"
    assert dockerfile_entrypoint() == ["loopline", "edge"]
