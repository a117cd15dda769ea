"""Settings of a loopline installation, read from `LOOPLINE_*` environment variables.

Every component takes the one `Settings` instance as an argument; nothing reads the
environment on its own. Embedded defaults (SQLite, Qdrant Edge, local files) need no
configuration. Each package owns its settings: the core's are `CoreSettings` here, a
vertical's are a section class it names in the `loopline.settings` entry-point group
(`rag.settings:RagSettings`, `vision.settings:VisionSettings`), and `Settings` is the core
plus every installed section: one object, flat `LOOPLINE_*` names, each field described
once. shared never imports a vertical by name.

Each field's description is what the README's configuration table says about it: the table
is generated from the fields (`python -m shared.config` prints it, section by section, see
`SECTIONS`), and a test fails while the README's copy differs.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from typing import ClassVar

from pydantic import AliasChoices, BaseModel, Field, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

SETTINGS_GROUP = "loopline.settings"


class CoreSettings(BaseSettings):
    """What the core needs: state, the API's users and devices, ingestion's file limit, monitoring."""

    model_config = SettingsConfigDict(env_prefix="LOOPLINE_", extra="ignore", populate_by_name=True)
    # The README's table starts a section at each field named here (in declaration order).
    SECTIONS: ClassVar[dict[str, str]] = {
        "home": "Storage",
        "api_keys_file": "API",
        "max_file_bytes": "Ingestion",
        "monitoring_file": "Monitoring",
        "queue_url": "Jobs",
        "nats_url": "Event streams",
    }

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
    object_store_url: str | None = Field(
        None,
        description="Where frames and other objects live: `s3://BUCKET` or `s3://BUCKET/PREFIX` (boto3 finds "
        "credentials as usual: AWS_* variables, a profile, an instance role); the home folder if unset.",
    )
    s3_endpoint_url: str | None = Field(
        None, description="An S3-compatible server (MinIO, Ceph, …) instead of AWS, e.g. `http://minio:9000`."
    )

    # API
    api_keys_file: Path | None = Field(
        None, description="YAML file of users, keys and groups; home/api_keys.yaml if unset."
    )
    host: str = Field("127.0.0.1", description="Interface `loopline serve` binds.")
    port: int = Field(8000, description="Port `loopline serve` listens on.")
    metrics_enabled: bool = Field(True, description="Record Prometheus metrics and serve `GET /metrics`.")
    metrics_token: SecretStr | None = Field(
        None,
        description="Bearer token `GET /metrics` then requires; open to anyone who reaches the port if unset "
        "(expose it to the scraper's network only).",
    )

    devices_file: Path | None = Field(
        None, description="YAML of device ids, fleets and tokens; home/devices.yaml if unset."
    )

    # Ingestion (the core's limit; the documents vertical adds its own)
    max_file_bytes: int = Field(20_000_000, description="Larger files are dead-lettered.")
    ingest_roots: str = Field(
        "",
        description="Comma-separated folders under which API callers may name server paths (`POST /v1/admin/ingest`, "
        "jobs such as training data); none if empty. The local CLI hand-off is not limited.",
    )

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

    # Jobs (ingest, sync, training, export, evaluation, loop cycles)
    queue_url: str | None = Field(
        None,
        description="Celery broker that carries jobs to `loopline worker` processes, e.g. "
        "`amqp://guest:guest@rabbitmq:5672//` or `redis://redis:6379/0`; jobs run inside the API process if unset.",
    )
    queue_namespace: str = Field(
        "loopline",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Prefix of the broker's queue names (`NAMESPACE.default`, `NAMESPACE.train`): deployments "
        "sharing one broker keep their jobs apart.",
    )
    job_lease_s: float = Field(
        60.0,
        gt=0,
        description="A running job's worker renews its claim every third of this; a claim older than this is a "
        "lost worker's, and the job runs again.",
    )
    job_max_attempts: int = Field(
        3, ge=1, description="Tries of a job whose workers are lost mid-run before it fails with that reason."
    )
    jobs_in_process: int = Field(
        1, ge=1, description="Jobs the API process runs at once when no LOOPLINE_QUEUE_URL is set."
    )

    # Event streams (NATS JetStream: document events and frame announcements)
    nats_url: str | None = Field(
        None,
        description="NATS server with JetStream, e.g. `nats://nats:4222` (comma-separated for a cluster, `tls://` "
        "for TLS, `nats://USER:PASSWORD@HOST:4222` to log in): `loopline serve` then consumes document events "
        "(`PREFIX.documents.SOURCE`) and frame announcements (`PREFIX.frames.DEVICE`) on background threads; "
        "off if unset. `loopline rag consume-events` and `loopline vision consume-frames` read it too.",
    )
    nats_credentials_file: Path | None = Field(
        None, description="NATS user credentials (a `.creds` file: JWT and NKey seed) for servers that ask for them."
    )
    nats_prefix: str = Field(
        "loopline",
        pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$",
        description="First part of the subjects and stream names (`PREFIX_DOCUMENTS`, `PREFIX_FRAMES`, "
        "`PREFIX_DLQ`, created when missing): deployments sharing a NATS server keep apart.",
    )
    nats_max_deliver: int = Field(
        5,
        ge=1,
        description="Deliveries of an event whose write fails before it goes to the dead-letter subject "
        "`PREFIX.dlq.SUBJECT` (the durable consumer's own max_deliver is one more: an event whose last try never "
        "finished is dead-lettered too).",
    )
    nats_ack_wait_s: float = Field(
        60.0,
        gt=0,
        description="An event delivered but not acknowledged within this (its consumer died) is delivered again; "
        "a write in progress keeps extending it.",
    )
    nats_batch: int = Field(64, ge=1, le=1000, description="Events fetched, written and acknowledged together.")

    @property
    def resolved_devices_file(self) -> Path:
        return self.devices_file or self.home / "devices.yaml"

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


def sections() -> list[type[BaseModel]]:
    """The installed packages' settings sections, in a stable order."""
    return [ep.load() for ep in sorted(entry_points(group=SETTINGS_GROUP), key=lambda ep: ep.name)]


def _compose() -> type[CoreSettings]:
    return type(
        "Settings",
        (CoreSettings, *sections()),
        {
            "__module__": __name__,
            "__doc__": "All knobs (the core's and each installed package's), defaults for one machine.",
        },
    )


Settings = _compose()


# --- the README's configuration table ---------------------------------------------------
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


def _own_fields(cls: type[BaseModel]) -> list[str]:
    """The fields `cls` declares itself, in order (CoreSettings' base declares none)."""
    return [name for name in cls.__annotations__ if name in cls.model_fields and name != "SECTIONS"]


def markdown_table() -> str:
    """The configuration table of the README: the core's fields, then each section's, with a row naming each part."""
    lines = ["| variable | default | what it does |", "|---|---|---|"]
    for cls in (CoreSettings, *sections()):
        names = _own_fields(cls)
        if not names or names[0] not in cls.SECTIONS:
            raise ValueError(f"{cls.__name__}: its first field must start a section in its SECTIONS")
        unknown = set(cls.SECTIONS) - set(names)
        if unknown:
            raise ValueError(f"{cls.__name__}.SECTIONS names fields it does not have: {sorted(unknown)}")
        for name in names:
            field = Settings.model_fields[name]
            if name in cls.SECTIONS:
                lines.append(f"| **{cls.SECTIONS[name]}** | | |")
            if not field.description:
                raise ValueError(f"Settings.{name} has no description; the README's table is made from it")
            first, *others = (f"`{env}`" for env in env_names(name))
            variable = f"{first} (or {', '.join(others)})" if others else first
            description = field.description.replace("|", "\\|")
            lines.append(f"| {variable} | {_default_text(field)} | {description} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
