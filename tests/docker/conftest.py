"""What tests/docker shares: the Dockerfiles' stages, the parsed compose file, the API's routes.

No Docker engine runs these tests; they read the files the way the engine would and check
them against the code. Fixtures only (test modules cannot import a conftest): the Dockerfile
reader is reached through `dockerfiles` and `service_stage`, the app through `has_route`.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"


@dataclass
class Stage:
    """One FROM … stage of a Dockerfile: base image, name (`AS name`), instructions in order."""

    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def env(self) -> dict[str, str]:
        """The stage's ENV settings (`ENV A=1 B=2` form)."""
        return dict(word.split("=", 1) for args in self.all("ENV") for word in shlex.split(args) if "=" in word)

    def exec_form(self, keyword: str) -> list[str]:
        """The last CMD/ENTRYPOINT as words: the JSON (exec) form, or the shell form split."""
        found = self.all(keyword)
        if not found:
            return []
        return json.loads(found[-1]) if found[-1].startswith("[") else shlex.split(found[-1])

    def pip_commands(self) -> list[list[str]]:
        """The `pip …` commands of the RUN lines (each `&&` part), as the words after `pip`."""
        found = []
        for run in self.all("RUN"):
            for part in run.split("&&"):
                words = shlex.split(part)
                words = words[words.index("pip") :] if "pip" in words[:3] else words  # after --mount=… options
                if words[:1] == ["pip"]:
                    found.append(words[1:])
        return found


def dockerfile_stages(path: Path) -> list[Stage]:
    """The stages of a Dockerfile: continuation lines joined, comments and parser directives dropped."""
    logical, pending = [], ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for instruction in logical:
        keyword, _, args = instruction.partition(" ")
        if keyword.upper() == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        else:
            stages[-1].instructions.append((keyword.upper(), args.strip()))
    return stages


@pytest.fixture(scope="session")
def compose_raw() -> dict:
    """docker/compose.yaml parsed, before interpolation."""
    return yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def dockerfiles() -> dict[str, list[Stage]]:
    """Every docker/*.Dockerfile by file name, as its stages."""
    found = {path.name: dockerfile_stages(path) for path in sorted(DOCKER.glob("*.Dockerfile"))}
    assert found, f"no *.Dockerfile in {DOCKER}"
    return found


@pytest.fixture(scope="session")
def service_stage() -> Callable[[dict], Stage | None]:
    """The Dockerfile stage a compose service's image is built from (its `target`, else the last); None: pulled."""

    def stage(service: dict) -> Stage | None:
        build = service.get("build")
        if not build:
            return None
        stages = dockerfile_stages(DOCKER / build["context"] / build.get("dockerfile", "Dockerfile"))
        target = build.get("target")
        return next(s for s in stages if s.name == target) if target else stages[-1]

    return stage


@pytest.fixture(scope="session")
def has_route(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str, str], bool]]:
    """Whether the API that `loopline serve` builds answers METHOD PATH (embedded stores, a temporary home)."""
    from starlette.routing import Match

    from shared.auth import KeyRegistry
    from shared.config import Settings
    from shared.server import create_app

    app = create_app(Settings(home=tmp_path_factory.mktemp("home")), keys=KeyRegistry([]))

    def exists(method: str, path: str) -> bool:
        scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": [], "query_string": b""}
        return any(route.matches(scope)[0] is Match.FULL for route in app.routes)

    yield exists
    app.state.ctx.close()
