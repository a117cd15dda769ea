"""Settings of a loopline installation, read from `LOOPLINE_*` environment variables.

Every component takes a `Settings` instance as an argument; nothing reads the environment
on its own. Embedded defaults (SQLite, Qdrant Edge, local files) need no configuration.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """All knobs, with defaults that run on one machine with no servers."""

    model_config = SettingsConfigDict(env_prefix="LOOPLINE_", extra="ignore", populate_by_name=True)

    home: Path = Field(Path(".loopline"), description="Directory of all embedded state.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the metadata store; SQLite under home if unset."
    )

    # Vector store
    qdrant_url: str | None = Field(None, description="Qdrant server URL; embedded Qdrant Edge if unset.")
    qdrant_api_key: SecretStr | None = None
    qdrant_path: Path | None = Field(
        None, description="Use qdrant-client's local mode in this folder instead of Qdrant Edge."
    )
    collection: str = "loopline_docs"

    # Embeddings
    embedding_model: str = Field(
        "all-MiniLM-L6-v2", description="Local model name, or an OpenAI-compatible embedding model."
    )
    embedding_base_url: str | None = Field(
        None, description="OpenAI-compatible embeddings endpoint; the bundled local model if unset."
    )
    embedding_api_key: SecretStr | None = None
    embedding_batch_size: int = 32
    embedding_threads: int | None = Field(None, description="torch threads for local embedding.")

    # Chunking (in word pieces of the embedding model, which truncates at 256)
    chunk_size: int = Field(200, ge=32, le=256)
    chunk_overlap: int = Field(30, ge=0)
    max_file_bytes: int = Field(20_000_000, description="Larger files are dead-lettered.")
    max_unpacked_bytes: int = Field(
        50_000_000, description="Largest decompressed size of a DOCX's parts; larger ones are dead-lettered."
    )
    max_document_chars: int = Field(
        1_000_000, description="Most characters of text one document may yield; more are dead-lettered."
    )
    max_document_chunks: int = Field(2_000, description="Most chunks one document may yield; more are dead-lettered.")
    parse_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Seconds one file may take to load and chunk (in a worker process) before it is dead-lettered.",
    )
    ingest_roots: str = Field(
        "",
        description="Comma-separated folders under which API callers may ingest server paths "
        "(POST /v1/admin/ingest); none if empty. The local CLI hand-off is not limited.",
    )

    # Retrieval and answers
    hybrid: bool = Field(True, description="Fuse dense and BM25 sparse retrieval with RRF.")
    top_k: int = 5
    min_relevance: float = Field(0.30, description="Abstain when the best chunk's cosine similarity is below this.")
    llm_base_url: str | None = Field(
        None,
        validation_alias=AliasChoices("LOOPLINE_LLM_BASE_URL", "OPENAI_BASE_URL"),
        description="OpenAI-compatible endpoint; extractive answers if unset.",
    )
    llm_api_key: SecretStr | None = Field(None, validation_alias=AliasChoices("LOOPLINE_LLM_API_KEY", "OPENAI_API_KEY"))
    llm_model: str | None = Field(
        None,
        validation_alias=AliasChoices("LOOPLINE_LLM_MODEL", "OPENAI_MODEL"),
        description="Model name at the endpoint.",
    )
    llm_timeout_s: float = 60.0
    judge_base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint of the evaluation judge; llm_base_url if unset."
    )
    judge_model: str | None = Field(
        None, description="Model that judges answers in `loopline eval rag`; llm_model if unset."
    )

    # API
    api_keys_file: Path | None = Field(
        None, description="YAML file mapping API keys to users and groups; home/api_keys.yaml if unset."
    )
    host: str = "127.0.0.1"
    port: int = 8000
    upload_max_bytes: int = 20_000_000
    sync_folder: Path | None = Field(None, description="Folder that POST /v1/sync re-syncs.")
    sync_groups: str = Field("public", description="Comma-separated groups of the synced folder.")
    metrics_enabled: bool = Field(True, description="Record Prometheus metrics and serve GET /metrics.")
    metrics_token: SecretStr | None = Field(
        None,
        description="Bearer token GET /metrics requires; unauthenticated if unset (expose to the scraper network only).",
    )

    # Vision
    mlflow_tracking_uri: str | None = Field(None, description="MLflow tracking server URL; SQLite under home if unset.")
    registered_model: str = Field("loopline-detector", description="Registered model name of the detector.")
    devices_file: Path | None = Field(
        None, description="YAML of device ids, fleets and tokens; home/devices.yaml if unset."
    )
    frame_max_bytes: int = Field(8_000_000, description="Largest frame upload accepted from a device.")
    frame_max_pixels: int = Field(
        16_777_216, description="Most pixels (width × height) a device frame may have; larger ones are refused (413)."
    )
    frame_decode_concurrency: int = Field(
        2, ge=1, description="Frames decoded at once; further uploads wait their turn."
    )
    train_threads: int | None = Field(None, description="CPU threads for training (all cores if unset).")

    # Monitoring (alerts, freshness SLOs, run checks)
    monitoring_file: Path | None = Field(
        None, description="YAML of SLOs, thresholds, webhooks and alert actions; home/monitoring.yaml if unset."
    )
    alert_webhooks: str = Field("", description="Comma-separated URLs every alert is POSTed to (added to the file's).")
    monitor_interval_s: float = Field(
        300.0, ge=0, description="The API runs the monitoring checks this often; 0 turns the background check off."
    )

    @property
    def resolved_devices_file(self) -> Path:
        return self.devices_file or self.home / "devices.yaml"

    @property
    def resolved_mlflow_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.home / 'mlflow.db').resolve()}"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'metadata.db').resolve()}"

    @property
    def resolved_api_keys_file(self) -> Path:
        return self.api_keys_file or self.home / "api_keys.yaml"

    def ensure_home(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        return self.home
