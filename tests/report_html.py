"""Read a written report back (sections, tables with exact cell values, images, links), and open
it in headless Chromium."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path


@dataclass
class ParsedTable:
    id: str
    header: list[str] = field(default_factory=list)
    rows: list[list[tuple[str, str | None]]] = field(default_factory=list)  # (text, data-value)

    def records(self) -> list[dict[str, tuple[str, str | None]]]:
        return [dict(zip(self.header, row, strict=True)) for row in self.rows]


class ReportParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.tables: dict[str, ParsedTable] = {}
        self.img_srcs: list[str] = []
        self.links: list[tuple[str, str, str]] = []  # (tag, attribute, value) of every src/href
        self.plots: list[str] = []
        self._table: ParsedTable | None = None
        self._cell: list[str] | None = None
        self._cell_value: str | None = None
        self._row: list[tuple[str, str | None]] | None = None
        self._in_head = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for key in ("src", "href"):
            if a.get(key) is not None:
                self.links.append((tag, key, a[key] or ""))
        if tag == "section":
            self.sections.append(a.get("id") or "")
        elif tag == "figure" and a.get("data-plot"):
            self.plots.append(a["data-plot"] or "")
        elif tag == "img":
            self.img_srcs.append(a.get("src") or "")
        elif tag == "table":
            self._table = ParsedTable(a.get("id") or f"table{len(self.tables)}")
        elif tag == "thead":
            self._in_head = True
        elif tag == "tr" and self._table is not None and not self._in_head:
            self._row = []
        elif tag in ("th", "td"):
            self._cell = []
            self._cell_value = a.get("data-value")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("th", "td") and self._cell is not None and self._table is not None:
            text = "".join(self._cell).strip()
            if tag == "th":
                self._table.header.append(text)
            elif self._row is not None:
                self._row.append((text, self._cell_value))
            self._cell = None
        elif tag == "thead":
            self._in_head = False
        elif tag == "tr" and self._row is not None and self._table is not None:
            self._table.rows.append(self._row)
            self._row = None
        elif tag == "table" and self._table is not None:
            self.tables[self._table.id] = self._table
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def parse(html: str) -> ReportParser:
    parser = ReportParser()
    parser.feed(html)
    return parser


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

# After load, record how many <img> decoded to a real bitmap; --dump-dom prints the result.
PROBE = """<script>
window.addEventListener("load", function () {
  var imgs = Array.from(document.images);
  var drawn = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-probe", drawn + "/" + imgs.length + "/" +
    document.querySelectorAll("section").length);
});
</script>"""


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        # Any host name fails to resolve: a report that needs the network cannot draw.
        "--host-resolver-rules=MAP * ~NOTFOUND",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
