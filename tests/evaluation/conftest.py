"""Fixtures of the evaluation tests: the sample handbook indexed once, and its tiny QA file."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_QA = Path(__file__).parent / "handbook-qa-tiny.jsonl"


@pytest.fixture
def qa_file() -> Path:
    """7 questions on the sample handbook: 5 answerable (one in engineering's folder), 2 not."""
    return TINY_QA


@pytest.fixture(scope="module")
def indexed_home(tmp_path_factory: pytest.TempPathFactory, embedder) -> Path:
    """A LOOPLINE_HOME with the handbook's public and engineering folders ingested (store closed).

    Built once per module; tests open their own services on it and only read.
    """
    from rag.samples import write_handbook
    from rag.service import RagService
    from shared.config import Settings

    root = tmp_path_factory.mktemp("handbook")
    plan = write_handbook(root)
    home = tmp_path_factory.mktemp("eval-home")
    with RagService(Settings(home=home), embedder_factory=lambda: embedder) as svc:
        for folder in ("public", "engineering"):
            svc.ingest(root / folder, plan[folder])
    return home
