"""The report as one self-contained HTML file: text, tables and inline SVG charts drawn here.

Why hand-drawn SVG: the charts are bars and histograms, which a few lines of SVG draw exactly; the
file then needs no script at all (a plotting library inlined would add megabytes of JavaScript, and
matplotlib's SVG output differs between versions and fonts, which would break byte-identical
output). With no script, the page's own Content-Security-Policy can forbid every script and every
request: nothing in the file, generated text included, can run or fetch anything.

Generated text is untrusted: every string goes through `esc`, which escapes HTML and shows invisible
or direction-changing characters as visible U+XXXX markers, as the dashboard does.
"""

from __future__ import annotations

import base64
import hashlib
import html
import unicodedata

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.2em;margin:1.4em 0 .4em;border-bottom:1px solid #ccc}
h3{font-size:1em;margin:1em 0 .3em}
table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #ddd;padding:2px 8px;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#777}.inv{color:#fff;background:#c00;font-size:.8em;padding:0 2px;border-radius:2px}
.grid{display:flex;flex-wrap:wrap;gap:1.2em}.grid figure{margin:0}
figcaption{font-weight:600;margin-bottom:.2em}.moved{background:#fff4c2}
.pair td{white-space:pre-wrap;max-width:480px;word-break:break-word}
svg text{font:11px system-ui,sans-serif;fill:#333}
.key{display:inline-block;width:10px;height:10px;margin:0 4px 0 10px}.k0{background:#4a78b5}.k1{background:#e08a3c}
nav form{margin:.4em 0}
""".strip()
STYLE_HASH = "sha256-" + base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
# No script, no request: inline SVG and the one stylesheet above are all the page has.
CSP = f"default-src 'none'; style-src '{STYLE_HASH}'; img-src data:; base-uri 'none'; form-action 'self'"
COLORS = ("#4a78b5", "#e08a3c")
OBJ_COLORS = ("#6f9bd1", "#9dbde3", "#c3d6ee", "#dfe8f5")


def esc(text) -> str:
    """Escaped text, invisible and bidi-control characters shown as red U+XXXX markers."""
    out = []
    for ch in str(text):
        cat = unicodedata.category(ch)
        if (cat in ("Cf", "Co", "Cs") or (cat == "Cc" and ch not in "\n\t")) or ch in "\u2028\u2029":
            out.append(f'<span class="inv">U+{ord(ch):04X}</span>')
        else:
            out.append(html.escape(ch, quote=True))
    return "".join(out)


def num(x, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if abs(x) >= 100:
        return f"{x:,.1f}"
    return f"{x:.{digits}f}" if abs(x) >= 0.001 or x == 0 else f"{x:.2e}"


def _svg(w: int, h: int, body: list[str], label: str) -> str:
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{esc(label)}">' + "".join(body) + "</svg>"


def bars(title: str, series: list[list[int]], labels: list[str], names: list[str] | None = None, w: int = 520, h: int = 180) -> str:
    """Vertical bars, one group per label, one bar per series (run, vs)."""
    left, bottom, top = 40, 34, 8
    top_v = max([1] + [v for s in series for v in s])
    n = max(1, len(labels))
    gw = (w - left - 6) / n
    bw = max(1.0, (gw - 2) / len(series))
    body = [f'<line x1="{left}" y1="{h - bottom}" x2="{w - 4}" y2="{h - bottom}" stroke="#999"/>',
            f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{num(top_v)}</text>',
            f'<text x="{left - 4}" y="{h - bottom}" text-anchor="end">0</text>']
    for k, s in enumerate(series):
        for i, v in enumerate(s):
            bh = (h - bottom - top) * v / top_v
            x = left + i * gw + 1 + k * bw
            tip = f"{labels[i]}: {v:,}" + (f" ({names[k]})" if names else "")
            body.append(f'<rect x="{x:.1f}" y="{h - bottom - bh:.1f}" width="{bw:.1f}" height="{bh:.1f}" fill="{COLORS[k % 2]}"><title>{esc(tip)}</title></rect>')
    every = max(1, -(-n // 8))
    for i in range(0, n, every):
        body.append(f'<text x="{left + i * gw + gw / 2:.1f}" y="{h - bottom + 14}" text-anchor="middle">{esc(labels[i])}</text>')
    return f"<figure><figcaption>{esc(title)}</figcaption>{_svg(w, h, body, title)}</figure>"


def hbars(title: str, rows: list[tuple[str, list[int]]], names: list[str] | None = None, w: int = 520) -> str:
    """Horizontal bars: a row per label, one bar per series."""
    k = max(1, max((len(v) for _, v in rows), default=1))
    row_h = 8 + 12 * k
    h = 10 + row_h * max(1, len(rows))
    left = 180
    top_v = max([1] + [x for _, v in rows for x in v])
    body = []
    for i, (label, values) in enumerate(rows):
        y = 5 + i * row_h
        body.append(f'<text x="{left - 6}" y="{y + row_h / 2 + 3:.1f}" text-anchor="end">{esc(label[:28])}</text>')
        for j, v in enumerate(values):
            bw = (w - left - 70) * v / top_v
            yy = y + 4 + 12 * j
            body.append(f'<rect x="{left}" y="{yy}" width="{bw:.1f}" height="10" fill="{COLORS[j % 2]}"><title>{esc(label)}: {v:,}</title></rect>')
            body.append(f'<text x="{left + bw + 4:.1f}" y="{yy + 9}">{num(v)}</text>')
    return f"<figure><figcaption>{esc(title)}</figcaption>{_svg(w, h, body, title)}</figure>"


def verb_chart(title: str, table: dict, w: int = 1060) -> str:
    """The top verbs as bars split into their top objects (the self-instruct figure, flattened)."""
    top = table["top"]
    row_h, left = 20, 110
    h = 10 + row_h * max(1, len(top))
    top_v = max([1] + [v["count"] for v in top])
    scale = (w - left - 10) / top_v
    body = []
    for i, v in enumerate(top):
        y = 5 + i * row_h
        body.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{esc(v["verb"][:16])}</text>')
        x = left
        body.append(f'<rect x="{x}" y="{y + 2}" width="{v["count"] * scale:.1f}" height="{row_h - 4}" fill="#e4e4e4"><title>{esc(v["verb"])}: {v["count"]:,}</title></rect>')
        for j, o in enumerate(v["objects"]):
            ow = o["count"] * scale
            body.append(f'<rect x="{x:.1f}" y="{y + 2}" width="{ow:.1f}" height="{row_h - 4}" fill="{OBJ_COLORS[j % 4]}" stroke="#fff"><title>{esc(v["verb"] + " " + o["object"])}: {o["count"]:,}</title></rect>')
            if ow > 7 * len(o["object"]) + 6:
                body.append(f'<text x="{x + 3:.1f}" y="{y + 14}">{esc(o["object"])}</text>')
            x += ow
        end = left + v["count"] * scale
        if end < w - 50:
            body.append(f'<text x="{end + 4:.1f}" y="{y + 14}">{v["count"]:,}</text>')
        else:
            body.append(f'<text x="{end - 4:.1f}" y="{y + 14}" text-anchor="end">{v["count"]:,}</text>')
    return f"<figure><figcaption>{esc(title)}</figcaption>{_svg(w, h, body, title)}</figure>"


def _hist_labels(hist: dict, n: int, digits: int = 2) -> list[str]:
    lo, hi = hist["lo"], hist["hi"]
    width = (hi - lo) / n if n else 1
    return [f"{lo + i * width:.{digits}f}".rstrip("0").rstrip(".") if digits else str(int(lo + i * width)) for i in range(n)]


def _hist(title: str, figs: list[dict], key, names, digits: int = 2) -> str:
    hs = [key(f) for f in figs]
    if any(h is None for h in hs):
        return ""
    n = len(hs[0]["counts"])
    labels = _hist_labels(hs[0], n, digits)
    series = [h["counts"] for h in hs]
    if "below" in hs[0]:
        labels = [f"<{hs[0]['lo']}"] + labels
        series = [[h["below"]] + h["counts"] for h in hs]
    return bars(title, series, labels, names if len(figs) > 1 else None)


def _table(head: list[str], rows: list[list[str]], num_cols: set[int] = frozenset()) -> str:
    th = "".join(f'<th{" class=n" if i in num_cols else ""}>{esc(h)}</th>' for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f'<td{" class=n" if i in num_cols else ""}>{c}</td>' for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _pick(fig: dict, path: str):
    for k in path.split("."):
        fig = fig.get(k) if isinstance(fig, dict) else None
    return fig


def _side(figs: list[dict], names: list[str], rows: list[tuple[str, str]]) -> str:
    """A figure table: one column per run (and the difference with two)."""
    out = []
    for label, path in rows:
        vals = [_pick(f, path) for f in figs]
        cells = [esc(label)] + [num(v) for v in vals]
        if len(vals) == 2:
            a, b = vals
            cells.append(num(a - b) if isinstance(a, (int, float)) and isinstance(b, (int, float)) else "–")
        out.append(cells)
    head = ["figure"] + names + (["difference"] if len(names) == 2 else [])
    return _table(head, out, set(range(1, len(head))))


def _legend(names: list[str]) -> str:
    if len(names) < 2:
        return ""
    return '<p class="muted">' + "".join(f'<span class="key k{i}"></span>{esc(n)}' for i, n in enumerate(names)) + "</p>"


def _section_funnel(figs, names) -> str:
    rows = [("candidates generated", "funnel.generated"), ("passed the instruction filters (screened)", "funnel.screened"),
            ("judged (classified, instances written)", "funnel.judged"), ("kept (accepted or approved)", "funnel.kept"),
            ("still pending", "funnel.pending"), ("approved by a reviewer", "funnel.approved"), ("acceptance (kept / judged)", "funnel.acceptance"),
            ("requests", "funnel.requests"), ("failed requests", "funnel.request_errors"), ("tokens in", "funnel.tokens_in"),
            ("tokens out", "funnel.tokens_out"), ("cost (USD)", "funnel.cost"), ("requests per kept sample", "funnel.requests_per_kept"),
            ("tokens per kept sample", "funnel.tokens_per_kept"), ("cost per kept sample (USD)", "funnel.cost_per_kept")]
    stages = ["generated", "screened", "judged", "kept"]
    chart = hbars("Funnel", [(s, [f["funnel"][s] for f in figs]) for s in stages], names)
    reasons = sorted({r for f in figs for r in f["funnel"]["rejections"]}, key=lambda r: (-sum(f["funnel"]["rejections"].get(r, 0) for f in figs), r))
    rchart = hbars("Rejections by reason", [(r, [f["funnel"]["rejections"].get(r, 0) for f in figs]) for r in reasons], names) if reasons else "<p>No rejections.</p>"
    return f'<h2 id="funnel">Funnel</h2><div class="grid">{chart}{rchart}</div>{_side(figs, names, rows)}'


def _section_diversity(figs, names) -> str:
    rows = [("instructions distinct-1", "diversity.instructions.distinct_1"), ("instructions distinct-2", "diversity.instructions.distinct_2"),
            ("outputs distinct-1", "diversity.outputs.distinct_1"), ("outputs distinct-2", "diversity.outputs.distinct_2"),
            ("instructions with a root verb", "diversity.verbs.with_verb"), ("... and a direct object", "diversity.verbs.with_object"),
            ("distinct root verbs", "diversity.verbs.distinct_verbs"), ("distinct verb-object pairs", "diversity.verbs.distinct_pairs"),
            ("embedding: samples", "diversity.embedding.samples"), ("embedding: mean pairwise cosine", "diversity.embedding.mean_pairwise_cosine"),
            ("embedding: share with nearest neighbour above 0.9", "diversity.embedding.nn_above_share")]
    out = [f'<h2 id="diversity">Diversity</h2>{_side(figs, names, rows)}']
    for f, name in zip(figs, names):
        v = f["diversity"]["verbs"]
        cap = f"{name}: top root verbs and their direct objects ({v['parsed']:,} of {v['of']:,} instructions parsed with {v['parser']})"
        out.append(verb_chart(cap, v))
    emb = [f["diversity"]["embedding"] for f in figs]
    if all(emb):
        out.append(f'<p class="muted">Embeddings: {esc(emb[0]["model"])}, {emb[0]["dim"]} dimensions.</p>')
        out.append(_hist("Cosine to the nearest neighbour (embeddings)", figs, lambda f: f["diversity"]["embedding"]["nn_histogram"], names))
    elif any(emb):
        out.append('<p class="muted">Embeddings are stored for only one of the two runs.</p>')
    else:
        out.append('<p class="muted">No embeddings stored for this run: embedding diversity not shown.</p>')
    return "".join(out)


def _section_similarity(figs, names) -> str:
    t = figs[0]["similarity"]["to_kept"]
    rows = [("mean ROUGE-L to nearest seed", "similarity.to_seed.mean"), ("median ROUGE-L to nearest seed", "similarity.to_seed.median"),
            (f"share with a kept neighbour above {t['floor']}", "similarity.to_kept.above_floor_share"),
            (f"near-duplicate share (neighbour above {t['near_duplicate']})", "similarity.to_kept.near_duplicate_share")]
    charts = _hist("ROUGE-L to the nearest seed", figs, lambda f: f["similarity"]["to_seed"]["histogram"], names)
    charts += _hist("ROUGE-L to the nearest other kept sample", figs, lambda f: f["similarity"]["to_kept"]["histogram"], names)
    out = [f'<h2 id="similarity">Similarity</h2>{_legend(names)}<div class="grid">{charts}</div>{_side(figs, names, rows)}',
           f'<p class="muted">ROUGE-L to other kept samples is exact above {t["floor"]}; lower scores are counted together.</p>']
    for f, name in zip(figs, names):
        pairs = f["similarity"]["closest_pairs"]
        out.append(f"<h3>{esc(name)}: the closest kept pairs</h3>")
        if not pairs:
            out.append(f'<p class="muted">No two kept samples are above ROUGE-L {t["floor"]}.</p>')
            continue
        out.append('<table class="pair"><tr><th class=n>ROUGE-L</th><th>sample</th><th>nearest kept sample</th></tr>'
                   + "".join(f'<tr><td class=n>{num(p["score"])}</td><td>#{p["a_id"]} {esc(p["a"])}</td><td>#{p["b_id"]} {esc(p["b"])}</td></tr>' for p in pairs)
                   + "</table>")
    return "".join(out)


def _section_lengths(figs, names) -> str:
    rows = [("instruction tokens, mean", "lengths.instruction.mean"), ("instruction tokens, median", "lengths.instruction.median"),
            ("input tokens, mean (non-empty)", "lengths.input.mean"), ("output tokens, mean", "lengths.output.mean"),
            ("output tokens, p90", "lengths.output.p90"), ("instances", "lengths.instances"), ("share with an input", "lengths.with_input_share"),
            ("classification tasks", "lengths.classification"), ("generation tasks", "lengths.generation"), ("unclassified", "lengths.unclassified"),
            ("classification share", "lengths.classification_share")]
    charts = "".join(_hist(f"{part.capitalize()} length (tokens)", figs, lambda f, p=part: f["lengths"][p]["histogram"], names, 0) for part in ("instruction", "input", "output"))
    return f'<h2 id="lengths">Lengths</h2>{_legend(names)}<div class="grid">{charts}</div>{_side(figs, names, rows)}'


def _section_scores(figs, names) -> str:
    keys = sorted({k for f in figs for k in f["scores"]["histograms"]})
    sels = [f["scores"]["selections"] for f in figs]
    if not keys and not any(sels):
        return '<h2 id="scores">Scores</h2><p class="muted">No scores or selections stored for this run.</p>'
    out = ['<h2 id="scores">Scores</h2>', _legend(names), '<div class="grid">']
    for k in keys:
        hs = [f["scores"]["histograms"].get(k) for f in figs]
        for h, name in zip(hs, names):
            if h:
                out.append(bars(f"{k} ({name}): n {h['n']:,}, mean {num(h['mean'])}", [h["histogram"]["counts"]], _hist_labels(h["histogram"], len(h["histogram"]["counts"]))))
    out.append("</div>")
    for s, name in zip(sels, names):
        if s:
            out.append(f"<h3>{esc(name)}: selections</h3>" + _table(["selection", "samples"], [[esc(x["name"]), num(x["size"])] for x in s], {1}))
    return "".join(out)


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def _comparison(report: dict, names) -> str:
    c = report["comparison"]
    moved = set(c["moved_most"])
    labels = {r["figure"]: r["label"] for r in c["figures"]}
    head = "<p><b>Moved most:</b> " + (", ".join(esc(labels[m]) for m in c["moved_most"]) or "nothing moved") + "</p>"
    rows = "".join(
        f'<tr{" class=moved" if r["figure"] in moved else ""}><td>{esc(r["label"])}</td><td class=n>{num(r["run"])}</td><td class=n>{num(r["vs"])}</td>'
        f'<td class=n>{num(r["delta"])}</td><td class=n>{_pct(r["relative"])}</td></tr>'
        for r in c["figures"]
    )
    return (f'<h2 id="comparison">{esc(names[0])} against {esc(names[1])}</h2>{head}'
            f'<table><tr><th>figure</th><th class=n>{esc(names[0])}</th><th class=n>{esc(names[1])}</th><th class=n>difference</th><th class=n>relative</th></tr>{rows}</table>')


def to_html(report: dict, nav: str = "") -> str:
    """The whole page. `nav`: markup placed above the report (the dashboard's run picker), already safe."""
    figs = [report["run"]] + ([report["vs"]] if "vs" in report else [])
    names = [f["run"]["name"] for f in figs]
    title = "Report: " + " vs ".join(names)
    meta = "".join(
        f'<p class="muted">{esc(f["run"]["name"])}: {esc(f["run"]["lang"])}, {esc(f["run"]["api"])} {esc(f["run"]["model"])}, target {f["run"]["target"]:,}, {esc(f["run"]["state"])}</p>'
        for f in figs
    )
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>",
        nav,
        f"<h1>{esc(title)}</h1>{meta}",
        _comparison(report, names) if len(figs) == 2 else "",
        _section_funnel(figs, names),
        _section_diversity(figs, names),
        _section_similarity(figs, names),
        _section_lengths(figs, names),
        _section_scores(figs, names),
        "</body></html>\n",
    ]
    return "\n".join(p for p in parts if p)
