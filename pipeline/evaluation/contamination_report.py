"""Rendering of a contamination audit (pipeline.evaluation.contamination): HTML, Markdown and JSON, plus plot rows.

The HTML page is self-contained (inline CSS, no script, no external asset) so it can be mailed or
opened from a DVC cache: a summary table per benchmark (all / clean / dirty scores as GPT-3 table
C.1 reports them), the planted-leak check of the sample, the decontamination counts when computed,
and every dirty example with its overlapping spans in <mark> and links to the training documents'
sources (page URL, Reddit post). To look at it in a headless browser:

    chromium --headless --no-sandbox --disable-gpu --window-size=1400,2000 \
        --screenshot=contamination.png file://$PWD/reports/contamination/report.html
"""
from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from pipeline.core import records

CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;vertical-align:top}
th{background:#f3f3f3}mark{background:#ffd54f;padding:0 .1em}.text{max-width:45em;font-size:.9em}
.ok{color:#2e7d32}.bad{color:#c62828}code{font-size:.85em}"""
REDDIT_POST = "https://www.reddit.com/comments/{}"  # a post id (t3_ prefix dropped) opens the post


def highlight(text: str, spans: list[tuple[int, int]]) -> str:
    """HTML of `text` with each span wrapped in <mark>."""
    parts, pos = [], 0
    for s, e in spans:
        parts += [escape(text[pos:s]), "<mark>", escape(text[s:e]), "</mark>"]
        pos = e
    parts.append(escape(text[pos:]))
    return "".join(parts)


def _fmt(score: dict | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in score.items() if k != "n") + f" (n={score['n']})" if score else "-"


def doc_links(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, href) for a training document's sources: its page URL and its Reddit post."""
    links = []
    url = doc.get(records.URL) or ""
    if url.startswith(("http://", "https://")):
        links.append((doc.get(records.BOOK_TITLE) or url, url))
    post = str(doc.get(records.REDDIT_POST_ID) or "")
    if post:
        links.append((f"reddit post {post}", REDDIT_POST.format(post.removeprefix("t3_"))))
    return links


def _doc_cell(doc: dict[str, Any]) -> str:
    links = doc_links(doc)
    label = escape(str(doc.get(records.BOOK_TITLE) or doc["natural_key"] or doc["doc_id"]))
    head = " | ".join(f"<a href='{escape(href, quote=True)}'>{escape(str(text))}</a>" for text, href in links) or label
    where = [f"<code>{escape(doc['doc_id'])}</code>", escape(doc["stage_path"])]
    if doc.get(records.WARC_RECORD_ID):
        where.append(f"WARC {escape(str(doc.get(records.WARC_FILE, '')))} <code>{escape(doc[records.WARC_RECORD_ID])}</code>")
    return "<br>".join([head, *where])


def render_html(result: dict[str, Any]) -> str:
    """A self-contained HTML page (inline CSS): summary, leak check, dirty examples with <mark>ed spans."""
    h = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>Contamination report</title>",
         f"<style>{CSS}</style></head><body><h1>Train/test contamination (GPT-3 appendix C)</h1>",
         "<table><tr><th>task</th><th>n</th><th>examples</th><th>dirty</th><th>dirty fraction</th>"
         "<th>score all</th><th>score clean</th><th>score dirty</th></tr>"]
    for name, t in result["tasks"].items():
        h.append(f"<tr><td><a href='#dirty-{escape(name, quote=True)}'>{escape(name)}</a></td><td>{t['n']}</td>"
                 f"<td>{t['total']}</td><td>{t['dirty']}</td><td>{t['dirty_fraction']:.4f}</td>"
                 f"<td>{escape(_fmt(t['score_all']))}</td><td>{escape(_fmt(t['score_clean']))}</td>"
                 f"<td>{escape(_fmt(t['score_dirty']))}</td></tr>")
    h.append("</table>")
    leaks = result.get("leaks")
    if leaks:
        h.append("<h2>Planted leaks (truth.json)</h2><table><tr><th>task</th><th>planted</th>"
                 "<th>reached training</th><th>found</th><th>traced</th><th>unplanted dirty</th><th>exact</th></tr>")
        for name, v in leaks["per_task"].items():
            cls = "ok" if v["exact_match"] else "bad"
            h.append(f"<tr><td>{escape(name)}</td><td>{v['planted']}</td><td>{v['reached_training']}</td>"
                     f"<td>{v['found']}</td><td>{v['traced_to_carrier']}</td><td>{v['unplanted_dirty']}</td>"
                     f"<td class='{cls}'>{v['exact_match']}</td></tr>")
        h.append("</table>")
    decon = result.get("decontamination")
    if decon:
        h.append("<h2>Decontamination (GPT-3 appendix C, dry run)</h2><table>")
        h += [f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in decon.items()]
        h.append("</table>")
    for name, rows in result["dirty"].items():
        h.append(f"<h2 id='dirty-{escape(name, quote=True)}'>{escape(name)}: {len(rows)} dirty</h2>")
        if not rows:
            continue
        h.append("<table><tr><th>index</th><th>example (overlaps marked)</th><th>training documents</th></tr>")
        for r in rows:
            h.append(f"<tr><td>{r['index']}</td><td class='text'>{highlight(r['text'], r['spans'])}</td>"
                     f"<td>{'<hr>'.join(_doc_cell(d) for d in r['docs'])}</td></tr>")
        h.append("</table>")
    h.append("</body></html>\n")
    return "\n".join(h)


def render_markdown(result: dict[str, Any]) -> str:
    """The summary tables in Markdown, with each dirty example's carriers."""
    lines = ["# Train/test contamination (GPT-3 appendix C)", "",
             "| task | n | examples | dirty | dirty fraction | score all | score clean | score dirty |",
             "|---|---|---|---|---|---|---|---|"]
    for name, t in result["tasks"].items():
        lines.append(f"| {name} | {t['n']} | {t['total']} | {t['dirty']} | {t['dirty_fraction']:.4f} | "
                     f"{_fmt(t['score_all'])} | {_fmt(t['score_clean'])} | {_fmt(t['score_dirty'])} |")
    leaks = result.get("leaks")
    if leaks:
        lines += ["", "## Planted leaks", "", "| task | planted | reached training | found | traced | exact |",
                  "|---|---|---|---|---|---|"]
        for name, v in leaks["per_task"].items():
            lines.append(f"| {name} | {v['planted']} | {v['reached_training']} | {v['found']} | "
                         f"{v['traced_to_carrier']} | {v['exact_match']} |")
    decon = result.get("decontamination")
    if decon:
        lines += ["", "## Decontamination (GPT-3 appendix C, dry run)", "", "| count | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in decon.items()]
    for name, rows in result["dirty"].items():
        if rows:
            lines += ["", f"## {name}: dirty examples", ""]
            for r in rows:
                carriers = "; ".join(f"{d['natural_key'] or d['doc_id']} ({d['stage_path']})" for d in r["docs"])
                lines.append(f"- #{r['index']}: {r['matched_ngrams']} matched {len(r['spans'])} span(s) <- {carriers}")
    return "\n".join(lines) + "\n"


def plot_rows(result: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Rows for `dvc plots show`: dirty fraction per task, and accuracy per task and subset (all, clean,
    dirty; perplexity tasks stay in the metrics: their scale would flatten the accuracy bars)."""
    dirty = [{"task": name, "dirty_fraction": t["dirty_fraction"], "dirty": t["dirty"], "total": t["total"]}
             for name, t in result["tasks"].items()]
    scores = []
    for name, t in result["tasks"].items():
        for subset in ("all", "clean", "dirty"):
            s = t.get(f"score_{subset}")
            if s and "acc" in s:
                scores.append({"task_subset": f"{name}/{subset}", "task": name, "subset": subset,
                               "metric": "acc", "value": s["acc"], "n": s["n"]})
    return {"dirty_fraction": dirty, "scores": scores}


def write_reports(result: dict[str, Any], out_dir: str | Path) -> None:
    """report.json, report.md, report.html under `out_dir` (atomic writes)."""
    from pipeline.core import io

    out_dir = Path(out_dir)
    io.write_json(out_dir / "report.json", result)
    for name, text in (("report.md", render_markdown(result)), ("report.html", render_html(result))):
        with io.atomic_path(out_dir / name) as tmp:
            tmp.write_text(text, encoding="utf-8")
