"""The metadata store: documents, ingest runs, dead letters and feedback (SQLAlchemy 2)."""

from shared.metadata.store import MetadataStore
from shared.metadata.tables import DeadLetter, DocumentRow, Feedback, IngestRun

__all__ = ["MetadataStore", "DocumentRow", "IngestRun", "DeadLetter", "Feedback"]
