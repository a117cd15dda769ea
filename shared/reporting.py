"""Self-contained HTML report pages: headings, paragraphs, tables and matplotlib figures.

One page is one file with no external assets (figures are inlined as base64 PNG, the CSS is
inline), so a report can be mailed, attached to a CI run or opened from a file share. Text
is always HTML-escaped. It does not decide what to plot: callers build the figures (see
`new_figure`) and this module only lays them out. matplotlib is imported lazily and only
through its Agg canvas, so importing this module costs nothing and never picks a GUI backend.
"""

from __future__ import annotations

import base64
import html
import io
import math
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Cell values shown as coloured badges (status columns of gates, drift and freshness tables).
_BADGES = {
    "ok": "good",
    "pass": "good",
    "passed": "good",
    "succeeded": "good",
    "yes": "good",
    "warn": "warn",
    "warning": "warn",
    "partial": "warn",
    "no_reference": "muted",
    "no_data": "muted",
    "alert": "bad",
    "fail": "bad",
    "failed": "bad",
    "critical": "bad",
    "breached": "bad",
    "interrupted": "bad",
}

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif;
       margin: 2rem auto; max-width: 1100px; padding: 0 1.2rem; color: #1f2328; line-height: 1.45; }
h1 { font-size: 1.7rem; border-bottom: 2px solid #d0d7de; padding-bottom: .3rem; }
h2 { font-size: 1.3rem; margin-top: 2rem; border-bottom: 1px solid #d8dee4; padding-bottom: .2rem; }
h3 { font-size: 1.1rem; margin-top: 1.4rem; }
p.meta { color: #59636e; font-size: .9rem; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .9rem; }
th, td { border: 1px solid #d0d7de; padding: .3rem .6rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fbfcfd; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { color: #59636e; font-size: .9rem; margin-top: .3rem; }
.badge { padding: .05rem .45rem; border-radius: .6rem; font-weight: 600; font-size: .85rem; }
.good { background: #dafbe1; color: #116329; }
.warn { background: #fff8c5; color: #7d4e00; }
.bad { background: #ffebe9; color: #a40e26; }
.muted { background: #eaeef2; color: #59636e; }
"""


def new_figure(width: float = 7.0, height: float = 3.6) -> Figure:
    """A matplotlib Figure on the Agg canvas (no pyplot, no global figure registry)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Figure, *, dpi: int = 110) -> bytes:
    """The figure rendered as PNG bytes (what a report embeds; also handy to look at one)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _close(fig: Figure) -> None:
    """Release a figure; only pyplot keeps figures alive, so only then is there work to do."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)


def format_cell(value: Any) -> str:
    """A table cell as text: floats to 4 significant digits, None as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, (list, tuple)):
        return ", ".join(format_cell(v) for v in value)
    return str(value)


class HtmlReport:
    """Build a page block by block, then `html()` or `write(path)`."""

    def __init__(self, title: str, *, generated_at: datetime | None = None) -> None:
        self.title = title
        self.generated_at = generated_at
        self._blocks: list[str] = []

    def heading(self, text: str, level: int = 2) -> HtmlReport:
        level = min(max(int(level), 2), 4)  # h1 is the page title
        self._blocks.append(f"<h{level}>{html.escape(text)}</h{level}>")
        return self

    def paragraph(self, text: str) -> HtmlReport:
        self._blocks.append(f"<p>{html.escape(text)}</p>")
        return self

    def table(self, rows: Sequence[Mapping[str, Any]], columns: list[str] | None = None) -> HtmlReport:
        """One row per mapping; columns default to the keys in order of first appearance."""
        if columns is None:
            columns = []
            for row in rows:
                columns.extend(k for k in row if k not in columns)
        if not rows:
            self._blocks.append('<p class="meta">(no rows)</p>')
            return self
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
        body = []
        for row in rows:
            cells = []
            for c in columns:
                value = row.get(c)
                text = html.escape(format_cell(value))
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    cells.append(f'<td class="num">{text}</td>')
                elif isinstance(value, str) and value.lower() in _BADGES:
                    cells.append(f'<td><span class="badge {_BADGES[value.lower()]}">{text}</span></td>')
                else:
                    cells.append(f"<td>{text}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        self._blocks.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
        return self

    def figure(self, fig: Figure, caption: str = "") -> HtmlReport:
        """Embed the figure as a base64 PNG and close it."""
        try:
            data = base64.b64encode(figure_png(fig)).decode("ascii")
        finally:
            _close(fig)
        alt = html.escape(caption or "figure", quote=True)
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self._blocks.append(f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">{cap}</figure>')
        return self

    def html(self) -> str:
        title = html.escape(self.title)
        meta = ""
        if self.generated_at is not None:
            meta = f'<p class="meta">Generated {html.escape(format_cell(self.generated_at))}</p>'
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title>'
            f"<style>{_CSS}</style></head><body><h1>{title}</h1>{meta}\n"
            + "\n".join(self._blocks)
            + "\n</body></html>\n"
        )

    def write(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.html(), encoding="utf-8")
        return path
