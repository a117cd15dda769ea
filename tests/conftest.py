"""Fixtures shared by the whole suite: offline settings, one loaded embedder, services."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
for var in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_MODEL"):
    os.environ.pop(var, None)  # a developer's endpoint must not leak into the tests


@pytest.fixture(scope="session")
def embedder():
    """The real bundled MiniLM model, loaded once (a few seconds)."""
    pytest.importorskip("sentence_transformers")
    from rag.embeddings import LocalEmbedder

    return LocalEmbedder(batch_size=32)


@pytest.fixture
def make_service(tmp_path: Path, embedder) -> Iterator[Callable[..., object]]:
    """Build RagServices on embedded stores under tmp_path, sharing the loaded model."""
    from rag.service import RagService
    from shared.config import Settings

    made = []

    def factory(home: Path | None = None, **overrides) -> RagService:
        settings = Settings(home=home or tmp_path / "home", **overrides)
        svc = RagService(settings, embedder_factory=lambda: embedder)
        made.append(svc)
        return svc

    yield factory
    for svc in made:
        try:
            svc.close()
        except Exception:
            pass


@pytest.fixture
def handbook(tmp_path: Path) -> tuple[Path, dict[str, list[str]]]:
    """The fictional company handbook of rag.samples, written under tmp_path/handbook."""
    from rag.samples import write_handbook

    root = tmp_path / "handbook"
    return root, write_handbook(root)
