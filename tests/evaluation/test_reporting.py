"""Report pages open anywhere: one file, figures inlined as PNG, every text escaped."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from shared.reporting import HtmlReport, figure_png, format_cell, new_figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _bar_figure():
    fig = new_figure(4, 3)
    ax = fig.add_subplot()
    ax.bar(["scratch", "spot", "crack"], [0.8, 0.5, 0.2])
    return fig


def test_written_page_embeds_a_decodable_png_and_needs_no_other_file(tmp_path: Path) -> None:
    page = HtmlReport("Detector evaluation").heading("Per class").figure(_bar_figure(), "AP50 per class")
    path = page.write(tmp_path / "out" / "report.html")

    text = path.read_text(encoding="utf-8")
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == 1
    png = base64.b64decode(images[0])
    assert png.startswith(PNG_MAGIC) and len(png) > 2_000  # a drawn chart, not an empty stub
    assert "AP50 per class" in text
    # Nothing to fetch: no external scripts, stylesheets or images.
    assert not re.search(r'(src|href)="(https?:)?//', text)
    assert "<link" not in text and "<script" not in text


def test_text_and_table_cells_are_escaped() -> None:
    page = HtmlReport("<b>title</b>")
    page.paragraph("answer <script>alert(1)</script> & more")
    page.table([{"question": "is 3 < 4?", "value": 0.123456, "missing": None, "status": "fail"}])
    html = page.html()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in html
    assert "<title>&lt;b&gt;title&lt;/b&gt;</title>" in html
    assert "is 3 &lt; 4?" in html
    assert ">0.1235<" in html  # floats to 4 significant digits
    assert ">—<" in html  # None shown as a dash, not "None"
    assert 'class="badge bad"' in html  # a failed status stands out


def test_table_columns_follow_first_appearance_and_can_be_chosen() -> None:
    rows = [{"b": 1, "a": 2}, {"c": 3}]
    html = HtmlReport("t").table(rows).html()
    assert re.findall(r"<th>(\w)</th>", html) == ["b", "a", "c"]
    chosen = HtmlReport("t").table(rows, ["c"]).html()
    assert re.findall(r"<th>(\w)</th>", chosen) == ["c"]


def test_figure_png_renders_a_figure_made_without_pyplot() -> None:
    assert figure_png(_bar_figure()).startswith(PNG_MAGIC)


def test_cells_of_odd_values_stay_readable() -> None:
    assert format_cell(float("nan")) == "—"
    assert format_cell(True) == "yes"
    assert format_cell([0.5, "x"]) == "0.5, x"
    assert format_cell(12_345_678.0) == "12,345,678"
