"""One file (or a record's text) → title and chunks, within the per-document limits; what the parse worker runs.

This is the part of ingestion that reads untrusted bytes, so it runs in the ingestion core's
`ParseWorker` child process (killed at LOOPLINE_PARSE_TIMEOUT_S). Everything it needs is in
its arguments, so it can be pickled there; it never touches the stores or the embedder.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from rag.chunking import Chunker, TextChunk
from rag.loaders import LoadedDocument, LoadLimits, load_document
from shared.ingestion import Rejected


@dataclass(frozen=True)
class ParseSpec:
    chunk_size: int
    chunk_overlap: int
    limits: LoadLimits = LoadLimits()
    max_chunks: int = 2_000


@dataclass(frozen=True)
class ParsedDocument:
    title: str
    chunks: list[TextChunk]


@lru_cache(maxsize=4)
def _chunker(chunk_size: int, chunk_overlap: int) -> Chunker:
    return Chunker(chunk_size, chunk_overlap)


def parse_file(path: Path, spec: ParseSpec) -> ParsedDocument:
    """Load and chunk one file; raises Rejected with the reason (and the limit) a user can act on."""
    return _chunk(load_document(path, spec.limits), spec)


def parse_text(title: str, text: str, spec: ParseSpec) -> ParsedDocument:
    """Chunk a record's text (a table row, an event), read as Markdown, within the same limits."""
    if len(text) > spec.limits.max_chars:
        raise Rejected(
            f"has {len(text):,} characters of text, over the limit of {spec.limits.max_chars:,} "
            "(raise LOOPLINE_MAX_DOCUMENT_CHARS to accept it)"
        )
    if not text.strip():
        raise Rejected("no text (the text is empty or only whitespace)")
    return _chunk(LoadedDocument(title=title, text=text, markdown=True), spec)


def _chunk(doc: LoadedDocument, spec: ParseSpec) -> ParsedDocument:
    chunks = _chunker(spec.chunk_size, spec.chunk_overlap).split(doc)
    if not chunks:
        raise Rejected("no text could be extracted (empty document)")
    if len(chunks) > spec.max_chunks:
        raise Rejected(
            f"yields {len(chunks):,} chunks, over the limit of {spec.max_chunks:,} "
            "(raise LOOPLINE_MAX_DOCUMENT_CHUNKS to accept it, or split the document)"
        )
    return ParsedDocument(title=doc.title, chunks=chunks)
