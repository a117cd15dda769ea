"""Text from pictures of text: Tesseract (Debian's `tesseract-ocr`) through pytesseract.

Scanned PDF pages and PNG/JPEG files carry no text layer; OCR reads them (a PDF page by
page), and the mean word confidence goes with the text so that answers quoting a poor scan can
say so. Without the Tesseract program such files are rejected with the command that installs
it, as before OCR existed, rather than indexed as empty.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
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


def read_pdf_pages(path: Any, pages: Sequence[int], *, dpi: int = 300, max_pages: int = 50) -> dict[int, OcrText]:
    """OCR of the given pages (0-based) of a PDF, rendered by pdfium (no poppler needed), by page.

    A page on which OCR finds no word (a blank or a picture) is left out; more pages than
    `max_pages`, or one over MAX_PIXELS at `dpi` (checked before rendering), rejects the file.
    """
    import pypdfium2 as pdfium

    if len(pages) > max_pages:
        raise Rejected(f"{len(pages)} scanned pages (no text layer), over the OCR limit of {max_pages}")
    scale = dpi / 72
    found: dict[int, OcrText] = {}
    try:
        pdf = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as exc:  # pypdf read it, pdfium cannot: render nothing rather than fail oddly
        raise Rejected(f"corrupt PDF: pdfium cannot open it to render its scanned pages ({exc})") from None
    try:
        for i in pages:
            page = pdf[i]
            width, height = (round(side * scale) for side in page.get_size())
            if width * height > MAX_PIXELS:
                raise Rejected(
                    f"page {i + 1} is {width}x{height} pixels at {dpi} dpi, over the OCR limit of {MAX_PIXELS:,}"
                )
            image = page.render(scale=scale).to_pil()
            try:
                found[i] = read_image(image, what=f"page {i + 1}")
            except Rejected as rej:
                if "no text found" not in rej.reason:
                    raise
                log.debug("%s: no text found by OCR on page %d", path, i + 1)
    finally:
        pdf.close()
    return found
