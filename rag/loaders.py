"""Document loaders: a file on disk → title and text sections, or a clear rejection.

PDF and DOCX go through llama-index's file readers (a PDF page without a text layer, and
PNG/JPEG images, through OCR: rag.ocr), HTML through BeautifulSoup (scripts,
styles and other non-content elements dropped); Markdown and plain text are decoded strictly
(UTF-8) so binary junk is refused rather than indexed as noise. Every failure raises
`Rejected` with a reason a user can act on; it becomes a dead letter. Limits on what a file
may unpack to and yield are checked here; time is bounded by the caller (the parse worker).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.ingestion import Rejected

if TYPE_CHECKING:
    from rag.ocr import OcrText

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}  # read by OCR (rag.ocr)
SUPPORTED_SUFFIXES = {".md", ".markdown", ".txt", ".html", ".htm", ".pdf", ".docx", *IMAGE_SUFFIXES}
_MD_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.MULTILINE)
_FRONT_MATTER = re.compile(r"\A---\s*\n.*?\n---\s*\n", re.DOTALL)
MIN_PAGE_CHARS = 20  # a PDF page with fewer non-blank characters in its text layer is a scan (maybe stamped)


@dataclass(frozen=True)
class LoadLimits:
    """How much one file may unpack to and yield; over either, it is rejected with the limit named."""

    max_unpacked_bytes: int = 50_000_000
    max_chars: int = 1_000_000


@dataclass(frozen=True)
class Part:
    """A stretch of a document with metadata of its own (an OCRed PDF page), chunked apart from the rest."""

    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadedDocument:
    title: str
    text: str
    markdown: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)  # goes with every chunk (e.g. OCR confidence)
    parts: list[Part] = field(default_factory=list)  # `text` in stretches, when they differ in metadata

    def pieces(self) -> list[Part]:
        """What the chunker splits: each part with the document's metadata under its own, or the whole text."""
        if not self.parts:
            return [Part(self.text, self.metadata)]
        return [Part(p.text, {**self.metadata, **p.metadata}) for p in self.parts]


def load_document(path: Path, limits: LoadLimits = LoadLimits()) -> LoadedDocument:
    """Load one file; raises Rejected for unsupported, corrupt, binary, empty or oversized content."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise Rejected(
            f"unsupported file type '{suffix or path.name}' (supported: {', '.join(sorted(SUPPORTED_SUFFIXES))})"
        )
    if suffix in {".md", ".markdown", ".txt"}:
        doc = _load_text(path, markdown=suffix != ".txt")
    elif suffix in {".html", ".htm"}:
        doc = _load_html(path)
    elif suffix == ".pdf":
        doc = _load_pdf(path)
    elif suffix in IMAGE_SUFFIXES:
        doc = _load_image(path)
    else:
        doc = _load_docx(path, limits.max_unpacked_bytes)
    if not doc.text.strip():
        raise Rejected("no text could be extracted (empty document)")
    if len(doc.text) > limits.max_chars:
        raise Rejected(
            f"yields {len(doc.text):,} characters of text, over the limit of {limits.max_chars:,} "
            "(raise LOOPLINE_MAX_DOCUMENT_CHARS to accept it, or split the document)"
        )
    return doc


def _decode(path: Path) -> str:
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise Rejected(f"binary content (NUL bytes) in a {path.suffix} file; not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Rejected(f"not valid UTF-8 text (byte {exc.start}: {exc.reason}); re-save it as UTF-8") from None


def _load_text(path: Path, *, markdown: bool) -> LoadedDocument:
    text = _decode(path)
    if markdown:
        text = _FRONT_MATTER.sub("", text, count=1)
        m = _MD_HEADING.search(text)
        title = m.group(2).strip() if m and len(m.group(1)) == 1 else _title_from_name(path)
    else:
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
        title = first[:120] if 0 < len(first) <= 120 else _title_from_name(path)
    return LoadedDocument(title=title, text=text, markdown=markdown)


_NOT_CONTENT = ("script", "style", "noscript", "template", "head", "svg", "iframe", "object")


def _load_html(path: Path) -> LoadedDocument:
    """The visible text of the body: code, styles and other non-content elements are dropped."""
    from bs4 import BeautifulSoup, NavigableString, Tag

    soup = BeautifulSoup(_decode(path), "html.parser")
    title = soup.title.get_text(strip=True) if soup.title else ""
    for element in soup.find_all(_NOT_CONTENT):
        element.decompose()
    body = soup.body or soup
    # Plain strings only: comments, CDATA and doctype nodes are strings of other types.
    parts = (
        el.get_text().strip() if isinstance(el, Tag) else el.strip() if type(el) is NavigableString else ""
        for el in body.children
    )
    text = "\n".join(p for p in parts if p)
    return LoadedDocument(title=title or _title_from_name(path), text=text)


def _load_pdf(path: Path) -> LoadedDocument:
    from llama_index.readers.file import PDFReader

    head = path.read_bytes()[:1024]
    if b"%PDF-" not in head:
        raise Rejected(f"not a PDF (starts with {head[:8]!r})")
    try:
        pages = [p.text for p in PDFReader(return_full_document=False).load_data(path)]
    except Exception as exc:  # pypdf raises many types for broken files
        raise Rejected(f"corrupt PDF: {type(exc).__name__}: {exc}") from None
    parts = _pdf_parts(path, pages)
    text = "\n\n".join(p.text for p in parts)
    title = _title_from_name(path)
    try:
        from pypdf import PdfReader

        meta_title = (PdfReader(str(path)).metadata or {}).get("/Title")
        if meta_title and str(meta_title).strip():
            title = str(meta_title).strip()
    except Exception:  # metadata is optional; the text already loaded
        log.debug("no PDF metadata title for %s", path)
    return LoadedDocument(title=title, text=text, parts=parts)


def _pdf_parts(path: Path, pages: list[str]) -> list[Part]:
    """The pages in order: runs of text-layer pages as they are, each page without one through OCR.

    When OCR cannot run (no Tesseract, too many scanned pages, a page too large), a PDF with
    text-layer pages keeps those with a warning; one without any is rejected with the reason.
    """
    scanned = [i for i, page in enumerate(pages) if len("".join(page.split())) < MIN_PAGE_CHARS]
    ocr: dict[int, OcrText] = {}
    if scanned:
        from rag.ocr import read_pdf_pages

        try:
            ocr = read_pdf_pages(path, scanned)
        except Rejected as rej:
            if len(scanned) == len(pages):
                raise
            log.warning(
                "%s: OCR could not read page(s) %s, which have no text layer (%s); only the text layer is indexed",
                path,
                ", ".join(str(i + 1) for i in scanned),
                rej.reason,
            )
    parts: list[Part] = []
    for read, run in groupby(range(len(pages)), key=lambda i: i in ocr):
        if read:
            parts.extend(Part(ocr[i].text, {**ocr[i].metadata, "ocr_page": i + 1}) for i in run)
        elif (text := "\n".join(pages[i] for i in run)).strip():  # joined as llama-index joins a whole PDF
            parts.append(Part(text))
    if scanned and not parts:  # every page a scan, and no word on any
        raise Rejected("no text found by OCR on any page of this scanned PDF")
    return parts


def _load_image(path: Path) -> LoadedDocument:
    from PIL import Image

    from rag.ocr import MAX_PIXELS, read_image

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:  # only the decoders of the supported types; ultralytics, once imported, wraps Image.open
        with Image.open(path, formats=["PNG", "JPEG"]) as opened:
            opened.load()
            image = opened.copy()
    except Exception as exc:  # noqa: BLE001 - a broken file raises many types; all mean the same here
        log.debug("%s: %s: %s", path, type(exc).__name__, exc)
        raise Rejected(
            f"not a readable image (the {path.suffix.lower()} file does not decode as PNG or JPEG)"
        ) from None
    ocr = read_image(image, what="this image")
    return LoadedDocument(title=_title_from_name(path), text=ocr.text, metadata=ocr.metadata)


def _load_docx(path: Path, max_unpacked_bytes: int) -> LoadedDocument:
    import zipfile

    from llama_index.readers.file import DocxReader

    if not zipfile.is_zipfile(path):
        raise Rejected("corrupt DOCX (not a zip container)")
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise Rejected(f"corrupt DOCX: {exc}") from None
    if unpacked > max_unpacked_bytes:  # a zip bomb: small on disk, huge once inflated
        raise Rejected(
            f"unpacks to {unpacked:,} bytes, over the limit of {max_unpacked_bytes:,} "
            "(raise LOOPLINE_MAX_UNPACKED_BYTES to accept it)"
        )
    try:
        docs = DocxReader().load_data(path)
    except Exception as exc:
        raise Rejected(f"corrupt DOCX: {type(exc).__name__}: {exc}") from None
    text = "\n\n".join(d.text for d in docs)
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    title = first if 0 < len(first) <= 120 else _title_from_name(path)
    return LoadedDocument(title=title, text=text)


def _title_from_name(path: Path) -> str:
    stem = path.stem if path.stem.lower() != "index" else path.parent.name or path.stem
    return re.sub(r"[-_]+", " ", stem).strip().capitalize()
