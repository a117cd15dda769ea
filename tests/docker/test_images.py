"""The Dockerfiles under docker/ checked against the repository, without building them.

No Docker engine runs here: each Dockerfile is read (tests/docker/conftest.py) and what a
build would trip over, or build differently from `make`, is checked: the torch pins against
the Makefile's, COPY sources against the build context and its .dockerignore, the extras
against pyproject.toml, the edge image against the loopline-edge distribution, the Label
Studio release against the Makefile's, and each image's command, health check and port
against the code. Building each image's Python environment is done by hand (README,
Deployment, says what ran).
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from readme_doc import resolve

from shared.cli import main as loopline_main

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
MAKEFILE = (REPO / "Makefile").read_text(encoding="utf-8")
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
EDGE_PROJECT = tomllib.loads((REPO / "edge" / "pyproject.toml").read_text(encoding="utf-8"))["project"]
PINNED = ("torch", "torchvision")
VALUE_OPTIONS = {
    "-i",
    "--index-url",
    "--extra-index-url",
    "-c",
    "--constraint",
    "-r",
    "--requirement",
    "-w",
    "--wheel-dir",
}
EXTRAS_TARGET = re.compile(r"^\.(?:/)?\[([\w,-]+)\]$")  # `.[rag,vision]` as pip gets it (quotes removed)


def makefile_pins() -> dict[str, str]:
    found = {name: set(re.findall(rf"(?<![\w-]){name}==([\w.+]+)", MAKEFILE)) for name in PINNED}
    assert all(len(v) == 1 for v in found.values()), f"the Makefile pins {found}: one version each"
    return {name: versions.pop() for name, versions in found.items()}


def makefile_extras() -> set[str]:
    (extras,) = re.findall(r'install .*-e "\.\[([\w,-]+)\]"', MAKEFILE)
    return set(extras.split(","))


def installs(stage) -> list[list[str]]:  # noqa: ANN001
    """The `pip install …` commands of a stage, as their words after `install`."""
    return [cmd[1:] for cmd in stage.pip_commands() if cmd[:1] == ["install"]]


def targets(words: list[str]) -> list[str]:
    """What a `pip install` installs: its words less the options and their values."""
    found, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word in VALUE_OPTIONS:
            skip = True
        elif not word.startswith("-"):
            found.append(word)
    return found


def requirement_name(word: str) -> str | None:
    """The distribution a `pip install` target names (its version may be a shell variable), None for a path or wheel."""
    if word.startswith((".", "/")) or word.endswith(".whl"):
        return None
    return canonicalize_name(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", word)[0])


class DockerIgnore:
    """A .dockerignore as BuildKit applies it: patterns in order, `!` re-includes, the last match wins,
    a pattern matches a path or any of its parent folders, `**` any number of folders."""

    WILDCARDS = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}

    def __init__(self, path: Path) -> None:
        self.rules = []
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                include = line.startswith("!")
                pattern = line.lstrip("!").strip().strip("/")
                parts = re.split(r"(\*\*/|\*\*|\*|\?)", pattern)
                regex = "".join(self.WILDCARDS.get(part, re.escape(part)) for part in parts)
                self.rules.append((include, re.compile(regex)))

    def excluded(self, relative: str) -> bool:
        parts = relative.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        result = False
        for include, regex in self.rules:
            if any(regex.fullmatch(p) for p in prefixes):
                result = not include
        return result


def build_contexts(compose_raw: dict) -> dict[str, Path]:
    """Dockerfile name → the build context compose gives it."""
    found = {}
    for service in compose_raw["services"].values():
        build = service.get("build")
        if build:
            context = (DOCKER / build["context"]).resolve()
            name = Path(build.get("dockerfile", "Dockerfile")).name
            assert found.setdefault(name, context) == context, f"{name} is built from two contexts"
    return found


# --- one torch everywhere -----------------------------------------------------------------------
def test_torch_pins_are_the_makefiles(dockerfiles: dict) -> None:
    pins = makefile_pins()
    problems, pinned_stages = [], 0
    for name, stages in dockerfiles.items():
        for stage in stages:
            for words in installs(stage):
                named = {requirement_name(w): w for w in targets(words) if requirement_name(w)}
                for dist in PINNED:
                    if dist in named and named[dist] != f"{dist}=={pins[dist]}":
                        problems.append(f"{name} ({stage.name}): {named[dist]}, the Makefile's is {dist}=={pins[dist]}")
                extras = {e for w in words if (m := EXTRAS_TARGET.match(w)) for e in m[1].split(",")}
                if "vision" in extras:  # ultralytics would otherwise let pip pick any torch
                    pinned_stages += 1
                    missing = [d for d in PINNED if d not in named]
                    if missing:
                        problems.append(f"{name} ({stage.name}): installs .[vision] without pinning {missing}")
    assert pinned_stages, "no Dockerfile installs the vision extra (where torch comes from)"
    assert not problems, "\n".join(problems)


def test_edge_and_label_studio_images_carry_no_torch(dockerfiles: dict) -> None:
    for name in ("edge.Dockerfile", "labelstudio.Dockerfile"):
        runs = [run for stage in dockerfiles[name] for run in stage.all("RUN")]
        assert runs and not [r for r in runs if re.search(r"\btorch", r)], f"{name} installs torch"


# --- what the images are built from --------------------------------------------------------------
def test_copy_sources_exist_in_the_build_context_and_pass_its_dockerignore(
    dockerfiles: dict, compose_raw: dict
) -> None:
    contexts = build_contexts(compose_raw)
    exclude = [p.replace(".", "/").rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["exclude"]]
    problems, copied = [], 0
    for name, stages in dockerfiles.items():
        assert name in contexts, f"compose.yaml does not build {name}"
        context, ignore = contexts[name], DockerIgnore(DOCKER / f"{name}.dockerignore")
        for stage in stages:
            for args in stage.all("COPY"):
                words = [w for w in args.split() if not w.startswith("--")]
                if any(w.startswith("--from") for w in args.split()):
                    continue
                for source in words[:-1]:
                    copied += 1
                    path = context / source
                    if not path.exists():
                        problems.append(f"{name}: COPY {source}: not in its build context {context}")
                    elif ignore.excluded(source):
                        problems.append(f"{name}: COPY {source}: its .dockerignore leaves it out of the context")
                    elif path.is_dir():  # what the package build takes from it must be in the context too
                        for file in path.rglob("*"):
                            rel = file.relative_to(context).as_posix()
                            needed = file.suffix in {".py", ".yaml", ".mako", ".toml"} and "__pycache__" not in rel
                            wheel_skips = any(rel.startswith(e) for e in exclude) or rel.startswith("edge/build/")
                            if needed and not wheel_skips and ignore.excluded(rel):
                                problems.append(f"{name}: {rel} is left out by its .dockerignore")
    assert copied >= 7, f"only {copied} COPY sources found"
    assert not problems, "\n".join(problems[:20])


def test_dockerignore_reading_catches_mistakes(tmp_path: Path) -> None:
    (tmp_path / "x.dockerignore").write_text("*\n!shared/\n**/__pycache__/\nevaluation/benchmarks/\n")
    ignore = DockerIgnore(tmp_path / "x.dockerignore")
    assert ignore.excluded("rag") and ignore.excluded("rag/api.py") and ignore.excluded("shared/a/__pycache__/m.pyc")
    assert not ignore.excluded("shared") and not ignore.excluded("shared/metadata/migrate.py")
    assert ignore.excluded("evaluation/benchmarks/x.py")


def test_extras_installed_are_the_projects_and_tested_by_make(dockerfiles: dict) -> None:
    declared = set(PYPROJECT["project"]["optional-dependencies"])
    tested = makefile_extras()
    per_stage = {}
    for name, stages in dockerfiles.items():
        for stage in stages:
            for words in installs(stage):
                for m in filter(None, map(EXTRAS_TARGET.match, words)):
                    extras = set(m[1].split(","))
                    assert extras <= declared, f"{name} ({stage.name}): no extras {extras - declared} in pyproject.toml"
                    assert extras <= tested, (
                        f"{name} ({stage.name}): extras {extras - tested} that `make` never installs"
                    )
                    per_stage[f"{name}:{stage.name}"] = words
    assert per_stage, "no Dockerfile installs the project with extras"
    # The roles of one code base: every image that installs the project installs it the same way.
    assert len({tuple(words) for words in per_stage.values()}) == 1, per_stage


def test_edge_image_installs_the_loopline_edge_distribution(dockerfiles: dict) -> None:
    build, final = dockerfiles["edge.Dockerfile"]
    (wheel,) = [cmd for cmd in build.pip_commands() if cmd[:1] == ["wheel"]]
    assert "./edge" in wheel and "--no-deps" in wheel, wheel
    assert EDGE_PROJECT["name"] == "loopline-edge"
    assert not [r for r in EDGE_PROJECT["dependencies"] if canonicalize_name(Requirement(r).name) in PINNED]
    (install,) = installs(final)
    wheel_name = canonicalize_name(EDGE_PROJECT["name"]).replace("-", "_")
    wheel = f"{wheel_name}-{EDGE_PROJECT['version']}-py3-none-any.whl"
    assert targets(install) and all(fnmatch.fnmatch(wheel, Path(t).name) for t in targets(install)), install


def test_label_studio_release_is_the_one_make_installs(dockerfiles: dict) -> None:
    (spec,) = re.findall(r"^LS_SPEC := (.+)$", MAKEFILE, re.M)
    pinned = [
        Requirement(w) for s in dockerfiles["labelstudio.Dockerfile"] for cmd in installs(s) for w in targets(cmd)
    ]
    assert [r.name for r in pinned] == ["label-studio"], pinned
    (version,) = [s.version for s in pinned[0].specifier if s.operator == "=="]
    allowed = Requirement(spec.strip()).specifier
    assert version in allowed, f"labelstudio.Dockerfile pins {version}; the Makefile installs {spec}"


# --- what the images run ---------------------------------------------------------------------------
def test_images_run_commands_the_clis_have(dockerfiles: dict) -> None:
    from edge.device_cli import main as edge_main

    checked, problems = 0, []
    for name, stages in dockerfiles.items():
        for stage in stages:
            line = stage.exec_form("ENTRYPOINT") + stage.exec_form("CMD")
            if line[:1] != ["loopline"]:
                continue
            root = edge_main if name == "edge.Dockerfile" else loopline_main
            problems += [f"{name} ({stage.name}): {p}" for p in resolve(root, "loopline", line[1:])[2]]
            checked += 1
    assert checked >= 3, f"only {checked} images run loopline"
    assert not problems, "\n".join(problems)


def test_api_image_health_check_asks_a_route_the_api_has(dockerfiles: dict, has_route: Callable) -> None:
    stages = [s for s in dockerfiles["loopline.Dockerfile"] if s.exec_form("CMD") == ["loopline", "serve"]]
    assert stages, "no stage serves the API"
    for stage in stages:
        (check,) = stage.all("HEALTHCHECK")
        (url,) = re.findall(r"http://127\.0\.0\.1:(\d+)(/[\w/-]*)", check)
        env = stage.env()
        assert url[0] == env["LOOPLINE_PORT"], (
            f"the health check asks port {url[0]}, the API listens on {env['LOOPLINE_PORT']}"
        )
        assert has_route("GET", url[1]), f"the API has no GET {url[1]}"
        assert stage.all("EXPOSE") == [env["LOOPLINE_PORT"]]


def test_images_expose_the_ports_they_serve(dockerfiles: dict) -> None:
    from edge.agent import agent

    (label_studio,) = dockerfiles["labelstudio.Dockerfile"]
    cmd = label_studio.exec_form("CMD")
    assert label_studio.all("EXPOSE") == [cmd[cmd.index("--port") + 1]], (label_studio.all("EXPOSE"), cmd)
    edge = dockerfiles["edge.Dockerfile"][-1]
    (metrics,) = [p for p in agent.params if p.name == "metrics_port"]
    assert edge.all("EXPOSE") == [str(metrics.default)], "the edge image exposes another port than the agent's /metrics"


@pytest.mark.parametrize("name", ["loopline.Dockerfile", "edge.Dockerfile", "labelstudio.Dockerfile"])
def test_images_do_not_run_as_root(dockerfiles: dict, compose_raw: dict, name: str) -> None:
    targets = {(s.get("build") or {}).get("target") for s in compose_raw["services"].values()}
    stages = dockerfiles[name]
    for stage in [s for s in stages if s.name in targets] or stages[-1:]:  # the images that run, not builders
        users = stage.all("USER")
        assert users and users[-1].split(":")[0] not in ("root", "0"), (
            f"{name} ({stage.name}) runs as {users or 'root'}"
        )
