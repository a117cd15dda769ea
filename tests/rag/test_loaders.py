"""Loaders and chunking: every supported format reads, every broken file is refused clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
from docfiles import write_docx, write_docx_bomb, write_pdf

from rag.chunking import Chunker, minilm_tokenizer
from rag.loaders import LoadLimits, load_document
from shared.ingestion import Rejected


def test_markdown_title_and_front_matter(tmp_path: Path) -> None:
    p = tmp_path / "guide.md"
    p.write_text("---\nowner: ops\n---\n# Packing guide\n\nWrap every lamp twice.\n")
    doc = load_document(p)
    assert doc.title == "Packing guide"
    assert "owner: ops" not in doc.text
    assert doc.markdown


def test_pdf_text_and_metadata_title(tmp_path: Path) -> None:
    p = write_pdf(tmp_path / "policy.pdf", ["Badges must be worn in the lab.", "Visitors sign in."], title="Lab rules")
    doc = load_document(p)
    assert "Badges must be worn in the lab." in doc.text
    assert doc.title == "Lab rules"


def test_docx_text(tmp_path: Path) -> None:
    p = write_docx(tmp_path / "memo.docx", ["Quarterly memo", "The cafeteria closes at 15:00 on Fridays."])
    doc = load_document(p)
    assert "cafeteria closes at 15:00" in doc.text
    assert doc.title == "Quarterly memo"


def test_html_title_and_body(tmp_path: Path) -> None:
    p = tmp_path / "page.html"
    p.write_text("<html><head><title>Parking</title></head><body><p>Bikes go in the basement.</p></body></html>")
    doc = load_document(p)
    assert doc.title == "Parking"
    assert "Bikes go in the basement." in doc.text
    assert "<p>" not in doc.text


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("scan.pdf", b"JFIF not a pdf at all", "not a PDF"),
        ("broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog", "PDF"),
        ("notes.txt", b"abc\x00\x01\x02binary", "binary"),
        ("latin.md", "caf\xe9 au lait".encode("latin-1"), "UTF-8"),
        ("blank.md", b"   \n\n  ", "empty"),
        ("report.docx", b"not a zip", "DOCX"),
        ("photo.png", b"\x89PNG\r\n", "not a readable image"),
        ("table.csv", b"a,b\n1,2\n", "unsupported file type"),
    ],
)
def test_broken_files_are_rejected_with_a_reason(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(Rejected) as info:
        load_document(p)
    assert reason.lower() in info.value.reason.lower()


def test_chunks_fit_the_embedding_window_and_know_their_section(tmp_path: Path) -> None:
    body = " ".join(f"Rule {i} says that crates of type {i} stay below shelf {i % 7}." for i in range(120))
    p = tmp_path / "rules.md"
    p.write_text(f"# Warehouse rules\n\n## Storage\n\n{body}\n\n## Safety\n\nHelmets are mandatory.\n")
    chunks = Chunker(chunk_size=120, chunk_overlap=20).split(load_document(p))
    tok = minilm_tokenizer()
    assert len(chunks) > 3
    assert max(len(tok(c.text)) for c in chunks) <= 120
    assert {c.section for c in chunks} == {"Storage", "Safety"}
    assert [c.index for c in chunks] == list(range(len(chunks)))
    storage = [c for c in chunks if c.section == "Storage"]
    # Overlap: consecutive chunks share text.
    assert any(a.text[-40:].split()[-1] in b.text[:400] for a, b in zip(storage, storage[1:]))


def test_overlap_must_be_smaller_than_size() -> None:
    with pytest.raises(ValueError, match="chunk_overlap"):
        Chunker(chunk_size=50, chunk_overlap=50)


def test_html_drops_scripts_styles_and_comments(tmp_path: Path) -> None:
    p = tmp_path / "page.html"
    p.write_text(
        "<html><head><title>Canteen</title><script>var head = 'HEADSCRIPT';</script></head><body>"
        "<style>.menu { color: STYLERED; }</style><p>Soup is served at noon.</p>"
        "<script>fetch('/steal?c=' + document.cookie) /* BODYSCRIPT */</script>"
        "<noscript>NOSCRIPTTEXT</noscript><template><p>TEMPLATETEXT</p></template>"
        "<!-- COMMENTTEXT --><div>Cake on <b>Fridays</b>.<script>INNERSCRIPT()</script></div></body></html>"
    )
    doc = load_document(p)
    assert "Soup is served at noon." in doc.text and "Cake on Fridays." in doc.text
    for hidden in (
        "HEADSCRIPT",
        "STYLERED",
        "BODYSCRIPT",
        "document.cookie",
        "NOSCRIPTTEXT",
        "TEMPLATETEXT",
        "COMMENTTEXT",
        "INNERSCRIPT",
    ):
        assert hidden not in doc.text, hidden


def test_a_docx_that_unpacks_past_the_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    p = write_docx_bomb(tmp_path / "memo.docx", unpacked_bytes=3_000_000)
    assert p.stat().st_size < 100_000
    with pytest.raises(Rejected) as info:
        load_document(p, LoadLimits(max_unpacked_bytes=1_000_000))
    assert "1,000,000" in info.value.reason and "LOOPLINE_MAX_UNPACKED_BYTES" in info.value.reason
    assert "All work" in load_document(p, LoadLimits(max_unpacked_bytes=4_000_000, max_chars=10_000_000)).text


def test_text_over_the_character_limit_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "log.md"
    p.write_text("# Log\n\n" + "entry " * 50_000)  # one line, 300,000 characters
    with pytest.raises(Rejected) as info:
        load_document(p, LoadLimits(max_chars=100_000))
    assert "100,000" in info.value.reason and "LOOPLINE_MAX_DOCUMENT_CHARS" in info.value.reason
