"""Settings of the documents vertical: vector store, embeddings, chunking, answers, uploads.

A section of the one `shared.config.Settings` (named in the `loopline.settings` entry-point
group), read from the same flat `LOOPLINE_*` variables; it holds fields only, no logic.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr


class RagSettings(BaseModel):
    """Documents Q&A."""

    SECTIONS: ClassVar[dict[str, str]] = {
        "qdrant_url": "Vector store",
        "embedding_model": "Embeddings",
        "chunk_size": "Chunking and document limits",
        "hybrid": "Retrieval and answers",
        "upload_max_bytes": "Uploads and server folders",
    }

    # Vector store
    qdrant_url: str | None = Field(
        None, description="URL of a Qdrant server or cluster; embedded Qdrant Edge if unset."
    )
    qdrant_api_key: SecretStr | None = Field(None, description="API key of that Qdrant server.")
    qdrant_path: Path | None = Field(
        None, description="Use qdrant-client's local mode in this folder instead of Qdrant Edge."
    )
    qdrant_shards: int | None = Field(
        None,
        ge=1,
        description="Shards of a new collection on a Qdrant cluster (spread over its nodes); Qdrant's default "
        "(1) if unset. Fixed when the collection is made.",
    )
    qdrant_replicas: int | None = Field(
        None,
        ge=1,
        description="Copies of each shard on a Qdrant cluster (a node can fail without losing reads); Qdrant's "
        "default (1) if unset. Fixed when the collection is made.",
    )
    collection: str = Field(
        "loopline_docs",
        description="Collection name; a collection keeps the embedding model that built it, so another model "
        "needs another name.",
    )

    # Embeddings
    embedding_model: str = Field(
        "all-MiniLM-L6-v2",
        description="The bundled local model, or a model at the embeddings endpoint below.",
    )
    embedding_base_url: str | None = Field(
        None, description="OpenAI-compatible embeddings endpoint; the bundled local model if unset."
    )
    embedding_api_key: SecretStr | None = Field(None, description="Key of that embeddings endpoint.")
    embedding_runtime: Literal["onnx", "torch"] = Field(
        "onnx",
        description="How the bundled model runs: `onnx` (ONNX Runtime, exported once from the installed weights; "
        "about 3x faster on CPU) or `torch` (sentence-transformers).",
    )
    embedding_precision: Literal["int8", "fp32"] = Field(
        "int8",
        description="Weights of the ONNX runtime: `int8` (fastest; its own vectors, recorded with the collection "
        "as `all-MiniLM-L6-v2+onnx-int8`) or `fp32` (torch's vectors).",
    )
    embedding_cache: Path | None = Field(
        None,
        description="Folder of the exported ONNX models, shared by every home; ~/.cache/loopline/embeddings if unset.",
    )
    embedding_batch_size: int = Field(8, ge=1, description="Chunks per call to the bundled local model.")
    embedding_threads: int | None = Field(
        None,
        description="CPU threads embedding documents locally; the runtime's default (all cores) if unset. With ONNX, "
        "each query is embedded on one thread, so concurrent questions run side by side.",
    )

    # Ingestion: chunking (in word pieces of the embedding model, which truncates at 256) and limits
    chunk_size: int = Field(
        200,
        ge=32,
        le=256,
        description="Chunk length in the embedding model's word pieces (32 to 256, where it truncates).",
    )
    chunk_overlap: int = Field(30, ge=0, description="Word pieces consecutive chunks share.")
    max_unpacked_bytes: int = Field(
        50_000_000,
        description="Largest decompressed size of a DOCX's parts; larger ones (zip bombs) are dead-lettered.",
    )
    max_document_chars: int = Field(
        1_000_000, description="Most characters of text one document may yield; more are dead-lettered."
    )
    max_document_chunks: int = Field(2_000, description="Most chunks one document may yield; more are dead-lettered.")
    parse_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Seconds one file may take to load and chunk (in a child process, killed at the limit) "
        "before it is dead-lettered.",
    )

    # Retrieval and answers
    hybrid: bool = Field(True, description="Fuse dense and BM25 sparse retrieval with RRF inside Qdrant.")
    top_k: int = Field(5, description="Chunks retrieved per question.")
    min_relevance: float = Field(0.30, description="Abstain when the best chunk's cosine similarity is below this.")
    llm_base_url: str | None = Field(
        None,
        validation_alias=AliasChoices("LOOPLINE_LLM_BASE_URL", "OPENAI_BASE_URL"),
        description="OpenAI-compatible chat endpoint; extractive answers if unset.",
    )
    llm_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("LOOPLINE_LLM_API_KEY", "OPENAI_API_KEY"),
        description="Key of the chat endpoint (the evaluation judge uses it too).",
    )
    llm_model: str | None = Field(
        None,
        validation_alias=AliasChoices("LOOPLINE_LLM_MODEL", "OPENAI_MODEL"),
        description="Model name at the chat endpoint (any name it serves).",
    )
    llm_timeout_s: float = Field(60.0, description="Seconds an LLM call (answer or judge) may take.")
    judge_base_url: str | None = Field(
        None,
        description="OpenAI-compatible endpoint of the `loopline eval rag` judge; `LOOPLINE_LLM_BASE_URL` if unset.",
    )
    judge_model: str | None = Field(
        None, description="Model that judges answers in `loopline eval rag`; `LOOPLINE_LLM_MODEL` if unset."
    )

    # Uploads and server folders
    upload_max_bytes: int = Field(20_000_000, description="Largest document upload (413 above it).")
    sync_folder: Path | None = Field(None, description="Folder that `POST /v1/sync` re-syncs (409 if unset).")
    sync_groups: str = Field("public", description="Comma-separated groups of the synced folder.")
    table_sources_file: Path | None = Field(
        None,
        description="YAML list of PostgreSQL tables `loopline serve` follows (change data capture, or polling): "
        "see `loopline rag ingest-table` and the README.",
    )
