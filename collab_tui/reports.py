"""Self-contained HTML reports of a job (`collab job report`) and of a training run (`collab run report`).

Pure functions of what `job_show` / `run_show` return: no network, no external asset. Thumbnails are
inline ``data:image/png;base64`` images (OpenCV, imported lazily, only when a job has images), the run's
plots are inline SVG made here, and the page carries no script at all; its Content-Security-Policy
forbids loading anything from outside the page. Every string from the data is HTML-escaped.
"""

from __future__ import annotations

import base64
import math
import time
from html import escape
from pathlib import Path
from typing import Any

THUMB_WIDTH = 240
THUMB_MAX_HEIGHT = 320
MAX_THUMBS = 500  # past this the grid says how many were left out (a page stays openable)
MAX_THUMB_SOURCE_BYTES = 64 * 1024 * 1024
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
.meta{color:#555}.meta b{color:#222}
table{border-collapse:collapse;background:#fff}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.n{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:12px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:6px;overflow:hidden}
.card img{display:block;max-width:100%;height:auto;margin:0 auto}
.card .name{font-weight:600;word-break:break-all;margin-top:4px}
.card .det{font-size:.9em;color:#333}.card .node{font-size:.8em;color:#777}
.noimg{height:80px;display:flex;align-items:center;justify-content:center;color:#999;background:#f3f3f3}
.err{color:#a00}.plots{display:flex;flex-wrap:wrap;gap:16px}
svg{background:#fff;border:1px solid #ddd}
svg text{font-family:system-ui,sans-serif;font-size:11px;fill:#333}
"""
_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _page(title: str, body: list[str]) -> str:
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
            *body,
            f'<p class="meta">made by collab, {_e(time.strftime("%Y-%m-%d %H:%M:%S"))}</p>',
            "</body></html>",
            "",
        ]
    )


def _table(head: list[str], rows: list[list[Any]], numeric: set[int] = frozenset()) -> str:
    out = ["<table><thead><tr>", *(f"<th>{_e(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for row in rows:
        cells = (f'<td class="n">{_e(v)}</td>' if i in numeric else f"<td>{_e(v)}</td>" for i, v in enumerate(row))
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _fmt_time(ts: Any) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(ts)))
    except (TypeError, ValueError, OverflowError, OSError):
        return ""


# --------------------------------------------------------------------------- job report
def thumbnail_data_uri(path: str | Path, width: int = THUMB_WIDTH, max_height: int = THUMB_MAX_HEIGHT) -> str | None:
    """A PNG thumbnail of the image at `path` (at most `width` x `max_height`) as a data URI, or None
    when the file is missing, too big or not an image OpenCV decodes."""
    p = Path(path)
    try:
        if not p.is_file() or p.stat().st_size > MAX_THUMB_SOURCE_BYTES:
            return None
        data = p.read_bytes()
    except OSError:
        return None
    from .ml.cvload import import_cv2
    from .ml.images import decode_image

    cv2 = import_cv2()
    try:
        img = decode_image(data)
    except Exception:  # ImageError, or whatever a broken file makes OpenCV raise: no thumbnail
        return None
    h, w = img.shape[:2]
    scale = min(1.0, width / w, max_height / h)
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        return None
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _thumb_source(item: dict) -> str | None:
    res = item.get("result") if isinstance(item.get("result"), dict) else {}
    annotated = res.get("annotated")
    if annotated and Path(str(annotated)).is_file():
        return str(annotated)
    path = str(item.get("path") or "")
    if path and Path(path).suffix.lower() in IMAGE_SUFFIXES:
        return path
    return None


def _score(v: Any) -> str:
    try:
        return f"{float(v):.2f}"
    except (TypeError, ValueError):
        return ""


def _result_lines(res: dict) -> list[str]:
    """What a person wants to read under a thumbnail: detections, labels with scores, text, words."""
    lines: list[str] = []
    dets = res.get("detections")
    if isinstance(dets, list):
        if dets:
            shown = [f"{d.get('label', '?')} {_score(d.get('score'))}".strip() for d in dets[:8] if isinstance(d, dict)]
            more = f" (+{len(dets) - 8})" if len(dets) > 8 else ""
            lines.append(f"{len(dets)} found: " + ", ".join(shown) + more)
        else:
            lines.append("nothing found")
    ens = res.get("ensemble")
    if isinstance(ens, dict) and ens.get("label") is not None:
        lines.append(
            f"{ens.get('label')} {_score(ens.get('score'))} ({ens.get('method', '')}, {res.get('voters', '')})"
        )
    top = res.get("top")
    if isinstance(top, list) and top and all(isinstance(t, dict) for t in top):
        lines.append(", ".join(f"{t.get('label', '?')} {_score(t.get('score'))}".strip() for t in top[:3]))
    elif isinstance(res.get("labels"), list) and not isinstance(dets, list) and not isinstance(ens, dict):
        lines.append("labels: " + ", ".join(str(x) for x in res["labels"][:10]))
    if isinstance(res.get("text"), str):
        text = res["text"].strip()
        lines.append(("text: " + (text[:200] + ("…" if len(text) > 200 else ""))) if text else "no text")
    if "words" in res and not isinstance(res.get("text"), str):
        lines.append(f"{res.get('words')} words")
    return lines


def _node_name(item: dict, names: dict[str, str]) -> str:
    res = item.get("result") if isinstance(item.get("result"), dict) else {}
    worker = str(item.get("worker") or res.get("worker") or "")
    return str(res.get("worker_name") or names.get(worker) or worker[:12] or "?")


def _ms(timings: Any, key: str) -> float:
    if not isinstance(timings, dict):
        return 0.0
    try:
        v = float(timings.get(key) or 0.0)
    except (TypeError, ValueError):
        return 0.0
    return v if math.isfinite(v) and v > 0 else 0.0


def node_timings(job: dict) -> list[dict]:
    """Per node: items done, errors, seconds running items (``run_ms``), seconds fetching them
    (``fetch_ms``) and the mean milliseconds per done item; busiest node first."""
    items = list(job.get("items") or [])
    names: dict[str, str] = {}
    for it in items:
        res = it.get("result") if isinstance(it.get("result"), dict) else {}
        if it.get("worker") and res.get("worker_name"):
            names[str(it["worker"])] = str(res["worker_name"])
    rows: dict[str, dict] = {}
    for it in items:
        node = _node_name(it, names)
        row = rows.setdefault(node, {"node": node, "items": 0, "errors": 0, "run_s": 0.0, "fetch_s": 0.0})
        if it.get("status") == "error" or it.get("error"):
            row["errors"] += 1
            continue
        timings = (it.get("result") or {}).get("timings") if isinstance(it.get("result"), dict) else None
        row["items"] += 1
        row["run_s"] += _ms(timings, "run_ms") / 1000.0
        row["fetch_s"] += _ms(timings, "fetch_ms") / 1000.0
    out = []
    for row in rows.values():
        row["run_s"], row["fetch_s"] = round(row["run_s"], 3), round(row["fetch_s"], 3)
        row["ms_per_item"] = round(1000.0 * row["run_s"] / row["items"], 1) if row["items"] else 0.0
        out.append(row)
    return sorted(out, key=lambda r: (-r["items"], r["node"]))


def job_report_html(job: dict, max_images: int = MAX_THUMBS) -> str:
    """One page for a job (`job_show`): its summary, a grid of (annotated) thumbnails with each file's
    name, node, detections or labels and scores, the errors, the unfinished items and the timings per node."""
    items = list(job.get("items") or [])
    counts = job.get("counts") if isinstance(job.get("counts"), dict) else {}
    job_id = str(job.get("job_id", ""))
    body = [f"<h1>Job {_e(job_id)}</h1>"]
    meta = [
        ("task", job.get("task", "")),
        ("status", job.get("status", "")),
        ("items", job.get("total", len(items))),
        ("done", counts.get("done", sum(1 for it in items if it.get("status") == "done"))),
        ("errors", counts.get("error", sum(1 for it in items if it.get("status") == "error"))),
        ("submitted", _fmt_time(job.get("created_at"))),
    ]
    ended = [float(it["finished_at"]) for it in items if isinstance(it.get("finished_at"), (int, float))]
    if ended and isinstance(job.get("created_at"), (int, float)):
        meta.append(("took", f"{max(0.0, max(ended) - float(job['created_at'])):.1f} s"))
    body.append('<p class="meta">' + " · ".join(f"{_e(k)} <b>{_e(v)}</b>" for k, v in meta) + "</p>")
    summary = job.get("summary") if isinstance(job.get("summary"), dict) else {}
    facts = [f"{_e(k)} <b>{_e(v)}</b>" for k, v in summary.items() if isinstance(v, (int, float, str))]
    if isinstance(summary.get("labels"), dict) and summary["labels"]:
        top = sorted(summary["labels"].items(), key=lambda kv: (-kv[1], str(kv[0])))[:20]
        facts.append("labels <b>" + _e(", ".join(f"{k} {v}" for k, v in top)) + "</b>")
    if isinstance(summary.get("top"), list) and summary["top"]:
        words = [f"{w[0]} {w[1]}" for w in summary["top"][:20] if isinstance(w, (list, tuple)) and len(w) == 2]
        facts.append("top words <b>" + _e(", ".join(words)) + "</b>")
    if facts:
        body.append('<p class="meta">summary: ' + " · ".join(facts) + "</p>")

    done = [it for it in items if it.get("status") == "done"]
    body.append(f"<h2>Results ({len(done)})</h2>")
    cards, shown = [], 0
    names = {str(it.get("worker")): _node_name(it, {}) for it in done if it.get("worker")}
    for it in done:
        res = it.get("result") if isinstance(it.get("result"), dict) else {}
        name = Path(str(it.get("path") or it.get("item_id") or "")).name
        src = _thumb_source(it) if shown < max_images else None
        uri = thumbnail_data_uri(src) if src else None
        card = ['<div class="card">']
        if uri:
            shown += 1
            card.append(f'<img src="{uri}" alt="{_e(name)}" title="{_e(it.get("path", ""))}">')
        else:
            card.append('<div class="noimg">no picture</div>')
        card.append(f'<div class="name" title="{_e(it.get("path", ""))}">{_e(name)}</div>')
        card += [f'<div class="det">{_e(line)}</div>' for line in _result_lines(res)]
        card.append(f'<div class="node">on {_e(_node_name(it, names))}</div></div>')
        cards.append("".join(card))
    if cards:
        body.append('<div class="grid">' + "\n".join(cards) + "</div>")
    else:
        body.append("<p>No item has finished yet.</p>")
    left_out = sum(1 for it in done if _thumb_source(it)) - shown
    if shown >= max_images and left_out > 0:
        body.append(f"<p>{left_out} more pictures not shown (at most {max_images} per page).</p>")

    errors = [it for it in items if it.get("status") == "error" or it.get("error")]
    body.append(f"<h2>Errors ({len(errors)})</h2>")
    if errors:
        rows = [
            [Path(str(it.get("path") or "")).name or it.get("item_id", ""), it.get("error", ""), _node_name(it, names)]
            for it in errors
        ]
        body.append('<div class="err">' + _table(["file", "error", "node"], rows) + "</div>")
    else:
        body.append("<p>None.</p>")

    pending = list(job.get("pending") or [])
    if pending:
        body.append(f"<h2>Not finished ({len(pending)})</h2>")
        rows = [[Path(str(p.get("path") or "")).name, p.get("attempts", 0)] for p in pending[:200]]
        body.append(_table(["file", "attempts"], rows, numeric={1}))
        if len(pending) > 200:
            body.append(f"<p>and {len(pending) - 200} more.</p>")

    body.append("<h2>Timings per node</h2>")
    trows = [
        [r["node"], r["items"], r["errors"], f"{r['run_s']:.3f}", f"{r['fetch_s']:.3f}", f"{r['ms_per_item']:.1f}"]
        for r in node_timings(job)
    ]
    if trows:
        body.append(
            _table(["node", "items", "errors", "run s", "fetch s", "ms / item"], trows, numeric={1, 2, 3, 4, 5})
        )
    else:
        body.append("<p>No timings yet.</p>")
    return _page(f"collab job {job_id}", body)


# --------------------------------------------------------------------------- run report
def _sub(d: dict, key: str) -> dict:
    v = d.get(key)
    return v if isinstance(v, dict) else {}


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def run_series(run: dict, metric: str) -> list[tuple[str, list[tuple[int, float]]]]:
    """(name, [(round, value)]) for `metric` ("accuracy" | "loss"): the server's evaluation, the clients'
    evaluation and the training metric, each only when some round has it."""
    sources = (
        ("eval (server)", "server_eval", metric),
        ("eval (clients)", "client_eval", metric),
        ("train", "metrics", f"train_{metric}"),
    )
    out = []
    for name, key, field in sources:
        pts = []
        for e in run.get("history") or []:
            if not isinstance(e, dict):
                continue
            r, v = _num(e.get("round")), _num(_sub(e, key).get(field))
            if r is not None and v is not None:
                pts.append((int(r), v))
        if pts:
            out.append((name, pts))
    return out


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + k * step, 10) for k in range(int((hi - first) / step + 1e-9) + 1)]


def svg_line_plot(
    title: str, series: list[tuple[str, list[tuple[int, float]]]], y_label: str, unit_range: bool = False
) -> str:
    """An inline SVG line plot: axes with ticks and labels, one polyline and one ``<circle>`` per point
    for each series (with a ``<title>`` tooltip), a legend. `unit_range` fixes y to [0, 1]."""
    w, h, ml, mr, mt, mb = 520, 310, 56, 16, 40, 44
    pw, ph = w - ml - mr, h - mt - mb
    xs = [x for _, pts in series for x, _ in pts]
    ys = [y for _, pts in series for _, y in pts]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img">']
    parts.append(f"<title>{_e(title)}</title>")
    parts.append(f'<text x="{w / 2}" y="15" text-anchor="middle" font-weight="bold">{_e(title)}</text>')
    if not xs:
        parts.append(f'<text x="{w / 2}" y="{h / 2}" text-anchor="middle">no rounds yet</text></svg>')
        return "".join(parts)
    x0, x1 = min(xs), max(xs)
    if x0 == x1:
        x0, x1 = x0 - 1, x1 + 1
    if unit_range and min(ys) >= 0 and max(ys) <= 1:
        y0, y1 = 0.0, 1.0
    else:
        y0, y1 = min(0.0, min(ys)), max(ys)
        y1 = y1 + 0.1 * (y1 - y0) if y1 > y0 else y0 + 1.0

    def px(x: float) -> float:
        return round(ml + (x - x0) / (x1 - x0) * pw, 2)

    def py(y: float) -> float:
        return round(mt + ph - (y - y0) / (y1 - y0) * ph, 2)

    parts.append(f'<g class="axes" stroke="#444" fill="none"><path d="M{ml},{mt}V{mt + ph}H{ml + pw}"/></g>')
    for t in _ticks(y0, y1):
        y = py(t)
        parts.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{y}" y2="{y}" stroke="#eee"/>')
        parts.append(f'<text x="{ml - 6}" y="{y + 4}" text-anchor="end">{t:g}</text>')
    xticks = [t for t in _ticks(x0, x1, min(10, max(1, int(x1 - x0)))) if float(t).is_integer()]
    for t in xticks:
        x = px(t)
        parts.append(f'<line x1="{x}" x2="{x}" y1="{mt + ph}" y2="{mt + ph + 4}" stroke="#444"/>')
        parts.append(f'<text x="{x}" y="{mt + ph + 16}" text-anchor="middle">{int(t)}</text>')
    parts.append(f'<text x="{ml + pw / 2}" y="{h - 8}" text-anchor="middle">round</text>')
    parts.append(
        f'<text x="14" y="{mt + ph / 2}" text-anchor="middle" transform="rotate(-90 14 {mt + ph / 2})">'
        f"{_e(y_label)}</text>"
    )
    for k, (name, pts) in enumerate(series):
        color = _COLORS[k % len(_COLORS)]
        pts = sorted(pts)
        coords = " ".join(f"{px(x)},{py(y)}" for x, y in pts)
        parts.append(f'<g class="series" data-name="{_e(name)}">')
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"/>')
        for x, y in pts:
            parts.append(
                f'<circle cx="{px(x)}" cy="{py(y)}" r="3.5" fill="{color}">'
                f"<title>{_e(name)}: round {x}, {y_label} {y:.4f}</title></circle>"
            )
        parts.append("</g>")
        lx = ml + 10 + k * 130
        parts.append(f'<rect x="{lx}" y="20" width="10" height="10" fill="{color}"/>')
        parts.append(f'<text x="{lx + 14}" y="29">{_e(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def run_report_html(run: dict, names: dict[str, str] | None = None) -> str:
    """One page for a training run (`run_show`): its configuration, accuracy and loss per round as SVG
    plots, the rounds table and the per-client ledger. `names` maps node ids to node names."""
    names = names or {}
    cfg = run.get("config") if isinstance(run.get("config"), dict) else {}
    history = [e for e in (run.get("history") or []) if isinstance(e, dict)]
    run_id = str(run.get("run_id", ""))
    body = [f"<h1>Run {_e(run_id)}</h1>"]
    meta = [
        ("model", cfg.get("model", "")),
        ("strategy", cfg.get("strategy", "")),
        ("mode", cfg.get("mode", "")),
        ("dataset", cfg.get("dataset", "")),
        ("status", run.get("status", "")),
        ("round", f"{run.get('round', 0)}/{cfg.get('rounds', '?')}"),
        ("version", run.get("version", "")),
        ("started", _fmt_time(run.get("created"))),
    ]
    body.append('<p class="meta">' + " · ".join(f"{_e(k)} <b>{_e(v)}</b>" for k, v in meta if v != "") + "</p>")
    if run.get("error"):
        body.append(f'<p class="err">error: {_e(run["error"])}</p>')
    body.append('<h2>Accuracy and loss per round</h2><div class="plots">')
    body.append(svg_line_plot("accuracy", run_series(run, "accuracy"), "accuracy", unit_range=True))
    body.append(svg_line_plot("loss", run_series(run, "loss"), "loss"))
    body.append("</div>")

    def acc(e: dict, key: str, field: str) -> str:
        v = _num(_sub(e, key).get(field))
        return "" if v is None else f"{v:.4f}"

    body.append(f"<h2>Rounds ({len(history)})</h2>")
    rows = []
    for e in history:
        rows.append(
            [
                e.get("round", ""),
                len(e.get("clients") or []),
                e.get("samples", ""),
                acc(e, "server_eval", "accuracy"),
                acc(e, "client_eval", "accuracy"),
                acc(e, "metrics", "train_accuracy"),
                acc(e, "metrics", "train_loss"),
                f"{(_num(e.get('bytes')) or 0) / 1e6:.2f}",
                f"{_num(e.get('wall_seconds')) or 0:.2f}",
                len(e.get("stragglers") or {}),
                len(e.get("rejected") or {}),
            ]
        )
    head = ["round", "clients", "samples", "eval acc", "client acc", "train acc", "train loss", "MB", "s"]
    body.append(_table([*head, "left out", "rejected"], rows, numeric=set(range(11))) if rows else "<p>None yet.</p>")

    ledger = run.get("ledger") if isinstance(run.get("ledger"), dict) else {}
    body.append(f"<h2>Clients ({len(ledger)})</h2>")
    lrows = []
    for node, entry in sorted(ledger.items(), key=lambda kv: (-int((kv[1] or {}).get("samples", 0) or 0), kv[0])):
        entry = entry if isinstance(entry, dict) else {}
        rounds = int(entry.get("rounds", 0) or 0)
        rate = f"{100.0 * int(entry.get('accepted', 0) or 0) / rounds:.0f} %" if rounds else ""
        lrows.append(
            [
                names.get(node, ""),
                str(node)[:16],
                entry.get("samples", 0),
                entry.get("accepted", 0),
                entry.get("rejected", 0),
                rounds,
                rate,
            ]
        )
    if lrows:
        head = ["node", "id", "samples", "accepted", "rejected", "rounds", "accepted %"]
        body.append(_table(head, lrows, numeric={2, 3, 4, 5, 6}))
    else:
        body.append("<p>No client has contributed yet.</p>")
    return _page(f"collab run {run_id}", body)
