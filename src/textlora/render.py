"""Rendering helpers shared by the run report, `compare` and `sweep`: tables as text, Markdown and HTML,
matplotlib figures as inline PNG, and a self-contained HTML page (no scripts, no external files)."""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#222;
 padding:0 16px}
h1{font-size:1.6em;margin-bottom:4px}h2{margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:4px 9px;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
.muted{color:#777}.good{color:#11772d}.bad{color:#b3261e}
pre{background:#f7f7f7;padding:10px;overflow:auto;font-size:.85em;max-height:480px}
img{max-width:100%;height:auto}figure{margin:8px 0}
.examples td{text-align:left;max-width:820px}
"""


def fmt(value: Any, digits: int = 4) -> str:
    """A table cell: floats rounded, None as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with aligned columns, for the terminal."""
    cells = [list(map(str, headers))] + [[fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table."""
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(fmt(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out)


def html_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], table_id: str | None = None,
               cls: str | None = None) -> str:
    """An HTML table; cells are escaped unless they are `Raw`."""
    attrs = (f' id="{table_id}"' if table_id else "") + (f' class="{cls}"' if cls else "")
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in r) + "</tr>\n" for r in rows)
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>"


class Raw(str):
    """Trusted HTML that `html_table` and `html_page` insert as is."""


def _cell(value: Any) -> str:
    return value if isinstance(value, Raw) else html.escape(fmt(value))


def figure_data_uri(fig: Any, dpi: int = 100) -> str:
    """Render a matplotlib figure to a `data:image/png;base64,...` URI and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def img(uri: str, alt: str, img_id: str | None = None) -> Raw:
    """An inline image element."""
    id_attr = f' id="{img_id}"' if img_id else ""
    return Raw(f'<figure><img{id_attr} alt="{html.escape(alt)}" src="{uri}"></figure>')


def pyplot() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def html_page(title: str, sections: Sequence[tuple[str, str]], subtitle: str = "") -> str:
    """A self-contained page: a title, then (heading, trusted HTML) sections."""
    parts = [f"<h2>{html.escape(h)}</h2>\n{body}" if h else body for h, body in sections]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
            f"<h1>{html.escape(title)}</h1>" + (f"<p class=\"muted\">{html.escape(subtitle)}</p>" if subtitle else "")
            + "\n" + "\n".join(parts) + "\n</body></html>\n")


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` atomically (a temporary file renamed into place)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def folder_bytes(path: str | Path) -> int:
    """Total size of the files under `path` (or of the file itself)."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
