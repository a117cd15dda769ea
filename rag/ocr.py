"""Text from pictures of text: Tesseract (Debian's `tesseract-ocr`) through pytesseract.

Scanned PDF pages and PNG/JPEG files carry no text layer; OCR reads them, and the mean word
confidence goes with the text so that answers quoting a poor scan can say so. Without the
Tesseract program such files are rejected with the command that installs it, as before OCR
existed, rather than indexed as empty.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from shared.ingestion import Rejected

log = logging.getLogger(__name__)

LOW_CONFIDENCE = 60.0  # mean word confidence (0-100) under which OCR text is marked unreliable
MAX_PIXELS = 40_000_000  # a page or image larger than this is refused (decompression bombs)
INSTALL_HINT = "apt-get install tesseract-ocr tesseract-ocr-eng (make setup does it)"


@dataclass(frozen=True)
class OcrText:
    text: str
    confidence: float  # mean word confidence, 0-100
    words: int

    @property
    def metadata(self) -> dict[str, Any]:
        """What each chunk of this text carries in its payload."""
        return {
            "ocr": True,
            "ocr_confidence": round(self.confidence, 1),
            "ocr_low_confidence": self.confidence < LOW_CONFIDENCE,
        }


def read_image(image: Any, *, what: str) -> OcrText:
    """OCR of a PIL image, lines kept; Rejected when Tesseract is missing or finds no word."""
    import pytesseract

    if image.width * image.height > MAX_PIXELS:
        raise Rejected(f"{what} is {image.width}x{image.height} pixels, over the OCR limit of {MAX_PIXELS:,}")
    try:
        data = pytesseract.image_to_data(image.convert("RGB"), lang="eng", output_type=pytesseract.Output.DICT)
    except pytesseract.TesseractNotFoundError:
        raise Rejected(f"{what} needs OCR but Tesseract is not installed: {INSTALL_HINT}") from None
    except pytesseract.TesseractError as exc:
        if "Failed loading language" in str(exc):
            raise Rejected(f"{what} needs Tesseract's English data: {INSTALL_HINT}") from None
        raise Rejected(f"OCR of {what} failed: {exc}") from None
    lines: dict[tuple[int, int, int], list[str]] = {}
    confidences = []
    for word, conf, block, par, line in zip(
        data["text"], data["conf"], data["block_num"], data["par_num"], data["line_num"], strict=True
    ):
        if float(conf) < 0 or not str(word).strip():
            continue  # rows for blocks, paragraphs and lines, not words
        lines.setdefault((block, par, line), []).append(str(word))
        confidences.append(float(conf))
    if not confidences:
        raise Rejected(f"no text found by OCR in {what}")
    text = "\n".join(" ".join(words) for words in lines.values())
    return OcrText(text=text, confidence=sum(confidences) / len(confidences), words=len(confidences))


def read_pdf_pages(path: Any, *, dpi: int = 300, max_pages: int = 50) -> OcrText:
    """OCR of every page of a PDF without a text layer, rendered by pdfium (no poppler needed)."""
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(path))
    try:
        if len(pdf) > max_pages:
            raise Rejected(f"a scanned PDF of {len(pdf)} pages, over the OCR limit of {max_pages}")
        pages = []
        for i in range(len(pdf)):
            image = pdf[i].render(scale=dpi / 72).to_pil()
            try:
                pages.append(read_image(image, what=f"page {i + 1}"))
            except Rejected as rej:
                if "no text found" not in rej.reason:
                    raise
    finally:
        pdf.close()
    if not pages:
        raise Rejected("no text found by OCR on any page of this scanned PDF")
    words = sum(p.words for p in pages)
    confidence = sum(p.confidence * p.words for p in pages) / words
    return OcrText(text="\n\n".join(p.text for p in pages), confidence=confidence, words=words)
