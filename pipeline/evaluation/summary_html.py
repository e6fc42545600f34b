"""HTML rendering of the run summary (pipeline.evaluation.summary): one self-contained page, inline CSS,
charts drawn by hand as inline SVG (no script, no CDN, no dvc plots/vega), so it renders offline, from
a DVC cache or a mail attachment. `render` takes the plain data `summary.collect` returns. To look at it:

    chromium --headless --no-sandbox --disable-gpu --window-size=1200,2000 \
        --screenshot=summary.png file://$PWD/reports/summary.html
"""
from __future__ import annotations

import math
from html import escape
from typing import Any

NOT_RUN = "not run"
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b")  # series without a colour of their own
COLORS = {"train_loss": "#1f77b4", "val_loss": "#d62728", "target": "#9e9e9e", "achieved": "#1f77b4",
          "tokens": "#ff9800", "kept": "#43a047"}
CSS = """body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:74em;color:#222;
padding:0 1em;line-height:1.4}h1{margin-bottom:.2em}
h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
h3{margin:1em 0 .3em}table{border-collapse:collapse;margin:.5em 0 1em;font-size:.92em}
td,th{border:1px solid #d0d0d0;padding:.25em .55em;vertical-align:top}th{background:#f3f3f3;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.funnel{width:100%;table-layout:fixed}.muted{color:#777}.notrun{color:#999;font-style:italic}
.good{color:#2e7d32;font-weight:600}.bad{color:#c62828;font-weight:600}.cards{display:flex;flex-wrap:wrap;gap:.8em}
.card{border:1px solid #d0d0d0;border-radius:6px;padding:.6em .9em;min-width:12em;background:#fafafa}
.card b{display:block;font-size:1.35em}.card span{color:#555;font-size:.85em}svg{display:block;margin:.4em 0}
svg text{font-family:system-ui,sans-serif;font-size:12px;fill:#333}.note{font-size:.85em;color:#555}"""


def num(v: Any, digits: int = 4) -> str:
    """A cell: ints with thousands separators, floats to `digits` significant digits, None as an em dash."""
    if v is None:
        return "—"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int) or (float(v).is_integer() and abs(v) >= 1000):
        return f"{int(v):,}"
    return f"{v:,.{digits}g}" if abs(v) < 10 ** digits else f"{v:,.0f}"


def pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]: steps of 1, 2 or 5 times a power of ten."""
    if not hi > lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first, last = math.floor(lo / step), math.ceil(hi / step)
    return [round(k * step, 10) for k in range(first, last + 1)]


def line_chart(series: dict[str, list[tuple[float, float]]], baseline: float | None = None,
               baseline_label: str = "", width: int = 760, height: int = 330,
               x_label: str = "step", y_label: str = "loss (nats)", log_x: bool = False) -> str:
    """An SVG line chart: one <path> per series with one M/L command per logged point, a dashed baseline.
    `log_x`: a logarithmic x axis with a tick per power of ten (bench/dedup_scale.py's corpus sizes)."""
    pts = [p for s in series.values() for p in s]
    left, right, top, bottom = 58, 150, 14, 42
    xs = [p[0] for p in pts]
    xt = ([10.0 ** k for k in range(math.floor(math.log10(min(xs))), math.ceil(math.log10(max(xs))) + 1)] if log_x
          else nice_ticks(min(xs), max(xs)))
    ys = [p[1] for p in pts] + ([baseline] if baseline is not None else [])
    yt = nice_ticks(min(ys), max(ys))
    scale = math.log10 if log_x else (lambda v: v)
    x0, x1, y0, y1 = scale(xt[0]), scale(xt[-1]), yt[0], yt[-1]

    def sx(x: float) -> float:
        return left + (scale(x) - x0) / ((x1 - x0) or 1.0) * (width - left - right)

    def sy(y: float) -> float:
        return top + (y1 - y) / (y1 - y0) * (height - top - bottom)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'aria-label="{escape(y_label)} by {escape(x_label)}"><title>{escape(y_label)} by {escape(x_label)}</title>',
           f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" fill="#fff" '
           'stroke="#bbb"/>']
    for t in yt:
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" stroke="#eee"/>'
                   f'<text x="{left - 6}" y="{sy(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    for t in xt:
        out.append(f'<line x1="{sx(t):.1f}" x2="{sx(t):.1f}" y1="{top}" y2="{height - bottom}" stroke="#f2f2f2"/>'
                   f'<text x="{sx(t):.1f}" y="{height - bottom + 16}" text-anchor="middle">{num(t) if log_x else f"{t:g}"}</text>')
    out.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 6}" text-anchor="middle">'
               f'{escape(x_label)}</text>'
               f'<text transform="translate(14,{(top + height - bottom) / 2:.0f}) rotate(-90)" '
               f'text-anchor="middle">{escape(y_label)}</text>')
    if baseline is not None:
        out.append(f'<line class="baseline" x1="{left}" x2="{width - right}" y1="{sy(baseline):.1f}" '
                   f'y2="{sy(baseline):.1f}" stroke="#555" stroke-dasharray="6 4"/>')
    legend_y = top + 10
    for i, (name, s) in enumerate(series.items()):
        if not s:
            continue
        color = COLORS.get(name, PALETTE[i % len(PALETTE)])
        d = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(s))
        out.append(f'<path class="series" data-series="{escape(name)}" data-points="{len(s)}" d="{d}" fill="none" '
                   f'stroke="{color}" stroke-width="1.8"/>')
        if len(s) <= 40:
            out += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}"/>' for x, y in s]
        out.append(f'<line x1="{width - right + 10}" x2="{width - right + 34}" y1="{legend_y}" y2="{legend_y}" '
                   f'stroke="{color}" stroke-width="2.5"/><text x="{width - right + 40}" y="{legend_y + 4}">'
                   f'{escape(name)} ({len(s)})</text>')
        legend_y += 20
    if baseline is not None:
        out.append(f'<line x1="{width - right + 10}" x2="{width - right + 34}" y1="{legend_y}" y2="{legend_y}" '
                   f'stroke="#555" stroke-dasharray="6 4"/><text x="{width - right + 40}" y="{legend_y + 4}">'
                   f'{escape(baseline_label)}</text>')
    return "".join(out) + "</svg>"


def share_bars(rows: list[dict[str, Any]], width: int = 760) -> str:
    """Horizontal bars per source: target share, achieved share (characters), share of training tokens."""
    kinds = [("target_share", "target", "target"), ("achieved_share", "achieved", "achieved (chars)"),
             ("token_share", "tokens", "train tokens")]
    left, bar, gap = 90, 13, 12
    height = len(rows) * (3 * bar + gap) + 34
    scale = (width - left - 60) / 1.0
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           'aria-label="mixture shares"><title>mixture: target vs achieved shares</title>']
    y = 4
    for r in rows:
        out.append(f'<text x="{left - 8}" y="{y + 1.5 * bar + 4}" text-anchor="end">{escape(str(r["source"]))}</text>')
        for key, color, _ in kinds:
            v = r.get(key)
            if v is not None:
                out.append(f'<rect x="{left}" y="{y}" width="{max(v * scale, 1):.1f}" height="{bar - 2}" '
                           f'fill="{COLORS[color]}"/>'
                           f'<text x="{left + v * scale + 5:.1f}" y="{y + bar - 3}">{pct(v)}</text>')
            y += bar
        y += gap
    x = left
    for _, color, label in kinds:
        out.append(f'<rect x="{x}" y="{y + 6}" width="12" height="10" fill="{COLORS[color]}"/>'
                   f'<text x="{x + 16}" y="{y + 15}">{escape(label)}</text>')
        x += 30 + 8 * len(label)
    return "".join(out) + "</svg>"


def kept_bar(docs_in: Any, docs_out: Any, width: int = 90) -> str:
    """A small bar: the fraction of a stage's input it kept."""
    if not isinstance(docs_in, int) or not isinstance(docs_out, int) or docs_in <= 0:
        return ""
    frac = min(docs_out / docs_in, 1.0)
    return (f'<svg width="{width}" height="10" style="display:inline-block;margin:0"><rect width="{width}" height="10" '
            f'fill="#eee"/><rect width="{frac * width:.1f}" height="10" fill="{COLORS["kept"]}"/></svg>')


def _table(head: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td{' class=n' if i in numeric else ''}>{c}</td>" for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _not_run(what: str) -> str:
    return f'<p class="notrun">{escape(what)}: {NOT_RUN}.</p>'


def _cards(s: dict[str, Any]) -> str:
    train, ev, con, exp = s.get("train") or {}, s.get("evals") or {}, s.get("contamination"), s.get("export")
    val = ev.get("val") or {}
    tokens = sum((r["tokens"] or {}).get("train", 0) for rows in s["funnel"].values() for r in rows)
    cards = [(num(train.get("params")) if train else NOT_RUN, "model parameters"),
             (f"{num(train.get('steps'))} steps" if train else NOT_RUN,
              f"{num(train.get('tokens_seen'))} tokens seen" if train else "training"),
             (num(tokens) if tokens else NOT_RUN, "training tokens after the mix"),
             (num(val.get("loss")) if val else NOT_RUN,
              f"val loss (nats); unigram {num(val.get('unigram_entropy_nats'))}" if val else "validation loss")]
    if con:
        dirty = sum(r["dirty"] or 0 for r in con["rows"])
        cards.append((f"{dirty} dirty", f"eval examples overlapping training ({len(con['rows'])} benchmarks)"))
    else:
        cards.append((NOT_RUN, "contamination"))
    if exp:
        check = exp.get("check") or {}
        cards.append(("exported" if exp.get("exported") else "not exported",
                      f"HF GPT-2 folder; max |Δlogit| {num(check.get('max_abs_logit_diff'), 2)}" if exp.get("exported")
                      else escape(str(exp.get("reason", "")))))
    return '<div class="cards">' + "".join(f'<div class="card"><b>{escape(str(a))}</b><span>{b}</span></div>'
                                           for a, b in cards) + "</div>"


def _stages(s: dict[str, Any]) -> str:
    rows = []
    for r in s["stages"]:
        if not r["run"]:
            rows.append([escape(r["stage"]), f'<span class="notrun">{NOT_RUN}</span>', "", "", "", ""])
            continue
        pr = f"{num(r['precision'])} / {num(r['recall'])}" if r["precision"] is not None else ""
        rows.append([escape(r["stage"]), num(r["docs_in"]), num(r["docs_out"]), num(r["dropped_total"]), pr,
                     num(r["seconds"])])
    return _table(["stage", "in", "out", "dropped", "P / R vs planted truth", "seconds"], rows, {1, 2, 3, 5})


FUNNEL_COLUMNS = [("stage", 9), ("unit", 12), ("in", 5), ("out", 5), ("kept", 8), ("dropped by reason", 15),
                  ("size in → out", 16), ("tokens", 10), ("note", 20)]  # (header, width in %)


def _source_line(rows: list[dict[str, Any]]) -> str:
    """One sentence per source: what came in, what reached training."""
    first = next((r for r in rows if r["run"] and r["docs_in"] is not None), None)
    tokens = next((r["tokens"] for r in rows if r["tokens"]), None)
    if first is None and tokens is None:
        return f'<p class="notrun">{NOT_RUN}.</p>'
    parts = []
    if first is not None:
        parts.append(f"{num(first['docs_in'])} {escape(first['unit'].split(' → ')[0])} "
                     f"({num(first['size_in'])} {first['size_unit']}) in")
    if tokens:
        parts.append(f"<b>{num(tokens.get('train'))}</b> training tokens" + (
            f" and {num(tokens['val'])} validation tokens" if tokens.get("val") else "") + " out")
    return "<p>" + "; ".join(parts) + ".</p>"


def _funnel(s: dict[str, Any]) -> str:
    cols = "".join(f'<col style="width:{w}%">' for _, w in FUNNEL_COLUMNS)
    head = "".join(f"<th>{h}</th>" for h, _ in FUNNEL_COLUMNS)
    out = []
    for source, rows in s["funnel"].items():
        out.append(f"<h3>{escape(s['source_names'].get(source, source))}</h3>" + _source_line(rows))
        if not any(r["run"] for r in rows):
            continue
        cells = []
        for r in rows:
            if not r["run"]:
                cells.append([escape(r["stage"]), escape(r["unit"]), f'<span class="notrun">{NOT_RUN}</span>'])
                continue
            drops = "<br>".join(f"{escape(k)} <b>{num(v)}</b>" for k, v in r["dropped"].items())
            size = (f"{num(r['size_in'])} →<br>{num(r['size_out'])} <span class=muted>{r['size_unit']}</span>"
                    if r["size_in"] is not None else "")
            toks = "<br>".join(f"{k} <b>{num(v)}</b>" for k, v in (r["tokens"] or {}).items())
            cells.append([escape(r["stage"]), escape(r["unit"]), num(r["docs_in"]), num(r["docs_out"]),
                          kept_bar(r["docs_in"], r["docs_out"], 70), drops, size, toks, escape(r["note"])])
        body = "".join("<tr>" + "".join(f"<td{' class=n' if i in (2, 3, 6, 7) else ''}>{c}</td>"
                                        for i, c in enumerate(r[:-1]))
                       + (f"<td>{r[-1]}</td>" if len(r) == len(FUNNEL_COLUMNS)
                          else f"<td colspan={len(FUNNEL_COLUMNS) - len(r) + 1}>{r[-1]}</td>") + "</tr>" for r in cells)
        out.append(f'<table class="funnel"><colgroup>{cols}</colgroup><tr>{head}</tr>{body}</table>')
    return "".join(out)


def _mixture(mix: dict[str, Any] | None) -> str:
    if mix is None:
        return _not_run("Mixture (mix stage)")
    rows = [[escape(str(r["source"])), pct(r["target_share"]), pct(r["achieved_share"]), pct(r["token_share"]),
             num(r["epochs"]), num(r["train_docs"]), num(r["train_chars"])] for r in mix["rows"]]
    note = f"Largest share error {num(mix['max_share_error'])}."
    if mix["over_repeated"]:
        note += " Over-repeated sources: " + escape(", ".join(f"{k} {v}" for k, v in mix["over_repeated"].items()))
    return (share_bars(mix["rows"]) + _table(["source", "target share", "achieved share (chars)", "train-token share",
                                               "epochs", "train docs", "train chars"], rows, {1, 2, 3, 4, 5, 6})
            + f'<p class="note">{note} Targets are GPT-3 table 2.2 weights; a source too small for its weight '
              'is capped at its maximum epochs, so the others grow.</p>')


def _losses(loss: dict[str, Any] | None) -> str:
    if loss is None:
        return _not_run("Loss curves (reports/train dvclive files)")
    h = loss["unigram_entropy_nats"]
    chart = line_chart({k: v for k, v in loss["series"].items() if v}, h, f"unigram {num(h)}" if h else "")
    missing = [k for k, v in loss["series"].items() if not v]
    tail = "".join(f'<p class="notrun">{escape(k)}: {NOT_RUN}.</p>' for k in missing)
    return chart + tail + ('<p class="note">The dashed line is the unigram entropy of the training tokens: a model '
                           'that learned nothing beyond token frequencies sits there.</p>' if h else "")


def _verdict(r: dict[str, Any]) -> str:
    b, ours = r.get("baseline_value"), r["ours"]
    if b is None or ours is None:
        return ""
    b = 100 * b if r["percent"] else b
    better = ours > b if r["higher_is_better"] else ours < b
    return ' class="good"' if better else ' class="bad"'


def _evals(ev: dict[str, Any] | None, papers: dict[str, dict], train: dict[str, Any] | None) -> str:
    if ev is None:
        return _not_run("Evaluation (evaluate stage)")
    rows = []
    for r in ev["rows"]:
        unit = "%" if r["percent"] else ""
        ours = (f"<span{_verdict(r)}>{num(r['ours'])}{unit}</span>" if r["run"]
                else f'<span class="notrun">{NOT_RUN}</span>')
        rows.append([escape(r["task"]), escape(r["what"]), ours, escape(r["baseline"])]
                    + [num(r[k]) + (unit if r[k] is not None else "") for k in papers] + [num(r["n"])])
    val = ev["val"]
    head = ["task", "metric", "ours", "chance / baseline"] + [escape(p["label"]) for p in papers.values()] + ["n"]
    out = _table(head, rows, set(range(4, 5 + len(papers))) | {2})
    if val:
        out += (f"<p>Validation loss <b>{num(val.get('loss'))}</b> nats (perplexity {num(val.get('perplexity'))}) "
                f"on {num(val.get('tokens'))} held-out tokens vs unigram entropy "
                f"{num(val.get('unigram_entropy_nats'))}.</p>")
    ours = (f" Ours: {num(train.get('params'))} parameters, {num(train.get('tokens_seen'))} training tokens seen; "
            "GPT-3 125M saw 300B.") if train else ""
    out += ('<p class="note">Green: better than chance or the unigram baseline; red: not. Paper columns are paper '
            "figures (full benchmarks, zero-shot) for scale, not targets: "
            + "; ".join(f"{escape(p['label'])}: {escape(p['source'])}" for p in papers.values()) + f".{ours}</p>")
    return out


def _contamination(con: dict[str, Any] | None) -> str:
    if con is None:
        return _not_run("Contamination (contamination stage)")
    rows = []
    for r in con["rows"]:
        cells = ["<br>".join(f"{escape(k)} {num(d.get(k))}" for k in r["metrics"]) for d in
                 (r["all"], r["clean"], r["clean_minus_all"])]
        rows.append([escape(r["task"]), num(r["n"]), f"{num(r['dirty'])} / {num(r['total'])}", pct(r["dirty_fraction"]),
                     *cells])
    out = _table(["benchmark", "n-gram", "dirty / total", "dirty", "score, all", "score, clean", "clean − all"], rows,
                 {1, 2, 3})
    lk = con.get("leaks")
    if lk:
        ok = lk.get("exact_match")
        out += (f"<p>Planted leaks (sample): {num(lk.get('planted'))} planted, {num(lk.get('reached_training'))} "
                f"reached training, {num(lk.get('found'))} found, {num(lk.get('unplanted_dirty'))} unplanted dirty: "
                f"<span class='{'good' if ok else 'bad'}'>{'exact match' if ok else 'mismatch'}</span>.</p>")
    out += ('<p class="note">Scores are recomputed from the per-example rows (reports/evaluate/examples.jsonl); '
            "WikiText's rows are paragraphs only, so its score differs from the whole-article perplexity in (d).</p>")
    href = escape(con["link"], quote=True)
    return out + f'<p>Full audit with every dirty example and its training document: <a href="{href}">{href}</a></p>'


def render(s: dict[str, Any], extra: list[tuple[str, str]] = ()) -> str:
    """The whole page from `summary.collect`'s data, then `extra` (heading, HTML) sections."""
    run = sum(r["run"] for r in s["stages"])
    body = [f"<h1>gpt-repro run summary</h1><p class='muted'>From {len(s['reports'])} stage reports in reports/ "
            f"({run} of {len(s['stages'])} stages ran); regenerate with <code>dvc repro summary</code>.</p>",
            _cards(s), "<h2>Stages</h2>", _stages(s),
            "<h2>(a) Data funnel per source</h2><p class='note'>Documents and bytes at each stage, raw input to "
            "training tokens; every drop has a reason. The mix row's out counts unique documents (train + val); "
            "its size is characters, repeats included.</p>", _funnel(s),
            "<h2>(b) Mixture: achieved vs target shares</h2>", _mixture(s["mixture"]),
            "<h2>(c) Loss curves</h2>", _losses(s["losses"]),
            "<h2>(d) Evaluation</h2>", _evals(s["evals"], s["papers"], s.get("train")),
            "<h2>(e) Contamination</h2>", _contamination(s["contamination"])]
    body += [f"<h2>{escape(title)}</h2>{section}" for title, section in extra]
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>gpt-repro run summary</title>"
            f"<style>{CSS}</style></head><body>" + "\n".join(body) + "</body></html>\n")
