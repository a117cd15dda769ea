"""The ingestion core shared by both verticals.

Sources list items, change detection compares content hashes with the metadata store,
a vertical-specific `Indexer` turns items into index entries, rejected items become dead
letters, and every run is recorded. It knows nothing about chunks, embeddings or images.
"""

from shared.ingestion.changes import ChangePlan, plan_changes
from shared.ingestion.pipeline import Cancelled, Indexer, IngestPipeline, Prepared, Rejected, RunSummary
from shared.ingestion.records import item_hash, record_item
from shared.ingestion.schema import SchemaError, validate_record
from shared.ingestion.sources import (
    SourceItem,
    document_id,
    file_item,
    file_source,
    folder_source,
    scan_source,
    source_name,
)

__all__ = [
    "Cancelled",
    "ChangePlan",
    "plan_changes",
    "Indexer",
    "IngestPipeline",
    "Prepared",
    "Rejected",
    "RunSummary",
    "item_hash",
    "record_item",
    "SchemaError",
    "validate_record",
    "SourceItem",
    "document_id",
    "file_source",
    "folder_source",
    "scan_source",
    "source_name",
    "file_item",
]
