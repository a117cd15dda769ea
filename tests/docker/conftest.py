"""What tests/docker shares: the Dockerfiles' stages, the parsed compose file, the API's routes.

No Docker engine runs these tests; they read the files the way the engine would and check
them against the code. Fixtures only (test modules cannot import a conftest): the Dockerfile
reader (tests/helpers/dockerfile.py) is reached through `dockerfiles` and `service_stage`, the app through `has_route`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from dockerfile import Stage, dockerfile_stages

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"


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
