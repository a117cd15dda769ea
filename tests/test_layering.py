"""The packages form layers without cycles, checked on the source of every module.

    edge                        stands alone: no other package of ours
    shared                      the core: no other package of ours
    rag, vision                 on shared (vision also runs models with edge); never each other
    evaluation                  on top: may use all of them; nothing imports it

Every `.py` file of each package is parsed with `ast`, and every import counts wherever it is
written: at module level, inside functions, under `if TYPE_CHECKING:`, relative imports, and
`importlib.import_module("…")` / `__import__("…")` calls with a literal name (relative
imports are resolved, though they cannot leave their package). A violation is
reported as `file:line: import (package may import only …)`. It does not import anything.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# What each package may import of ours besides itself.
ALLOWED: dict[str, frozenset[str]] = {
    "edge": frozenset(),
    "shared": frozenset(),
    "rag": frozenset({"shared"}),
    "vision": frozenset({"shared", "edge"}),
    "evaluation": frozenset({"shared", "rag", "vision", "edge"}),
}
IMPORT_CALLS = {"import_module", "__import__"}  # importlib.import_module(...), import_module(...), __import__(...)


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    statement: str
    package: str

    def __str__(self) -> str:
        allowed = ", ".join(sorted(ALLOWED[self.package])) or "nothing else of ours"
        return f"{self.path}:{self.line}: {self.statement}  ({self.package} may import only {allowed})"


def module_name(path: Path) -> str:
    """`vision/datasets/voc.py` → `vision.datasets.voc`; a package's `__init__.py` → the package."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str, str]]:
    """(line, absolute module name, source text) of every import anywhere in the tree."""
    found: list[tuple[int, str, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((node.lineno, alias.name, f"import {alias.name}"))
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, target] if target else base)
            names = ", ".join(a.name for a in node.names)
            found.append((node.lineno, target, f"from {'.' * node.level}{node.module or ''} import {names}"))
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
            if name in IMPORT_CALLS and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.append((node.lineno, arg.value, f"{name}({arg.value!r})"))
    return sorted(found)


def violations_in(source: str, path: Path) -> list[Violation]:
    """The imports in `source` (the text of `path`, a file of one of our packages) its layer forbids."""
    module = module_name(path)
    package = module.split(".")[0]
    tree = ast.parse(source, filename=str(path))
    out = []
    for line, target, statement in imported_modules(tree, module, path.name == "__init__.py"):
        top = target.split(".")[0]
        if top in ALLOWED and top != package and top not in ALLOWED[package]:
            out.append(Violation(str(path.relative_to(REPO)), line, statement, package))
    return out


def package_files(package: str) -> list[Path]:
    return sorted(p for p in (REPO / package).rglob("*.py") if "__pycache__" not in p.parts)


def test_every_package_of_ours_has_a_layer() -> None:
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")}
    assert packages == set(ALLOWED), (
        f"packages without a layer: {packages - set(ALLOWED)}; gone: {set(ALLOWED) - packages}"
    )


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_package_imports_a_layer_above_it(package: str) -> None:
    files = package_files(package)
    assert files, f"{package}: no modules found under {REPO / package}"
    found = [v for path in files for v in violations_in(path.read_text(encoding="utf-8"), path)]
    assert not found, "imports against the layering:\n" + "\n".join(map(str, found))


# --- the checker itself catches what it is meant to --------------------------------------
def test_the_old_vision_to_evaluation_imports_are_caught() -> None:
    """vision/cli.py and vision/training.py imported evaluation inside functions, release.py at the top."""
    cli = (
        "def eval_cmd(model, data):\n"
        '    """mAP of MODEL."""\n'
        "    from evaluation.model_eval import resolve_model\n"
        "    from evaluation.vision import evaluate_detector\n"
        "    from vision.yolo_env import prepare_ultralytics\n"
    )
    found = violations_in(cli, REPO / "vision" / "cli.py")
    assert [(v.path, v.line, v.statement) for v in found] == [
        ("vision/cli.py", 3, "from evaluation.model_eval import resolve_model"),
        ("vision/cli.py", 4, "from evaluation.vision import evaluate_detector"),
    ]
    assert "vision may import only edge, shared" in str(found[0])
    release = "from evaluation.vision import evaluate_detector\nfrom shared.config import Settings\n"
    assert [v.line for v in violations_in(release, REPO / "vision" / "release.py")] == [1]


def test_string_relative_and_type_checking_imports_are_caught() -> None:
    source = (
        "import importlib\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from rag.models import Answer\n"
        "def load():\n"
        "    importlib.import_module('vision.registry')\n"
        "    __import__('evaluation')\n"
        "    import shared.config, edge.types\n"
    )
    found = violations_in(source, REPO / "shared" / "monitoring" / "x.py")
    assert [(v.line, v.statement) for v in found] == [
        (4, "from rag.models import Answer"),
        (6, "import_module('vision.registry')"),
        (7, "__import__('evaluation')"),
        (8, "import edge.types"),
    ]
    relative = "from . import drift\nfrom ..config import Settings\n"  # shared.monitoring.drift, shared.config
    assert violations_in(relative, REPO / "shared" / "monitoring" / "x.py") == []
