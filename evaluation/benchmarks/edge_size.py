"""Measure what the edge runtime costs on a device: install size, import time, no training stack.

    python -m evaluation.benchmarks.edge_size [--keep DIR | --venv DIR] [--model M.onnx --source DIR] [--with-base] [--json]

Creates a fresh virtual environment (in a temporary folder, or DIR with --keep, which is then
left in place) and installs into it what a device installs: the loopline-edge distribution
(edge/pyproject.toml: the edge package, its `loopline edge` command, and numpy, onnxruntime,
opencv-python-headless and click as its only dependencies), built from a copy of edge/ so
that nothing is written into the checkout; then reports:

- the size of the venv's site-packages (du), with its largest entries;
- the import time of `import edge.detector, edge.cli`, median of 5 fresh interpreters (the
  import alone, and the whole interpreter run including start-up);
- that torch, ultralytics and llama_index (and mlflow) are NOT importable there;
- whether the `loopline` console script works there (`loopline edge --help`, and with
  --model and --source a real `loopline edge run ... --json`);
- for comparison, `import ultralytics, torch` in the main venv (median of 3) and its size.

If the console script fails for lack of a module (it should not: the distribution declares
what it imports), or with --with-base, the main project's base dependencies are installed on
top and the size and the checks are reported again. With --venv DIR an existing venv (one kept by --keep, say) is measured as it is:
nothing is created or installed. pip may download from the package index or reuse its cache;
the main venv is only read, never installed into. A table goes to stdout (JSON with --json);
progress to stderr. Exit code 1 when the training stack is importable in the edge venv or
the edge import fails there.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import click
from tqdm import tqdm

from evaluation.benchmarks.command import given_args

log = logging.getLogger(__name__)

MODULE = "evaluation.benchmarks.edge_size"

MUST_BE_ABSENT = ["torch", "ultralytics", "llama_index", "mlflow"]
EDGE_IMPORT = "import edge.detector, edge.cli"
TRAIN_IMPORT = "import ultralytics, torch"
# The loopline-edge distribution's folder (edge/pyproject.toml), copied without build leftovers.
EDGE_DIST = "edge"
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".pytest_cache", "build")


def repo_root() -> Path:
    """The checkout this file belongs to (the folder holding pyproject.toml above evaluation/)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "edge").is_dir():
            return parent
    raise FileNotFoundError(f"no pyproject.toml with an edge/ package above {here}; run this from a loopline checkout")


def base_dependencies(root: Path) -> list[str]:
    return list(tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"])


def edge_distribution(root: Path) -> dict:
    """Name and dependencies of the loopline-edge distribution, as edge/pyproject.toml declares them."""
    project = tomllib.loads((root / EDGE_DIST / "pyproject.toml").read_text())["project"]
    return {"name": project["name"], "dependencies": list(project["dependencies"])}


def du_mb(path: Path) -> float:
    """Disk usage in MB (1e6 bytes) as `du -sk` reports it (allocated blocks, hard links once)."""
    try:
        out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True).stdout
        return round(int(out.split()[0]) * 1024 / 1e6, 1)
    except (OSError, subprocess.CalledProcessError, ValueError):
        total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
        return round(total / 1e6, 1)


def largest_entries(site: Path, n: int = 8) -> list[dict]:
    sizes = [(p.name, du_mb(p)) for p in site.iterdir()]
    return [{"name": k, "mb": v} for k, v in sorted(sizes, key=lambda kv: -kv[1])[:n]]


def site_packages(python: Path) -> Path:
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return Path(out)


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for child interpreters: no PYTHONPATH or venv leaking in from ours."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}}
    env.update(extra or {})
    return env


def _run(
    cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 1800
) -> subprocess.CompletedProcess:
    log.debug("$ %s", shlex.join(cmd))
    return subprocess.run(
        cmd, check=False, cwd=cwd, env=env or _clean_env(), capture_output=True, text=True, timeout=timeout
    )


def pip_install(target_python: Path, args: list[str], *, cwd: Path) -> float:
    """`pip --python TARGET install ARGS` with this interpreter's pip; seconds taken."""
    t0 = time.perf_counter()
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "--python",
        str(target_python),
        "install",
        "--no-input",
        "--progress-bar",
        "off",
        *args,
    ]
    res = _run(cmd, cwd=cwd)
    if res.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(args)} failed (rc {res.returncode}):\n{res.stderr[-3000:]}")
    return round(time.perf_counter() - t0, 1)


def copy_sources(root: Path, dest: Path) -> Path:
    """A build copy of the edge distribution's folder, so building its wheel writes nothing into the checkout."""
    dest.mkdir(parents=True)
    return Path(shutil.copytree(root / EDGE_DIST, dest / EDGE_DIST, ignore=_IGNORE))


def timed_import(python: Path, statement: str, *, cwd: Path, env: dict[str, str], runs: int) -> dict:
    """Median import time over `runs` fresh interpreters (plus one untimed warm-up run)."""
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    imports, walls = [], []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        res = _run([str(python), "-c", code], cwd=cwd, env=env, timeout=600)
        wall = time.perf_counter() - t0
        if res.returncode != 0:
            return {
                "ok": False,
                "error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"rc {res.returncode}",
            }
        if i == 0:
            continue  # warm-up: byte-code compilation and a cold page cache are not the steady state
        imports.append(float(res.stdout.strip().splitlines()[-1]))
        walls.append(wall)
    return {
        "ok": True,
        "runs": runs,
        "import_s": round(statistics.median(imports), 3),
        "interpreter_wall_s": round(statistics.median(walls), 3),
        "all_import_s": [round(x, 3) for x in imports],
    }


def importable(python: Path, modules: list[str], *, cwd: Path, env: dict[str, str]) -> dict[str, bool]:
    code = (
        "import importlib.util, json, sys; "
        f"print(json.dumps({{m: importlib.util.find_spec(m) is not None for m in {modules!r}}}))"
    )
    res = _run([str(python), "-c", code], cwd=cwd, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"checking importability failed: {res.stderr[-1000:]}")
    return json.loads(res.stdout)


def where_edge_comes_from(python: Path, *, cwd: Path, env: dict[str, str]) -> str:
    res = _run([str(python), "-c", "import edge; print(edge.__file__)"], cwd=cwd, env=env)
    return res.stdout.strip() if res.returncode == 0 else f"not importable: {res.stderr.strip()[-300:]}"


def _missing_module(stderr: str) -> str | None:
    m = re.search(r"No module named '([^']+)'", stderr)
    return m.group(1) if m else None


def check_cli(venv: Path, model: Path | None, source: Path | None, *, cwd: Path, env: dict[str, str]) -> dict:
    """`loopline edge --help`, then a real `loopline edge run` when a model and a source are given."""
    exe = venv / "bin" / "loopline"
    out: dict = {"script": str(exe), "exists": exe.exists()}
    if not exe.exists():
        out["ok"] = False
        return out
    res = _run([str(exe), "edge", "--help"], cwd=cwd, env=env, timeout=120)
    out["help"] = {
        "rc": res.returncode,
        "missing_module": _missing_module(res.stderr),
        "stderr_tail": res.stderr[-600:],
    }
    ok = res.returncode == 0 and "run" in res.stdout
    if model and source:
        cmd = [str(exe), "edge", "run", "--model", str(model), "--source", str(source), "--json"]
        t0 = time.perf_counter()
        res = _run(cmd, cwd=cwd, env=env, timeout=900)
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
        results = []
        for ln in lines:
            try:
                results.append(json.loads(ln))
            except ValueError:
                pass
        latencies = sorted(r.get("latency_ms", 0.0) for r in results)
        out["run"] = {
            "command": shlex.join(["loopline", *cmd[1:]]),
            "rc": res.returncode,
            "seconds": round(time.perf_counter() - t0, 1),
            "frames": len(results),
            "frames_with_detections": sum(1 for r in results if r.get("detections")),
            "detections": sum(len(r.get("detections", [])) for r in results),
            "median_latency_ms": round(statistics.median(latencies), 2) if latencies else None,
            "first": results[0] if results else None,
            "missing_module": _missing_module(res.stderr),
            "stderr_tail": res.stderr[-600:],
        }
        ok = ok and res.returncode == 0 and len(results) > 0
    out["ok"] = ok
    return out


def measure_venv(
    venv: Path, python: Path, *, runs: int, model: Path | None, source: Path | None, cwd: Path, label: str
) -> dict:
    """Size, importability, edge import time and console script of the venv at `venv`."""
    env = _clean_env({"VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"})
    site = site_packages(python)
    return {
        "label": label,
        "site_packages": str(site),
        "site_packages_mb": du_mb(site),
        "venv_mb": du_mb(venv),
        "largest": largest_entries(site),
        "edge_module": where_edge_comes_from(python, cwd=cwd, env=env),
        "importable": importable(python, MUST_BE_ABSENT + ["pydantic", "sqlalchemy", "yaml"], cwd=cwd, env=env),
        "edge_import": timed_import(python, EDGE_IMPORT, cwd=cwd, env=env, runs=runs),
        "cli": check_cli(venv, model, source, cwd=cwd, env=env),
    }


def main_venv_reference(root: Path, work: Path, runs: int) -> dict:
    """Size of the main (training) venv and `import ultralytics, torch` there."""
    venv = root / ".venv" if (root / ".venv" / "bin" / "python").exists() else Path(sys.prefix)
    python = venv / "bin" / "python"
    cfg = work / "ultralytics-config"
    cfg.mkdir(exist_ok=True)
    env = _clean_env({"YOLO_CONFIG_DIR": str(cfg), "YOLO_OFFLINE": "1", "YOLO_VERBOSE": "False", "MPLBACKEND": "Agg"})
    site = site_packages(python)
    return {
        "venv": str(venv),
        "site_packages_mb": du_mb(site),
        "venv_mb": du_mb(venv),
        "largest": largest_entries(site),
        "train_import": timed_import(python, TRAIN_IMPORT, cwd=work, env=env, runs=runs),
    }


def needed_for_cli(edge_only: dict) -> list[str]:
    """What the console script lacked in the edge-only venv (empty when it worked)."""
    cli = edge_only["cli"]
    if cli.get("ok"):
        return []
    if not cli.get("exists"):
        return [f"(no console script: {cli['script']})"]
    missing = {m for m in (cli.get("help", {}).get("missing_module"), cli.get("run", {}).get("missing_module")) if m}
    return sorted(missing) or ["(see cli.help.stderr_tail)"]


def _help_cell(cli: dict) -> str:
    if not cli.get("exists"):
        return f"no script ({cli['script']})"
    h = cli["help"]
    return "ok" if h["rc"] == 0 else f"rc {h['rc']} ({h['missing_module']})"


def render(report: dict) -> str:
    rows = []
    ref = report["main_venv"]
    for m in report["measurements"]:
        imp = m["edge_import"]
        absent = [k for k in MUST_BE_ABSENT if not m["importable"][k]]
        present = [k for k in MUST_BE_ABSENT if m["importable"][k]]
        run = m["cli"].get("run")
        rows.append(
            [
                m["label"],
                f"{m['site_packages_mb']:.1f}",
                f"{imp['import_s']:.3f} / {imp['interpreter_wall_s']:.3f}"
                if imp.get("ok")
                else f"FAIL {imp.get('error')}",
                "OK (absent: " + ", ".join(absent) + ")" if not present else "PRESENT: " + ", ".join(present),
                _help_cell(m["cli"]),
                (
                    f"rc {run['rc']}, {run['frames']} frames, {run['detections']} dets, median {run['median_latency_ms']} ms"
                    if run
                    else "not run (no --model/--source)"
                ),
            ]
        )
    ti = ref["train_import"]
    rows.append(
        [
            "main venv (training stack)",
            f"{ref['site_packages_mb']:.1f}",
            f"{ti['import_s']:.3f} / {ti['interpreter_wall_s']:.3f}" if ti.get("ok") else f"FAIL {ti.get('error')}",
            "-",
            "-",
            "-",
        ]
    )
    head = [
        "environment",
        "site-packages MB",
        "import s (alone / whole interpreter)",
        "torch/ultralytics/llama_index/mlflow",
        "loopline edge --help",
        "loopline edge run",
    ]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.append("")
    lines.append(
        f"edge import: {EDGE_IMPORT!r}, median of {report['runs']['edge']}; training import: {TRAIN_IMPORT!r}, median of {report['runs']['train']}"
    )
    first = report["measurements"][0]
    lines.append(
        f"edge-only site-packages is {first['site_packages_mb'] / ref['site_packages_mb'] * 100:.1f}% of the main venv's "
        f"({first['site_packages_mb']:.0f} vs {ref['site_packages_mb']:.0f} MB; whole main venv {ref['venv_mb']:.0f} MB)"
    )
    if first["edge_import"].get("ok") and ti.get("ok"):
        lines.append(
            f"edge import is {ti['import_s'] / first['edge_import']['import_s']:.1f}x faster than importing the training stack"
        )
    for m in report["measurements"]:
        lines.append(f"{m['label']} largest: " + ", ".join(f"{e['name']} {e['mb']:.0f}" for e in m["largest"][:6]))
    lines.append(
        "needed for `loopline edge` without the base deps: "
        + (", ".join(report["cli_needs"]) or "nothing (loopline-edge alone runs it)")
    )
    lines.append(
        f"pip seconds: {report['pip_seconds']}; venv: {report['venv']}{' (kept)' if report['kept'] else ' (removed)'}"
    )
    return "\n".join(lines)


@click.command("edge-size", short_help="Size and import time of an edge-only install.")
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Create the venv in DIR (new or empty) and keep it.",
)
@click.option(
    "--venv",
    "given_venv",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Measure this existing venv (e.g. one kept with --keep) as it is: nothing is created or installed.",
)
@click.option(
    "--model",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="ONNX model for a real `loopline edge run` in the venv.",
)
@click.option(
    "--source",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Image folder for that run (with --model).",
)
@click.option("--with-base", is_flag=True, help="Also install the base dependencies and measure again.")
@click.option(
    "--runs", type=click.IntRange(1), default=5, show_default=True, help="Fresh interpreters for the edge import time."
)
@click.option(
    "--train-runs",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="Fresh interpreters for the training-stack import (median).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table.")
@click.option("-v", "--verbose", count=True, help="More log output on stderr.")
@click.pass_context
def edge_size(
    ctx: click.Context,
    keep: Path | None,
    given_venv: Path | None,
    model: Path | None,
    source: Path | None,
    with_base: bool,
    runs: int,
    train_runs: int,
    as_json: bool,
    verbose: int,
) -> None:
    """Install only the edge part into a fresh venv and measure its size, import time and CLI."""
    if (model is None) != (source is None):
        raise click.UsageError("--model and --source go together")
    if keep is not None and given_venv is not None:
        raise click.UsageError("--keep creates a venv and --venv measures an existing one: pass one of them")
    if with_base and given_venv is not None:
        raise click.UsageError("--venv installs nothing: drop --with-base, or measure a new venv with --keep")
    if keep is not None and keep.exists() and any(keep.iterdir()):
        raise click.BadParameter(f"{keep} exists and is not empty; pick a new folder", param_hint="--keep")
    if given_venv is not None and not (given_venv / "bin" / "python").exists():
        raise click.BadParameter(f"{given_venv}: no bin/python; is this a virtual environment?", param_hint="--venv")
    if model is not None and source is not None:
        model, source = model.resolve(), source.resolve()
    logging.basicConfig(
        level=logging.WARNING - 10 * min(verbose, 2) if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    root = repo_root()
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="loopline-edge-size-"))
    chosen = given_venv or keep
    venv = chosen.resolve() if chosen is not None else tmp / "venv"
    python = venv / "bin" / "python"
    report: dict = {
        "command": shlex.join([sys.executable, "-m", MODULE, *given_args(ctx)]),
        "repo": str(root),
        "venv": str(venv),
        "kept": keep is not None or given_venv is not None,
        "python": platform.python_version(),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "runs": {"edge": runs, "train": train_runs},
        "pip_seconds": {},
        "edge_distribution": edge_distribution(root),
        "measurements": [],
    }
    steps = ["measure edge-only", "main venv reference"]
    if given_venv is None:
        steps[:0] = ["venv", "loopline-edge"]
    measure = {"runs": runs, "model": model, "source": source, "cwd": tmp}
    try:
        with tqdm(total=len(steps), desc="edge_size", unit="step", file=sys.stderr) as bar:
            if given_venv is None:
                _install_edge_venv(root, venv, python, tmp, report, bar)
            bar.set_postfix_str("measure edge-only")
            label = f"given venv ({venv})" if given_venv is not None else edge_label(report["edge_distribution"])
            edge_only = measure_venv(venv, python, label=label, **measure)
            report["measurements"].append(edge_only)
            report["cli_needs"] = needed_for_cli(edge_only)
            bar.update()
            if given_venv is None and (with_base or not edge_only["cli"].get("ok")):
                bar.total += 1
                bar.set_postfix_str("pip install base deps")
                deps = base_dependencies(root)
                report["pip_seconds"]["base_deps"] = pip_install(python, deps, cwd=tmp)
                report["base_dependencies"] = deps
                report["measurements"].append(measure_venv(venv, python, label="edge + base deps", **measure))
                bar.update()
            bar.set_postfix_str("main venv reference")
            report["main_venv"] = main_venv_reference(root, tmp, train_runs)
            bar.update()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # a kept or given venv lives outside it
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    ok = all(not any(m["importable"][k] for k in MUST_BE_ABSENT) for m in report["measurements"])
    ok = ok and all(m["edge_import"].get("ok") for m in report["measurements"])
    report["ok"] = ok
    click.echo(json.dumps(report, indent=2) if as_json else render(report))
    ctx.exit(0 if ok else 1)


def edge_label(dist: dict) -> str:
    names = ", ".join(re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0] for d in dist["dependencies"])
    return f"{dist['name']} ({names})"


def _install_edge_venv(root: Path, venv: Path, python: Path, tmp: Path, report: dict, bar: tqdm) -> None:
    """A venv without pip, then the loopline-edge distribution with the dependencies it declares."""
    bar.set_postfix_str("create venv")
    # --without-pip: the venv holds only what the edge needs; pip runs from this interpreter.
    res = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    if res.returncode != 0:
        raise RuntimeError(f"creating the venv failed: {res.stderr[-2000:]}")
    bar.update()
    bar.set_postfix_str("pip install loopline-edge")
    build = copy_sources(root, tmp / "src")
    report["pip_seconds"]["loopline_edge"] = pip_install(python, [str(build)], cwd=tmp)
    bar.update()


if __name__ == "__main__":
    edge_size(prog_name=f"python -m {MODULE}")
