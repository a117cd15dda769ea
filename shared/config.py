"""Settings of a loopline installation, read from `LOOPLINE_*` environment variables.

Every component takes a `Settings` instance as an argument; nothing reads the environment
on its own. Embedded defaults (SQLite, Qdrant Edge, local files) need no configuration.

Each field's description is what the README's configuration table says about it: the table
is generated from the fields (`python -m shared.config` prints it, section by section, see
`SECTIONS`), and a test fails while the README's copy differs.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """All knobs, with defaults that run on one machine with no servers."""

    model_config = SettingsConfigDict(env_prefix="LOOPLINE_", extra="ignore", populate_by_name=True)

    # Storage
    home: Path = Field(
        Path(".loopline"),
        description="Directory of all embedded state: SQLite databases, the Qdrant Edge shard, uploads, models, "
        "key and device files.",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the metadata store, e.g. `postgresql+psycopg://user@host/db`; "
        "SQLite under home if unset.",
    )

    # Vector store
    qdrant_url: str | None = Field(
        None, description="URL of a Qdrant server or cluster; embedded Qdrant Edge if unset."
    )
    qdrant_api_key: SecretStr | None = Field(None, description="API key of that Qdrant server.")
    qdrant_path: Path | None = Field(
        None, description="Use qdrant-client's local mode in this folder instead of Qdrant Edge."
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
    embedding_batch_size: int = Field(32, description="Chunks per call to the bundled local model.")
    embedding_threads: int | None = Field(
        None, description="torch threads for local embedding; torch's default if unset."
    )

    # Ingestion: chunking (in word pieces of the embedding model, which truncates at 256) and limits
    chunk_size: int = Field(
        200,
        ge=32,
        le=256,
        description="Chunk length in the embedding model's word pieces (32 to 256, where it truncates).",
    )
    chunk_overlap: int = Field(30, ge=0, description="Word pieces consecutive chunks share.")
    max_file_bytes: int = Field(20_000_000, description="Larger files are dead-lettered.")
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

    # API
    api_keys_file: Path | None = Field(
        None, description="YAML file of users, keys and groups; home/api_keys.yaml if unset."
    )
    host: str = Field("127.0.0.1", description="Interface `loopline serve` binds.")
    port: int = Field(8000, description="Port `loopline serve` listens on.")
    upload_max_bytes: int = Field(20_000_000, description="Largest document upload (413 above it).")
    ingest_roots: str = Field(
        "",
        description="Comma-separated folders under which API callers may ingest server paths "
        "(`POST /v1/admin/ingest`); none if empty. The local CLI hand-off is not limited.",
    )
    sync_folder: Path | None = Field(None, description="Folder that `POST /v1/sync` re-syncs (409 if unset).")
    sync_groups: str = Field("public", description="Comma-separated groups of the synced folder.")
    metrics_enabled: bool = Field(True, description="Record Prometheus metrics and serve `GET /metrics`.")
    metrics_token: SecretStr | None = Field(
        None,
        description="Bearer token `GET /metrics` then requires; open to anyone who reaches the port if unset "
        "(expose it to the scraper's network only).",
    )

    # Vision
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking server and model registry; SQLite under home if unset."
    )
    registered_model: str = Field("loopline-detector", description="Registered model name of the detector.")
    devices_file: Path | None = Field(
        None, description="YAML of device ids, fleets and tokens; home/devices.yaml if unset."
    )
    frame_max_bytes: int = Field(8_000_000, description="Largest frame upload accepted from a device.")
    frame_max_pixels: int = Field(
        16_777_216,
        description="Most pixels (width × height) a device frame may have; larger ones get 413 before decoding.",
    )
    frame_decode_concurrency: int = Field(
        2, ge=1, description="Frames decoded at once; further uploads wait their turn."
    )
    train_threads: int | None = Field(None, description="CPU threads for training; all cores if unset.")

    # Monitoring (alerts, freshness SLOs, run checks)
    monitoring_file: Path | None = Field(
        None,
        description="YAML of SLOs, thresholds, webhooks and alert actions; home/monitoring.yaml if unset "
        "(defaults if the file is missing).",
    )
    alert_webhooks: str = Field("", description="Comma-separated URLs every alert is POSTed to (added to the file's).")
    monitor_interval_s: float = Field(
        300.0, ge=0, description="`loopline serve` runs the monitoring checks this often; 0 turns that off."
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


# --- the README's configuration table ---------------------------------------------------
# The table lists the fields in their order above; a section starts at each field named here.
SECTIONS: dict[str, str] = {
    "home": "Storage",
    "qdrant_url": "Vector store",
    "embedding_model": "Embeddings",
    "chunk_size": "Ingestion",
    "hybrid": "Retrieval and answers",
    "api_keys_file": "API",
    "mlflow_tracking_uri": "Vision",
    "monitoring_file": "Monitoring",
}


def env_names(name: str) -> list[str]:
    """The environment variables that set field `name`, the LOOPLINE_ one first."""
    alias = Settings.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    if isinstance(alias, str):
        return [alias]
    return [f"{Settings.model_config['env_prefix']}{name.upper()}"]


def _default_text(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None or value == "":
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int):
        return f"{value:,}" if value >= 10_000 else str(value)  # 20,000,000 but port 8000
    if isinstance(value, float):
        return f"{value:,g}"
    return f"`{value}`"


def markdown_table() -> str:
    """The configuration table of the README: one row per field, with a row naming each section."""
    if next(iter(Settings.model_fields)) not in SECTIONS:
        raise ValueError("the first field of Settings must start a section in SECTIONS")
    unknown = set(SECTIONS) - set(Settings.model_fields)
    if unknown:
        raise ValueError(f"SECTIONS names fields Settings does not have: {sorted(unknown)}")
    lines = ["| variable | default | what it does |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        if name in SECTIONS:
            lines.append(f"| **{SECTIONS[name]}** | | |")
        if not field.description:
            raise ValueError(f"Settings.{name} has no description; the README's table is made from it")
        first, *others = (f"`{env}`" for env in env_names(name))
        variable = f"{first} (or {', '.join(others)})" if others else first
        description = field.description.replace("|", "\\|")
        lines.append(f"| {variable} | {_default_text(field)} | {description} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
