"""Scanned documents: PNG/JPEG files and PDF pages without a text layer are read by Tesseract.

The pictures are drawn here (Pillow and Debian's DejaVu font), so the words are known. Without
Tesseract such files are dead letters that name the install command, not empty documents.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from rag.loaders import load_document
from shared.auth import Principal
from shared.ingestion import Rejected

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
LINES = ["Badge replacement policy", "A lost badge is replaced by the front desk", "within two working days."]

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


def test_a_pdf_without_a_text_layer_is_read_page_by_page(tmp_path: Path) -> None:
    path = tmp_path / "scanned.pdf"
    scan().save(path, "PDF", resolution=100, save_all=True, append_images=[scan(["Second page about parking"])])
    doc = load_document(path)
    assert "front desk" in doc.text and "parking" in doc.text
    assert doc.metadata["ocr"] is True


def test_a_poor_scan_is_marked_low_confidence(tmp_path: Path) -> None:
    path = tmp_path / "faded.png"
    scan(poor=True).save(path)
    doc = load_document(path)
    assert doc.metadata["ocr_low_confidence"] is True and doc.metadata["ocr_confidence"] < 60, doc.metadata


def test_without_tesseract_the_file_is_a_dead_letter_naming_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pytesseract

    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", str(tmp_path / "no-tesseract-here"))
    path = tmp_path / "badge-policy.png"
    scan().save(path)
    with pytest.raises(Rejected, match="apt-get install tesseract-ocr"):
        load_document(path)


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
