"""The metadata store: documents, ingest runs and dead letters (SQLAlchemy 2), and the schema's migrations.

Other packages' tables (feedback, dataset versions, alerts, drift) live in those packages,
on the same declarative `Base` and database; `migrate.py` keeps all of them at one revision.
"""

from shared.metadata.store import MetadataStore
from shared.metadata.tables import DeadLetter, DocumentRow, IngestRun

__all__ = ["MetadataStore", "DocumentRow", "IngestRun", "DeadLetter"]
