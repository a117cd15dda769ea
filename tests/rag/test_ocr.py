"""Scanned documents: PNG/JPEG files and PDF pages without a text layer are read by Tesseract.

The pictures are drawn here (Pillow and Debian's DejaVu font), so the words are known; a PDF
mixing typed and scanned pages is a typed page (tests/helpers/docfiles) and a scan put together
with pypdf. Without Tesseract such files are dead letters that name the install command, not
empty documents.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from docfiles import write_pdf
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from pypdf import PdfWriter

from rag.chunking import TextChunk
from rag.loaders import load_document
from rag.parsing import ParseSpec, parse_file
from shared.auth import Principal
from shared.ingestion import Rejected

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
LINES = ["Badge replacement policy", "A lost badge is replaced by the front desk", "within two working days."]
TYPED = ["Visitors sign in at reception and wear a guest badge.", "Guests leave by the main door."]

pytestmark = pytest.mark.skipif(  # CI installs it (make ocr): there a missing Tesseract fails
    (shutil.which("tesseract") is None or not FONT.exists()) and not os.environ.get("CI"),
    reason="needs tesseract-ocr and DejaVu fonts (make ocr)",
)


def scan(lines: list[str] = LINES, *, poor: bool = False) -> Image.Image:
    """A clean scan (40 px black text), or a poor one: 8 px, faint and blurred, as a bad fax."""
    size, ink, scale = (8, 150, 0.25) if poor else (40, 0, 1.0)
    font = ImageFont.truetype(str(FONT), size)
    image = Image.new("L", (int(1400 * scale) + 50, int((90 * len(lines) + 60) * scale) + 20), 255)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((10 + 30 * scale, 10 + 90 * i * scale), line, fill=ink, font=font)
    return image.filter(ImageFilter.GaussianBlur(0.9)) if poor else image


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_an_image_is_read_with_its_confidence(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"badge-policy{suffix}"
    scan().save(path)
    doc = load_document(path)
    assert "front desk" in doc.text and "replaced" in doc.text
    assert doc.metadata["ocr"] is True and doc.metadata["ocr_confidence"] > 80
    assert doc.metadata["ocr_low_confidence"] is False


def chunks_of(path: Path) -> list[TextChunk]:
    return parse_file(path, ParseSpec(chunk_size=200, chunk_overlap=20)).chunks


def mixed_pdf(folder: Path, scanned_pages: int = 1) -> Path:
    """Page 1 typed (a text layer), then scanned pages (images only), as a copier appends them."""
    typed = write_pdf(folder / "typed.pdf", TYPED)
    scan().save(
        folder / "scanned.pdf", "PDF", resolution=100, save_all=True, append_images=[scan()] * (scanned_pages - 1)
    )
    writer = PdfWriter()
    writer.append(typed)
    writer.append(folder / "scanned.pdf")
    writer.write(folder / "visitors.pdf")
    return folder / "visitors.pdf"


def test_a_pdf_without_a_text_layer_is_read_page_by_page(tmp_path: Path) -> None:
    path = tmp_path / "scanned.pdf"
    pages = [scan(["Second page about parking"]), scan(["A third page sent by fax"], poor=True)]
    scan().save(path, "PDF", resolution=100, save_all=True, append_images=pages)
    by_page = {c.metadata["ocr_page"]: c for c in chunks_of(path)}
    assert "front desk" in by_page[1].text and "parking" in by_page[2].text
    assert all(c.metadata["ocr"] is True for c in by_page.values())
    assert by_page[1].metadata["ocr_confidence"] > 80 and by_page[1].metadata["ocr_low_confidence"] is False
    assert by_page[3].metadata["ocr_low_confidence"] is True, by_page[3].metadata  # the fax page, not the document


def test_a_pdf_mixing_typed_and_scanned_pages_keeps_both_in_order(tmp_path: Path) -> None:
    chunks = chunks_of(mixed_pdf(tmp_path))
    typed = [c for c in chunks if "guest badge" in c.text]
    scanned = [c for c in chunks if "front desk" in c.text]
    assert typed and scanned and typed[-1].index < scanned[0].index  # page order
    assert all("ocr" not in c.metadata for c in typed), typed
    assert all(c.metadata["ocr"] is True and c.metadata["ocr_page"] == 2 for c in scanned), scanned
    assert all(c.metadata["ocr_confidence"] > 80 for c in scanned)


def test_scanned_pages_over_the_limit_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "archive.pdf"
    blank = Image.new("L", (40, 40), 255)
    blank.save(path, "PDF", save_all=True, append_images=[blank] * 50)
    with pytest.raises(Rejected, match="51 scanned pages .*over the OCR limit of 50"):
        load_document(path)


def test_a_poor_scan_is_marked_low_confidence(tmp_path: Path) -> None:
    path = tmp_path / "faded.png"
    scan(poor=True).save(path)
    doc = load_document(path)
    assert doc.metadata["ocr_low_confidence"] is True and doc.metadata["ocr_confidence"] < 60, doc.metadata


def test_without_tesseract_the_file_is_a_dead_letter_naming_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import pytesseract

    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", str(tmp_path / "no-tesseract-here"))
    scan().save(tmp_path / "badge-policy.png")
    scan().save(tmp_path / "badge-policy.pdf", "PDF", resolution=100)
    for name in ("badge-policy.png", "badge-policy.pdf"):
        with pytest.raises(Rejected, match="apt-get install tesseract-ocr"):
            load_document(tmp_path / name)
    # A PDF with typed pages keeps them (as before OCR existed) and says what it could not read.
    doc = load_document(mixed_pdf(tmp_path))
    assert "guest badge" in doc.text and "front desk" not in doc.text
    assert "page(s) 2, which have no text layer" in caplog.text and "apt-get install tesseract-ocr" in caplog.text


def test_answers_cite_a_scan_with_its_confidence(make_service, tmp_path: Path) -> None:
    folder = tmp_path / "scans"
    folder.mkdir()
    scan().save(folder / "badge-policy.png")
    svc = make_service()
    run = svc.ingest(folder, ["public"])
    assert run.added == 1 and run.failed == 0
    answer = svc.ask("Who replaces a lost badge?", Principal(name="ada", groups=[]))
    assert not answer.abstained and answer.citations[0].source == "badge-policy.png"
    hits = svc.store.search(svc.query_embedder.embed_query("lost badge"), limit=1)
    assert hits[0].payload["ocr"] is True and hits[0].payload["ocr_confidence"] > 80
