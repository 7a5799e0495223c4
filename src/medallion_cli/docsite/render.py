"""HTML pages of the docs site, rendered from the catalog dict (pure functions: str out).

Everything a page needs is inline (CSS, a few lines of JS, SVG drawn here), so the site
opens from the file system with no network. Every value from the catalog is escaped.
"""

from __future__ import annotations

import re
from datetime import datetime
from html import escape
from typing import Any

from medallion_cli.docsite.layout import NODE_W, layout

STATUS_COLOURS = {  # fill, stroke
    "written": ("#e6f4ea", "#2e7d32"),
    "unchanged": ("#eef6ee", "#66a56a"),
    "failed": ("#fdecea", "#c62828"),
    "skipped": ("#fff6dc", "#c58f00"),
    "succeeded": ("#e6f4ea", "#2e7d32"),
    "interrupted": ("#fff6dc", "#c58f00"),
    "running": ("#e8f0fe", "#0b57d0"),
    None: ("#f1f3f4", "#80868b"),
}

CSS = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d0d7de;--bg:#fff;--accent:#0b57d0}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:var(--fg);background:var(--bg)}
header.top{display:flex;gap:18px;align-items:baseline;padding:10px 20px;border-bottom:1px solid var(--line);background:#f6f8fa;position:sticky;top:0;z-index:2}
header.top .brand{font-weight:700}header.top a{color:var(--fg);text-decoration:none}header.top a.active{color:var(--accent);font-weight:600}
main{padding:16px 20px;max-width:1400px}h1{font-size:22px;margin:4px 0 12px}h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid var(--line);padding-bottom:4px}
h3{font-size:15px;margin:16px 0 6px}a{color:var(--accent)}.muted{color:var(--muted)}code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
table.grid{border-collapse:collapse;margin:6px 0 12px}table.grid th,table.grid td{border:1px solid var(--line);padding:3px 8px;text-align:left;vertical-align:top}
table.grid th{background:#f6f8fa;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:0 7px;border-radius:9px;font-size:12px;border:1px solid;white-space:nowrap}
.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:6px 0}.facts dt{color:var(--muted)}.facts dd{margin:0}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:6px 0 10px}.card{border:1px solid var(--line);border-radius:8px;padding:8px 14px;min-width:120px}
.card b{display:block;font-size:20px}.card small{font-size:13px;font-weight:400}
.lineage-tools{display:flex;gap:6px;align-items:center;margin:6px 0}.lineage-tools button{font:inherit;padding:1px 9px}
#lineage{border:1px solid var(--line);border-radius:8px;overflow:auto;max-height:78vh;background:#fbfcfd;cursor:grab}
#lineage.dragging{cursor:grabbing}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif}
.column-head{font-size:12px;font-weight:600;fill:#59636e;text-transform:uppercase;letter-spacing:.04em}
.node rect{stroke-width:1.6}.node .name{font-size:13px;font-weight:600}.node .sub{font-size:11px;fill:#59636e}
.node.stale rect{stroke-dasharray:6 3}.node.hit rect{stroke:#0b57d0;stroke-width:3.5}
a.node-link:hover rect,a.node-link:focus rect{stroke-width:3}
.source rect{fill:#fff;stroke:#80868b;stroke-dasharray:4 3}.source .name{font-size:12px}.source .sub{font-size:11px;fill:#59636e}
.edge{fill:none;stroke:#8c959f;stroke-width:1.4}.edge-label{font-size:10.5px;fill:#3d444d;paint-order:stroke;stroke:#fbfcfd;stroke-width:4px;stroke-linejoin:round}
.legend{display:flex;gap:14px;flex-wrap:wrap;font-size:12px;margin:6px 0}.legend span{display:inline-flex;align-items:center;gap:5px}
.legend i{display:inline-block;width:14px;height:11px;border:1.6px solid;border-radius:3px}
.matrix td{text-align:center;min-width:46px;font-size:11.5px}.doc{white-space:pre-wrap;margin:2px 0 8px;color:#3d444d}
.charts{display:flex;flex-wrap:wrap;gap:16px}.chart{display:inline-block;border:1px solid var(--line);border-radius:6px;padding:6px 8px;vertical-align:top}
.tablecharts{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:4px 16px}
.chart svg text{font-size:10px;fill:#59636e}.error{color:#a50e0e}
"""

JS = """
(function(){
  var box=document.getElementById('lineage'); if(!box) return;
  var svg=box.querySelector('svg'); var w0=+svg.getAttribute('width'), h0=+svg.getAttribute('height'), k=1;
  function zoom(f){k=Math.max(0.2,Math.min(3,f)); svg.setAttribute('width',w0*k); svg.setAttribute('height',h0*k);
    document.getElementById('zoom-level').textContent=Math.round(k*100)+'%';}
  document.getElementById('zoom-in').onclick=function(){zoom(k*1.25)};
  document.getElementById('zoom-out').onclick=function(){zoom(k/1.25)};
  document.getElementById('zoom-fit').onclick=function(){zoom(Math.min(1,(box.clientWidth-4)/w0))};
  document.getElementById('zoom-reset').onclick=function(){zoom(1)};
  box.addEventListener('wheel',function(e){if(!e.ctrlKey)return; e.preventDefault(); zoom(e.deltaY<0?k*1.1:k/1.1);},{passive:false});
  var drag=null;
  box.addEventListener('mousedown',function(e){drag={x:e.clientX,y:e.clientY,l:box.scrollLeft,t:box.scrollTop,moved:false};});
  window.addEventListener('mousemove',function(e){if(!drag)return; var dx=e.clientX-drag.x, dy=e.clientY-drag.y;
    if(Math.abs(dx)+Math.abs(dy)>4){drag.moved=true; box.classList.add('dragging');}
    if(drag.moved){box.scrollLeft=drag.l-dx; box.scrollTop=drag.t-dy;}});
  window.addEventListener('mouseup',function(){setTimeout(function(){drag=null; box.classList.remove('dragging');},0);});
  box.addEventListener('click',function(e){if(drag&&drag.moved){e.preventDefault();}},true);
  var find=document.getElementById('find');
  find.addEventListener('input',function(){var q=find.value.trim().toLowerCase(), first=null;
    box.querySelectorAll('.node').forEach(function(n){var hit=q&&n.getAttribute('data-table').toLowerCase().indexOf(q)>=0;
      n.classList.toggle('hit',!!hit); if(hit&&!first)first=n;});
    if(first){var r=first.getBoundingClientRect(), b=box.getBoundingClientRect();
      box.scrollLeft+=r.left-b.left-b.width/2; box.scrollTop+=r.top-b.top-b.height/2;}});
})();
"""


# -- helpers --------------------------------------------------------------------------
def table_file(name: str) -> str:
    """The file name of a table's page (names are identifiers; anything else is replaced)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".html"


def _run_heads(entries: list[dict], *, year: bool = True) -> list[str]:
    """Column heads for runs: when each started, to the second, and where runs share that
    second, the end of their run id too, so that every column is told apart."""
    from collections import Counter

    labels = [e["started_at"][0 if year else 5:19].replace("T", " ") for e in entries]
    repeated = Counter(labels)
    return [f"{label} · {e['run_id'][-6:]}" if repeated[label] > 1 and e.get("run_id") else label
            for label, e in zip(labels, entries, strict=True)]


def _time(value: str | None) -> str:
    if not value:
        return "—"
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return escape(value)
    return escape(t.strftime("%Y-%m-%d %H:%M:%S UTC"))


def age_text(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    s = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s // size} {unit} ago"
    return f"{s} s ago"


def size_text(n: int | None) -> str:
    if n is None:
        return "—"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _num(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    return f"{value:,}" if isinstance(value, int) else escape(str(value))


def _dur(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds:.2f} s"


def badge(status: str | None) -> str:
    fill, stroke = STATUS_COLOURS.get(status, STATUS_COLOURS[None])
    return f'<span class="badge" style="background:{fill};border-color:{stroke}">{escape(status or "never run")}</span>'


def _grid(headers: list[str], rows: list[list[str]], *, numeric: set[int] = frozenset(), cls: str = "grid") -> str:
    """A table; cells are HTML already escaped by the caller."""
    if not rows:
        return '<p class="muted">none</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def page(catalog: dict[str, Any], title: str, body: str, *, active: str, depth: int = 0) -> str:
    up = "../" * depth
    nav = "".join(f'<a href="{up}{href}"{" class=active" if key == active else ""}>{label}</a>'
                  for key, href, label in (("index", "index.html", "Lineage"), ("runs", "runs.html", "Runs"),
                                           ("quality", "quality.html", "Quality"), ("catalog", "catalog.json", "catalog.json")))
    project = escape(catalog["project"]["name"])
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{escape(title)} · {project} · medallion</title><link rel="icon" href="data:,">'
            f"<style>{CSS}</style></head><body>"
            f'<header class="top"><span class="brand">{project}</span>{nav}'
            f'<span class="muted" style="margin-left:auto">generated {_time(catalog["generated_at"])}</span></header>'
            f"<main>{body}</main><script>{JS}</script></body></html>\n")


# -- lineage --------------------------------------------------------------------------
def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _label_lines(label: str) -> list[str]:
    """An edge label on at most two lines: the contract (and column), then the details."""
    head, sep, rest = label.partition(", ")
    return [head, rest] if sep else [head]


def lineage_svg(catalog: dict[str, Any]) -> str:
    tables = {t["table"]: t for t in catalog["tables"]}
    sources = [s for s in catalog["sources"]]
    ids = [f"source:{s['name']}" for s in sources] + list(tables)
    edge_ids = [((f"source:{e['from']}" if e["kind"] != "table" or e["from"] not in tables else e["from"]), e["to"], e)
                for e in catalog["edges"]]
    lay = layout(ids, [(a, b) for a, b, _ in edge_ids])
    head = 22  # a row of column headings: the layer tags found in each column
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{lay.width:.0f}" height="{lay.height + head:.0f}" '
             f'viewBox="0 0 {lay.width:.0f} {lay.height + head:.0f}" role="img" aria-label="table lineage">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
             'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#8c959f"/></marker></defs>']
    columns: dict[int, dict[str, None]] = {}
    for node_id, box in lay.boxes.items():
        tag = tables[node_id]["layer"] if node_id in tables else "sources"
        columns.setdefault(box.column, {}).setdefault(tag, None)
    for col, tags in sorted(columns.items()):
        x = min(b.x for b in lay.boxes.values() if b.column == col)
        parts.append(f'<text class="column-head" x="{x + NODE_W / 2:.1f}" y="16" text-anchor="middle">'
                     f'{escape(_clip(" · ".join(tags), 30))}</text>')
    parts.append(f'<g transform="translate(0,{head})">')
    labels: list[str] = []
    placed: list[tuple[float, float, float, float]] = []
    for a, b, e in edge_ids:
        s, t = lay.boxes[a], lay.boxes[b]
        x1, y1, x2, y2 = s.x + s.w, s.y + s.h / 2, t.x, t.y + t.h / 2
        mx = (x1 + x2) / 2
        parts.append(f'<path class="edge" d="M{x1:.1f},{y1:.1f} C{mx:.1f},{y1:.1f} {mx:.1f},{y2:.1f} {x2:.1f},{y2:.1f}" '
                     f'marker-end="url(#arrow)" data-from="{escape(e["from"])}" data-to="{escape(e["to"])}"/>')
        lines = [_clip(line, 30) for line in _label_lines(e["label"])]
        lw = 6.0 * max(len(line) for line in lines) + 8
        lh = 12.5 * len(lines) + 3
        lx, ly = _free_spot(placed, lw, lh, x1, y1, mx, x2, y2)
        placed.append((lx - lw / 2, ly - lh / 2, lw, lh))
        spans = "".join(f'<tspan x="{lx:.1f}" dy="{0 if i == 0 else 12.5}">{escape(line)}</tspan>'
                        for i, line in enumerate(lines))
        labels.append(f'<g class="edge-label-box"><title>{escape(e["label"])}</title>'
                      f'<rect x="{lx - lw / 2:.1f}" y="{ly - lh / 2:.1f}" width="{lw:.1f}" height="{lh:.1f}" rx="3" '
                      f'fill="#fbfcfd" fill-opacity="0.92"/>'
                      f'<text class="edge-label" text-anchor="middle" x="{lx:.1f}" y="{ly - lh / 2 + 11:.1f}">{spans}</text></g>')
    for src in sources:
        b = lay.boxes[f"source:{src['name']}"]
        kind = "landing folder" if src["kind"] == "landing" else "external table"
        parts.append(f'<g class="source" data-source="{escape(src["name"])}"><title>{escape(kind)}: {escape(src["name"])}</title>'
                     f'<rect x="{b.x}" y="{b.y}" width="{b.w}" height="{b.h}" rx="6"/>'
                     f'<text class="sub" x="{b.x + 10}" y="{b.y + 19}">{escape(kind)}</text>'
                     f'<text class="name" x="{b.x + 10}" y="{b.y + 38}">{escape(_clip(src["name"], 26))}</text></g>')
    for name, t in tables.items():
        b = lay.boxes[name]
        status = (t.get("last_run") or {}).get("status")
        fill, stroke = STATUS_COLOURS.get(status, STATUS_COLOURS[None])
        version = f"v{t['version']}" if t.get("version") is not None else "no table"
        fresh = t.get("freshness", "never")
        line2 = (f"{status or 'no run recorded'} · {version} · {age_text(t.get('age_s'))}" if t.get("version") is not None
                 else status or "never run")
        tip = f"{name} ({t['layer']}, {t['write_mode']}): last run {status or 'never'}, {version}, last commit {age_text(t.get('age_s'))}"
        parts.append(f'<a class="node-link" href="tables/{escape(table_file(name))}">'
                     f'<g class="node {escape(fresh)}" data-table="{escape(name)}" data-status="{escape(status or "never")}">'
                     f"<title>{escape(tip)}</title>"
                     f'<rect x="{b.x}" y="{b.y}" width="{b.w}" height="{b.h}" rx="8" fill="{fill}" stroke="{stroke}"/>'
                     f'<text class="name" x="{b.x + 10}" y="{b.y + 20}">{escape(_clip(name, 22))}</text>'
                     f'<text class="sub" x="{b.x + 10}" y="{b.y + 36}">{escape(_clip(t["layer"] + " · " + t["write_mode"], 28))}</text>'
                     f'<text class="sub" x="{b.x + 10}" y="{b.y + 49}">{escape(_clip(line2, 28))}</text></g></a>')
    parts.extend(labels)  # on top of edges and boxes
    parts.append("</g></svg>")
    return "".join(parts)


def _free_spot(placed: list[tuple[float, float, float, float]], w: float, h: float,
               x1: float, y1: float, mx: float, x2: float, y2: float) -> tuple[float, float]:
    """The first point along the edge's curve (middle first, then outwards) where a label
    of ``w`` x ``h`` overlaps no label placed before; the middle if none is free."""
    def point(f: float) -> tuple[float, float]:
        u = 1 - f
        return (u**3 * x1 + 3 * u * u * f * mx + 3 * u * f * f * mx + f**3 * x2,
                u**3 * y1 + 3 * u * u * f * y1 + 3 * u * f * f * y2 + f**3 * y2)

    for f in (0.5, 0.35, 0.65, 0.22, 0.78, 0.12, 0.88):
        cx, cy = point(f)
        if cx - w / 2 < x1 - 4 or cx + w / 2 > x2 + 4:
            continue
        if all(cx + w / 2 <= px or px + pw <= cx - w / 2 or cy + h / 2 <= py or py + ph <= cy - h / 2
               for px, py, pw, ph in placed):
            return cx, cy
    return point(0.5)


def _legend(catalog: dict[str, Any]) -> str:
    items = [(s or "never run", *STATUS_COLOURS[s]) for s in ("written", "unchanged", "failed", "skipped", None)]
    spans = "".join(f'<span><i style="background:{f};border-color:{s}"></i>{escape(n)}</span>' for n, f, s in items)
    stale = catalog["project"]["stale_after_hours"]
    return (f'<div class="legend">{spans}<span><i style="border-style:dashed;border-color:#59636e"></i>'
            f"dashed: last commit older than {stale} h</span><span>dashed grey: landing folders</span></div>")


def index_page(catalog: dict[str, Any]) -> str:
    tables = catalog["tables"]
    runs = catalog["runs"]
    last = runs[0] if runs else None
    cards = [("tables", str(len(tables))), ("layers", str(len(catalog["layers"]))),
             ("rows", f"{sum(t['rows'] or 0 for t in tables):,}"),
             ("last run", badge(last["status"]) + f' <small class="muted">{_time(last["started_at"])}</small>' if last else "none")]
    body = [f'<h1>{escape(catalog["project"]["name"])}: lineage</h1>',
            '<div class="cards">' + "".join(f'<div class="card"><span class="muted">{escape(k)}</span><b>{v}</b></div>'
                                            for k, v in cards) + "</div>",
            '<div class="lineage-tools"><button id="zoom-out" title="zoom out">−</button><span id="zoom-level">100%</span>'
            '<button id="zoom-in" title="zoom in">+</button><button id="zoom-fit">fit width</button>'
            '<button id="zoom-reset">100%</button><input id="find" type="search" placeholder="find a table" '
            'style="margin-left:10px"><span class="muted">drag to pan, ctrl+wheel to zoom, click a table to open it</span></div>',
            _legend(catalog), f'<div id="lineage">{lineage_svg(catalog)}</div>', "<h2>Tables</h2>"]
    rows = []
    for t in tables:
        lr = t.get("last_run") or {}
        rows.append([f'<a href="tables/{escape(table_file(t["table"]))}">{escape(t["table"])}</a>', escape(t["layer"]),
                     escape(t["write_mode"]), _num(t.get("version")), _num(t.get("rows")), _num(t.get("files")),
                     size_text(t.get("size_bytes")), badge(lr.get("status")), escape(age_text(t.get("age_s")))])
    body.append(_grid(["table", "layer", "mode", "version", "rows", "files", "size", "last run", "last commit"], rows,
                      numeric={3, 4, 5, 6}))
    return page(catalog, "Lineage", "".join(body), active="index")


# -- a table --------------------------------------------------------------------------
def _links(names: list[str], depth: int = 1) -> str:
    if not names:
        return '<span class="muted">none</span>'
    prefix = "" if depth == 1 else "tables/"
    return ", ".join(f'<a href="{prefix}{escape(table_file(n))}">{escape(n)}</a>' for n in names)


def table_page(catalog: dict[str, Any], t: dict[str, Any]) -> str:
    lr = t.get("last_run") or {}
    name = t["table"]
    facts = [("layer", escape(t["layer"])), ("pipeline", f'<code>{escape(t["pipeline"])}</code>'),
             ("write mode", escape(t["write_mode"])), ("location", f'<code>{escape(t["uri"])}</code>'),
             ("version", _num(t.get("version"))), ("rows", _num(t.get("rows"))), ("files", _num(t.get("files"))),
             ("size", size_text(t.get("size_bytes"))),
             ("partitioned by", escape(", ".join(t["partition_columns"])) if t.get("partition_columns") else "not partitioned"),
             ("keys", escape(", ".join(t["target"]["keys"])) or "—"),
             ("last commit", f'{_time((t.get("last_commit") or {}).get("time"))} ({escape(age_text(t.get("age_s")))}, '
                             f'{escape(t.get("freshness", "never"))})'),
             ("last run", f'{badge(lr.get("status"))} <code>{escape(lr.get("run_id") or "")}</code>'),
             ("upstream", _links(t["upstream"])), ("downstream", _links(t["downstream"]))]
    body = [f'<p><a href="../index.html">← lineage</a></p><h1>{escape(name)}</h1>',
            '<dl class="facts">' + "".join(f"<dt>{escape(k)}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>"]
    if lr.get("error"):
        body.append(f'<p class="error">last run error: {escape(lr["error"])}</p>')
    body.append("<h2>Inputs</h2>")
    body.append(_grid(["input", "source", "kind", "contract"],
                      [[escape(i["name"]), _links([i["source"]]) if i["kind"] == "table" and i["source"] in t["upstream"]
                        else f'<code>{escape(i["source"])}</code>', escape(i["kind"]), escape(i["label"])] for i in t["inputs"]]))
    body.append("<h2>Schema</h2>")
    body.append(_grid(["column", "type", "nullable"],
                      [[f"<code>{escape(c['name'])}</code>", f"<code>{escape(c['type'])}</code>",
                        "yes" if c["nullable"] else "no"] for c in t["schema"]], cls="grid schema"))
    body.append("<h2>Delta history</h2>")
    body.append(_grid(["version", "time", "operation", "rows added", "updated", "deleted", "duration", "run id"],
                      [[_num(h["version"]), _time(h["timestamp"]), escape(h["operation"] or "?"), _num(h["rows_added"]),
                        _num(h["rows_updated"]), _num(h["rows_deleted"]),
                        "—" if h["duration_ms"] is None else f'{h["duration_ms"]} ms', f'<code>{escape(h["run_id"] or "")}</code>']
                       for h in t["history"]], numeric={0, 3, 4, 5, 6}, cls="grid history"))
    body.append("<h2>Watermarks</h2>")
    body.append(_grid(["input", "column", "value", "updated", "run id"],
                      [[escape(w.get("input") or ""), escape(w["column"]), f'<code>{escape(str(w["value"]))}</code>',
                        _time(w["updated_at"]), f'<code>{escape(w["run_id"] or "")}</code>'] for w in t["watermarks"]]))
    inc = t.get("incremental")
    if inc:
        detail = ", ".join(f"{k} {v}" for k, v in inc.items() if v is not None and k != "strategy")
        body.append(f'<p>incremental: <b>{escape(inc["strategy"])}</b> {escape(detail)}</p>')
    mine = [(r, x) for r in catalog["runs"] for x in r["tables"] if x["table"] == name][:10]
    body.append("<h2>Recent runs</h2>")
    body.append(_grid(["started", "run id", "status", "duration", "rows in", "rows out", "error"],
                      [[_time(r["started_at"]), f'<code>{escape(r["run_id"])}</code>', badge(x["status"]), _dur(x["duration_s"]),
                        _num(x["rows_in"]), _num(x["rows_out"]), f'<span class="error">{escape(x["error"] or "")}</span>']
                       for r, x in mine], numeric={3, 4, 5}, cls="grid table-runs"))
    body.append("<h2>Quality</h2>")
    body.append(_quality_section(t, depth=1))
    body.append("<h2>Pipeline</h2>")
    body.append(_pipeline_section(t))
    if t.get("properties"):
        body.append("<h2>Table properties</h2>")
        body.append(_grid(["property", "value"], [[f"<code>{escape(k)}</code>", escape(str(v))]
                                                 for k, v in t["properties"].items()]))
    return page(catalog, name, "".join(body), active="", depth=1)


def _quality_section(t: dict[str, Any], *, depth: int) -> str:
    qc = t.get("quality_config")
    if not qc:
        return '<p class="muted">no quality gate</p>'
    parts = ["<p>schemas: " + ", ".join(f"<code>{escape(s['name'])}</code> ({escape(s['policy'])})" for s in qc["schemas"])
             + (f"; max invalid fraction {qc['max_invalid_fraction']}" if qc.get("max_invalid_fraction") is not None else "")
             + "</p>"]
    history = t.get("quality") or []
    if history:
        parts.append(chart([(h["started_at"], h["rows_invalid"] or 0) for h in history], title="invalid rows per run",
                           kind="bars", colour="#c62828"))
        checks = _check_names(history)
        recent = history[-12:]
        rows = [[escape(c)] + [_num(_check_rows(h, c)) for h in recent] for c in checks]
        rows.append(["<b>invalid rows</b>"] + [_num(h["rows_invalid"]) for h in recent])
        parts.append(_grid(["check"] + _run_heads(recent), rows,
                           numeric=set(range(1, len(recent) + 1)), cls="grid matrix checks"))
    q = t.get("quarantine")
    if q:
        parts.append(f'<p>quarantine <code>{escape(q["table"])}</code>: {_num(q["rows"])} rows, {_num(q["files"])} files, '
                     f'{size_text(q["size_bytes"])}</p>')
        if q.get("checks"):
            parts.append(_grid(["column", "check", "rows", "sample values"],
                               [[f'<code>{escape(c["column"] or "")}</code>', escape(c["check"]), _num(c["rows"]),
                                 escape(", ".join("null" if v is None else v for v in c["samples"]))] for c in q["checks"]],
                               numeric={2}))
    return "".join(parts)


def _check_label(c: dict[str, Any]) -> str:
    return f"{c.get('column') or '(table)'}: {c.get('check')}"


def _check_names(history: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for h in history:
        for c in h["checks"]:
            seen.setdefault(_check_label(c), None)
    return list(seen)


def _check_rows(h: dict[str, Any], label: str) -> int:
    return sum(c.get("rows") or 0 for c in h["checks"] if _check_label(c) == label)


def _pipeline_section(t: dict[str, Any]) -> str:
    p = t["pipeline_nodes"]
    parts = [f'<p>module <code>pipelines/{escape(p["module"])}</code></p>']
    if p.get("error"):
        parts.append(f'<p class="error">{escape(p["error"])}</p>')
    if p.get("doc"):
        parts.append(f'<div class="doc">{escape(p["doc"])}</div>')
    rows = [[f'<code>{escape(n["name"])}</code>', escape(", ".join(n["depends_on"])) or "—",
             escape(", ".join(n["inputs"])) or "—", f'<div class="doc">{escape(n["doc"] or "")}</div>'] for n in p["nodes"]]
    parts.append(_grid(["node", "depends on", "inputs", "docstring"], rows, cls="grid nodes"))
    return "".join(parts)


# -- charts ---------------------------------------------------------------------------
def chart(points: list[tuple[str, float | None]], *, title: str, kind: str = "line", colour: str = "#0b57d0",
          width: int = 270, height: int = 110, unit: str = "") -> str:
    """A small inline SVG chart of values over runs (oldest first): ``line`` or ``bars``."""
    pts = [(x, v) for x, v in points if v is not None]
    if not pts:
        return f'<div class="chart"><b>{escape(title)}</b><p class="muted">no data</p></div>'
    left, right, top, bottom = 38, 8, 8, 18
    w, h = width - left - right, height - top - bottom
    vmax = max(v for _, v in pts) or 1
    step = w / max(len(points), 1)  # every run keeps its place; a run without a value is a gap
    items = []
    coords = []
    for i, (x, v) in enumerate(points):
        if v is None:
            continue
        cx = left + step * (i + 0.5)
        cy = top + h - (v / vmax) * h
        tip = f"<title>{escape(x[:19].replace('T', ' '))}: {v:g}{escape(unit)}</title>"
        if kind == "bars":
            bw = min(24.0, max(2.0, step * 0.7))
            items.append(f'<rect x="{cx - bw / 2:.1f}" y="{cy:.1f}" width="{bw:.1f}" height="{top + h - cy:.1f}" '
                         f'fill="{colour}">{tip}</rect>')
        else:
            coords.append(f"{cx:.1f},{cy:.1f}")
            items.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="2.6" fill="{colour}">{tip}</circle>')
    line = f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{" ".join(coords)}"/>' if coords else ""
    axis = (f'<line x1="{left}" y1="{top + h}" x2="{left + w}" y2="{top + h}" stroke="#d0d7de"/>'
            f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + h}" stroke="#d0d7de"/>'
            f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{vmax:g}</text>'
            f'<text x="{left - 4}" y="{top + h}" text-anchor="end">0</text>'
            f'<text x="{left}" y="{height - 4}">{escape(points[0][0][:16].replace("T", " "))}</text>'
            f'<text x="{left + w}" y="{height - 4}" text-anchor="end">{escape(points[-1][0][11:16])}</text>')
    return (f'<div class="chart"><b>{escape(title)}</b><br><svg width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}">{axis}{line}{"".join(items)}</svg></div>')


# -- runs -----------------------------------------------------------------------------
def runs_page(catalog: dict[str, Any]) -> str:
    runs = catalog["runs"]
    body = ["<h1>Runs</h1>"]
    if not runs:
        body.append('<p class="muted">no run is recorded yet: <code>medallion run all</code></p>')
        return page(catalog, "Runs", "".join(body), active="runs")

    def counts(r: dict[str, Any]) -> str:
        c: dict[str, int] = {}
        for t in r["tables"]:
            c[t["status"]] = c.get(t["status"], 0) + 1
        return ", ".join(f"{n} {s}" for s, n in c.items()) or "—"

    body.append("<h2>Recent runs</h2>")
    body.append(_grid(["started", "run id", "command", "status", "duration", "tables"],
                      [[_time(r["started_at"]), f'<code>{escape(r["run_id"])}</code>', escape(r["command"]), badge(r["status"]),
                        _dur(r["duration_s"]), escape(counts(r))] for r in runs], numeric={4}, cls="grid runs"))
    recent = list(reversed(runs[:20]))  # oldest first
    body.append("<h2>Per table</h2><p class=muted>status and duration of each table in the last "
                f"{len(recent)} run(s), oldest first</p>")
    rows = []
    for t in catalog["tables"]:
        cells = [f'<a href="tables/{escape(table_file(t["table"]))}">{escape(t["table"])}</a>']
        for r in recent:
            found = next((x for x in r["tables"] if x["table"] == t["table"]), None)
            if found is None:
                cells.append("")
                continue
            fill, stroke = STATUS_COLOURS.get(found["status"], STATUS_COLOURS[None])
            cells.append(f'<span class="badge" style="background:{fill};border-color:{stroke}" '
                         f'title="{escape(found["status"])}">{escape(_dur(found["duration_s"]))}</span>')
        rows.append(cells)
    body.append(_grid(["table"] + _run_heads(recent, year=False), rows, cls="grid matrix"))
    body.append('<h2>Duration and rows over time</h2><div class="tablecharts">')
    for t in catalog["tables"]:
        series = [(r["started_at"], x) for r in reversed(runs) for x in r["tables"] if x["table"] == t["table"]]
        if not series:
            continue
        body.append(f'<div><h3><a href="tables/{escape(table_file(t["table"]))}">{escape(t["table"])}</a></h3>'
                    '<div class="charts">'
                    + chart([(s, x["duration_s"]) for s, x in series], title="duration (s)", unit=" s")
                    + chart([(s, x["rows_out"]) for s, x in series], title="rows written", kind="bars", colour="#2e7d32")
                    + "</div></div>")
    body.append("</div><h2>Failed runs</h2>")
    failed = [r for r in runs if r["status"] in ("failed", "interrupted")]
    if not failed:
        body.append('<p class="muted">none in the recorded runs</p>')
    for r in failed:
        body.append(f'<h3>{badge(r["status"])} <code>{escape(r["run_id"])}</code> {_time(r["started_at"])}</h3>')
        if r.get("error"):
            body.append(f'<p class="error">{escape(r["error"])}</p>')
        if r.get("error_hint"):
            body.append(f'<p class="muted">hint: {escape(r["error_hint"])}</p>')
        bad = [x for x in r["tables"] if x["status"] in ("failed", "skipped")]
        body.append(_grid(["table", "status", "error"], [[escape(x["table"]), badge(x["status"]),
                                                         f'<span class="error">{escape(x["error"] or "")}</span>'] for x in bad]))
    return page(catalog, "Runs", "".join(body), active="runs")


# -- quality --------------------------------------------------------------------------
def quality_page(catalog: dict[str, Any]) -> str:
    gated = [t for t in catalog["tables"] if t.get("quality_config")]
    body = ["<h1>Quality</h1>"]
    if not gated:
        body.append('<p class="muted">no table has a quality gate</p>')
        return page(catalog, "Quality", "".join(body), active="quality")
    body.append("<h2>Quarantine</h2>")
    body.append(_grid(["table", "quarantine table", "rows", "files", "size"],
                      [[f'<a href="tables/{escape(table_file(t["table"]))}">{escape(t["table"])}</a>',
                        f'<code>{escape(t["quarantine"]["table"])}</code>', _num(t["quarantine"]["rows"]),
                        _num(t["quarantine"]["files"]), size_text(t["quarantine"]["size_bytes"])]
                       for t in gated if t.get("quarantine")], numeric={2, 3, 4}, cls="grid quarantine"))
    body.append("<h2>Invalid rows per run and per check</h2>")
    for t in gated:
        body.append(f'<h3><a href="tables/{escape(table_file(t["table"]))}">{escape(t["table"])}</a></h3>')
        history = t.get("quality") or []
        if not history:
            body.append('<p class="muted">no recorded run checked it yet</p>')
            continue
        charts = [chart([(h["started_at"], h["rows_invalid"] or 0) for h in history], title="invalid rows",
                        kind="bars", colour="#c62828")]
        charts += [chart([(h["started_at"], _check_rows(h, c)) for h in history], title=c, colour="#b06000")
                   for c in _check_names(history)]
        body.append('<div class="charts">' + "".join(charts) + "</div>")
        recent = history[-12:]
        rows = [[escape(c)] + [_num(_check_rows(h, c)) for h in recent] for c in _check_names(history)]
        rows.append(["<b>invalid rows</b>"] + [_num(h["rows_invalid"]) for h in recent])
        rows.append(["rows checked"] + [_num(h["rows_checked"]) for h in recent])
        body.append(_grid(["check"] + _run_heads(recent), rows,
                          numeric=set(range(1, len(recent) + 1)), cls="grid matrix checks"))
    return page(catalog, "Quality", "".join(body), active="quality")
