"""The HTML page: one self-contained file (styles, script and images inline; nothing fetched).

Interactive figures share one copy of plotly.js, inlined in the page's head; big tables sit in
closed `<details>` and sort by a click on a header (a few lines of script at the end).
"""

from __future__ import annotations

import base64

import jinja2

from orchestrator.report.interactive import EXPLORER_JS
from orchestrator.report.sections import Section

TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="lvmbench report">
<title>{{ title }}</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: #1d2430; background: #f6f7f9; }
header { background: #1d2430; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0; color: #c8cdd6; font-size: 13px; }
nav { padding: 8px 32px; background: #e9ecf1; font-size: 13px; position: sticky; top: 0; z-index: 1; }
nav a { margin-right: 14px; color: #234; text-decoration: none; }
nav a:hover { text-decoration: underline; }
main { padding: 8px 32px 40px; max-width: 1500px; }
section { background: #fff; border-radius: 6px; padding: 14px 20px; margin: 18px 0;
          box-shadow: 0 1px 2px rgba(0,0,0,.08); }
section h2 { margin-top: 4px; font-size: 18px; }
section h3 { font-size: 15px; margin: 14px 0 4px; color: #2d3748; }
.intro { color: #4a5568; font-size: 13px; }
figure { margin: 10px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e2e6ec; }
figcaption { font-size: 12px; color: #4a5568; }
.tablewrap { overflow-x: auto; margin: 10px 0; }
table { border-collapse: collapse; font-size: 12px; }
caption { text-align: left; font-weight: 600; padding: 4px 0; }
th, td { border: 1px solid #dde2e8; padding: 3px 7px; white-space: nowrap; }
th { background: #eef1f5; cursor: pointer; user-select: none; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.best td { background: #e8f6ec; font-weight: 600; }
ul.findings li { margin: 4px 0; }
details.table { margin: 10px 0; }
details.table > summary { cursor: pointer; font-weight: 600; font-size: 13px; }
.explorer .controls { font-size: 13px; display: flex; flex-wrap: wrap; gap: 10px; align-items: center; }
.explorer select { max-width: 260px; }
.explorer .recommendation { background: #eef6ff; border-left: 4px solid #2b6cb0; padding: 6px 10px;
                            font-size: 13px; }
footer { color: #6b7280; font-size: 12px; padding: 0 32px 24px; }
</style>
{% if plotly_js %}<script>{{ plotly_js|safe }}</script>
<script>{{ explorer_js|safe }}</script>{% endif %}
</head>
<body>
<header>
<h1>{{ title }}</h1>
<p>{{ subtitle }}</p>
</header>
<nav>{% for s in sections %}<a href="#{{ s.id }}">{{ s.title }}</a>{% endfor %}</nav>
<main>
{% for s in sections %}
<section id="{{ s.id }}" class="report-section">
<h2>{{ s.title }}</h2>
{% if s.intro %}<p class="intro">{{ s.intro }}</p>{% endif %}
{% for part in s.parts %}
{% if part.heading %}<h3>{{ part.heading }}</h3>{% endif %}
{% if part.bullets %}<ul class="findings">{% for b in part.bullets %}<li>{{ b }}</li>{% endfor %}</ul>{% endif %}
{% for p in part.plots %}
<figure class="plot" data-plot="{{ p.name }}">
<img alt="{{ p.title }}" src="data:image/png;base64,{{ png64(p.png) }}">
<figcaption>{{ p.title }} (also saved as {{ plot_dir }}/{{ p.name }}.png)</figcaption>
</figure>
{% endfor %}
{% for h in part.html %}
<div class="iplot">{{ h|safe }}</div>
{% endfor %}
{% for t in part.tables %}
{% if t.collapsed %}<details class="table"><summary>{{ t.caption }} ({{ t.rows|length }} rows; click to open)</summary>{% endif %}
<div class="tablewrap"><table class="sortable"{% if t.id %} id="{{ t.id }}"{% endif %}>
<caption>{{ t.caption }}</caption>
<thead><tr>{% for h in t.header %}<th>{{ h }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in t.rows %}<tr{% if loop.index0 in t.highlight %} class="best"{% endif %}>{% for c in row %}<td{% if c.value is number %} class="num" data-value="{{ c.value }}"{% endif %}>{{ c.text }}</td>{% endfor %}</tr>
{% endfor %}</tbody>
</table></div>
{% if t.collapsed %}</details>{% endif %}
{% endfor %}
{% endfor %}
</section>
{% endfor %}
</main>
<footer>Written by lvmbench from the Parquet tables in {{ root }}. Load them yourself with
<code>pandas.read_parquet("{{ root }}/epochs")</code>.</footer>
<script>
// Click a header to sort by that column (numbers by their exact data-value).
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.from(body.rows);
      var asc = th.dataset.dir !== "asc"; th.dataset.dir = asc ? "asc" : "desc";
      function key(r) { var c = r.cells[col]; var v = c.dataset.value;
        return v !== undefined ? parseFloat(v) : c.textContent; }
      rows.sort(function (a, b) { var x = key(a), y = key(b);
        var r = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
        return asc ? r : -r; });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
</script>
</body>
</html>
"""


def _png64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def render_page(
    *, title: str, subtitle: str, sections: list[Section], root: str, plot_dir: str
) -> str:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(TEMPLATE)
    interactive = any(part.html for s in sections for part in s.parts)
    plotly_js = ""
    if interactive:
        from plotly.offline import get_plotlyjs

        plotly_js = get_plotlyjs()
    return template.render(
        plotly_js=plotly_js,
        explorer_js=EXPLORER_JS,
        title=title,
        subtitle=subtitle,
        sections=sections,
        root=root,
        plot_dir=plot_dir,
        png64=_png64,
    )
