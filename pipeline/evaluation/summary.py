"""One-page run summary: reports/summary.html (self-contained: inline CSS and hand-drawn SVG, no script)
and reports/summary.md, built only from what the stages wrote.

Inputs: every reports/<stage>.json (StageReport, pipeline.core.report) and the train stage's dvclive
folder (reports/train/plots/metrics/{train_loss,val_loss}.tsv). Sections:
  (a) the data funnel per source, raw input to training tokens: documents and bytes in and out at each
      stage, drops by reason (books: books -> dedup -> mix -> tokenize; WebText: reddit_urls -> scrape
      -> ...; crawl: cc -> quality_filter -> ...); dedup, mix and tokenize report per source;
  (b) the mixture: achieved vs target shares (GPT-3 table 2.2 weights), epochs, token shares;
  (c) train and val loss against the unigram entropy the model must beat;
  (d) evals beside chance, the unigram baseline and the papers' figures for GPT-2 117M and GPT-3 125M;
  (e) the contamination headline (GPT-3 appendix C), linking to the full audit;
  (f) each paper claim the claim stages test, beside this run's figure (summary_claims.py).
A missing or partial report never fails the page: its section or row says "not run" (a profile may
skip stages). Rendering lives in summary_html.py (HTML) and here (Markdown).
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

from pipeline.core import io
from pipeline.evaluation import summary_claims, summary_html
from pipeline.evaluation.summary_html import NOT_RUN, num, pct

STAGES = ("sample", "fetch", "books", "reddit_urls", "scrape", "cc", "quality_train", "quality_filter", "dedup", "mix",
          "tokenizer", "tokenize", "train", "evaluate", "contamination", "export") + summary_claims.CLAIM_STAGES
# The stages that see one source only, in DAG order, with what their "documents" are; dedup, mix and
# tokenize then report each source inside one report (per_source, tokens_per_source).
SOURCE_STAGES = {
    "books": [("books", "book files → books")],
    "webtext": [("reddit_urls", "Reddit posts → URLs"), ("scrape", "URLs → pages")],
    "cc": [("cc", "WARC responses → pages"), ("quality_filter", "pages")],
}
SOURCE_NAMES = {"books": "Books (GPT-1 BooksCorpus)", "webtext": "WebText (GPT-2)", "cc": "Common Crawl (GPT-3)"}
# Zero-shot figures as published, on the full benchmarks with 40 GB (GPT-2) / 300B tokens (GPT-3) of training:
# a scale reference, not a target for the sample's sub-million-parameter model.
PAPER = {
    "gpt2_117m": {"label": "GPT-2 117M (paper)", "source": "GPT-2 paper table 3, zero-shot",
                  "figures": {("lambada", "acc"): 45.99, ("lambada", "ppl"): 35.13,
                              ("wikitext", "word_perplexity"): 29.41}},
    "gpt3_125m": {"label": "GPT-3 125M (paper)", "source": "GPT-3 paper table H.1, GPT-3 Small, zero-shot; its "
                  "multiple-choice likelihoods are normalised per token (sec. 2.4), our acc_norm per character",
                  "figures": {("lambada", "acc"): 42.7, ("lambada", "ppl"): 18.6, ("hellaswag", "acc_norm"): 33.7,
                              ("piqa", "acc"): 64.6}},
}
# (task, metric, what it is, higher is better); accuracies are shown in percent like the papers'.
EVAL_ROWS = [
    ("lambada", "acc", "last-word accuracy", True), ("lambada", "ppl", "last-word perplexity", False),
    ("hellaswag", "acc", "accuracy", True), ("hellaswag", "acc_norm", "accuracy, length-normalised", True),
    ("piqa", "acc", "accuracy", True), ("piqa", "acc_norm", "accuracy, length-normalised", True),
    ("wikitext", "token_perplexity", "token perplexity", False),
    ("wikitext", "word_perplexity", "word perplexity", False),
]


def load_reports(reports_dir: str | Path) -> dict[str, dict]:
    """Every reports/<stage>.json but this stage's own; an unreadable one counts as not run."""
    out = {}
    for path in sorted(Path(reports_dir).glob("*.json")):
        if path.stem == "summary":
            continue
        try:
            data = io.read_json(path)
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            out[path.stem] = data
    return out


def read_series(live_dir: str | Path | None, name: str) -> list[tuple[float, float]]:
    """(step, value) rows of a dvclive plots/metrics/<name>.tsv; [] when absent or unreadable."""
    if live_dir is None:
        return []
    path = Path(live_dir) / "plots" / "metrics" / f"{name}.tsv"
    rows = []
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                try:
                    step, value = float(row["step"]), float(row[name])
                except (KeyError, TypeError, ValueError):
                    continue
                if math.isfinite(value):
                    rows.append((step, value))
    except OSError:
        return []
    return rows


def _row(stage: str, unit: str, rep: dict | None, **fields) -> dict[str, Any]:
    base = {"stage": stage, "unit": unit, "run": rep is not None, "docs_in": None, "docs_out": None,
            "size_in": None, "size_out": None, "size_unit": "bytes", "tokens": None, "dropped": {}, "note": ""}
    return {**base, **fields}


def _stage_row(stage: str, unit: str, rep: dict | None) -> dict[str, Any]:
    if rep is None:
        return _row(stage, unit, None)
    errors = ", ".join(f"{k} {v}" for k, v in (rep.get("errors") or {}).items())
    return _row(stage, unit, rep, docs_in=rep.get("docs_in"), docs_out=rep.get("docs_out"),
                size_in=rep.get("bytes_in"), size_out=rep.get("bytes_out"),
                dropped={k: v for k, v in (rep.get("dropped") or {}).items() if v},
                note=f"errors (skipped input): {errors}" if errors else "")


def _dedup_row(rep: dict | None, source: str) -> dict[str, Any]:
    part = (rep or {}).get("per_source", {}).get(source)
    if part is None:
        return _row("dedup", "documents", None)
    counts = ("docs_in", "docs_out", "bytes_in", "bytes_out")
    return _row("dedup", "documents", part, docs_in=part.get("docs_in"), docs_out=part.get("docs_out"),
                size_in=part.get("bytes_in"), size_out=part.get("bytes_out"),
                dropped={k: v for k, v in part.items() if k not in counts and isinstance(v, int) and v})


def _mix_row(rep: dict | None, source: str) -> dict[str, Any]:
    part = (rep or {}).get("per_source", {}).get(source)
    if part is None:
        return _row("mix", "documents → train + val", None)
    kept = (part.get("train_unique_docs") or 0) + (part.get("val_docs") or 0)
    unsampled = (part.get("docs_in") or 0) - kept
    note = (f"train {part.get('train_docs')} docs with repeats ({part.get('epochs')} epochs), "
            f"val {part.get('val_docs')} docs")
    return _row("mix", "documents → train + val", part, docs_in=part.get("docs_in"), docs_out=kept,
                size_in=part.get("chars_in"), size_out=(part.get("train_chars") or 0) + (part.get("val_chars") or 0),
                size_unit="chars", dropped={"not_sampled": unsampled} if unsampled > 0 else {}, note=note)


def _tokenize_row(rep: dict | None, source: str) -> dict[str, Any]:
    per = (rep or {}).get("tokens_per_source", {})
    tokens = {split: per[split][source] for split in ("train", "val") if source in per.get(split, {})}
    if not tokens:
        return _row("tokenize", "tokens", None)
    return _row("tokenize", "tokens", rep, tokens=tokens,
                note=f"{rep['bytes_per_token']} bytes per token overall" if rep.get("bytes_per_token") else "")


def funnel(reports: dict[str, dict]) -> dict[str, list[dict[str, Any]]]:
    """Per source, one row per stage from raw input to training tokens (section a)."""
    sources = list(SOURCE_STAGES)
    for stage in ("dedup", "mix"):
        sources += [s for s in reports.get(stage, {}).get("per_source", {}) if s not in sources]
    out = {}
    for source in sources:
        rows = [_stage_row(stage, unit, reports.get(stage)) for stage, unit in SOURCE_STAGES.get(source, [])]
        rows += [_dedup_row(reports.get("dedup"), source), _mix_row(reports.get("mix"), source),
                 _tokenize_row(reports.get("tokenize"), source)]
        out[source] = rows
    return out


def mixture(reports: dict[str, dict]) -> dict[str, Any] | None:
    """Target vs achieved shares per source (section b); None when mix did not run."""
    mix = reports.get("mix")
    if not mix or not mix.get("per_source"):
        return None
    train_tokens = reports.get("tokenize", {}).get("tokens_per_source", {}).get("train", {})
    total = sum(train_tokens.values())
    rows = [{"source": s, "target_share": p.get("target_share"), "achieved_share": p.get("achieved_share"),
             "epochs": p.get("epochs"), "train_docs": p.get("train_docs"), "train_chars": p.get("train_chars"),
             "token_share": round(train_tokens[s] / total, 4) if total and s in train_tokens else None}
            for s, p in mix["per_source"].items()]
    return {"rows": rows, "max_share_error": mix.get("max_share_error"),
            "over_repeated": mix.get("over_repeated_sources") or {}}


def losses(reports: dict[str, dict], live_dir: str | Path | None) -> dict[str, Any] | None:
    """Train/val loss series and the unigram baseline (section c); None when neither curve exists."""
    series = {name: read_series(live_dir, name) for name in ("train_loss", "val_loss")}
    if not any(series.values()):
        return None
    train = reports.get("train", {})
    baseline = train.get("unigram_entropy_nats") or reports.get("tokenize", {}).get("unigram_entropy_nats")
    return {"series": series, "unigram_entropy_nats": baseline, "final_val_loss": train.get("final_val_loss"),
            "steps": train.get("steps"), "params": train.get("params"), "tokens_seen": train.get("tokens_seen")}


def _baseline(task: str, metric: str, ev: dict, m: dict) -> tuple[str, float | None]:
    """Chance or baseline of one eval row: (text, value in the row's units before percent)."""
    if metric.startswith("acc"):
        chance = m.get("chance_acc", ev.get("chance", {}).get(f"{task}_acc"))
        return (f"{100 * chance:g}% (chance)", chance) if chance is not None else ("", None)
    h = (ev.get("val") or {}).get("unigram_entropy_nats")
    if metric == "token_perplexity" and h:
        uniform = ev.get("chance", {}).get("uniform_token_perplexity")
        return f"{math.exp(h):,.1f} (unigram)" + (f"; {uniform:,} (uniform)" if uniform else ""), math.exp(h)
    if metric == "word_perplexity" and h and m.get("tokens") and m.get("words"):
        ratio = m["tokens"] / m["words"]  # the unigram's per-token loss, counted per word as evaluate does
        return f"{math.exp(h * ratio):,.0f} (unigram, {ratio:.2f} tokens/word)", math.exp(h * ratio)
    return "", None


def evals(reports: dict[str, dict]) -> dict[str, Any] | None:
    """Our scores beside chance, the unigram baseline and the papers' figures (section d)."""
    ev = reports.get("evaluate")
    if not ev:
        return None
    tasks, rows = ev.get("tasks") or {}, []
    for task, metric, what, higher in EVAL_ROWS:
        m = tasks.get(task)
        if m is None and metric != "acc" and task != "wikitext":
            continue  # one "not run" row per missing task is enough
        ours = None if m is None else m.get(metric)
        if m is not None and ours is None:
            continue  # the task ran but has no such metric (lambada has no acc_norm)
        pct = metric.startswith("acc")
        rows.append({"task": task, "metric": metric, "what": what, "higher_is_better": higher,
                     "ours": None if ours is None else (round(100 * ours, 2) if pct else ours), "percent": pct,
                     "run": m is not None, "n": None if m is None else m.get("n"),
                     **dict(zip(("baseline", "baseline_value"),
                                ("", None) if m is None else _baseline(task, metric, ev, m))),
                     **{k: p["figures"].get((task, metric)) for k, p in PAPER.items()}})
    val = ev.get("val") or {}
    return {"rows": rows, "val": val, "checkpoint": ev.get("checkpoint") or {},
            "num_fewshot": (ev.get("protocol") or {}).get("num_fewshot")}


def contamination(reports: dict[str, dict], link: str) -> dict[str, Any] | None:
    """Per benchmark dirty counts and all vs clean scores (section e)."""
    rep = reports.get("contamination")
    if not rep:
        return None
    rows = []
    for task, t in (rep.get("tasks") or {}).items():
        metrics = [k for k in (t.get("score_all") or {}) if k != "n"]
        rows.append({"task": task, "n": t.get("n"), "dirty": t.get("dirty"), "total": t.get("total"),
                     "dirty_fraction": t.get("dirty_fraction"), "metrics": metrics,
                     "all": t.get("score_all") or {}, "clean": t.get("score_clean") or {},
                     "clean_minus_all": t.get("clean_minus_all") or {}})
    return {"rows": rows, "leaks": rep.get("leaks"), "link": link, "train_documents": (rep.get("train") or {}).get(
        "documents")}


def stage_table(reports: dict[str, dict]) -> list[dict[str, Any]]:
    """One line per known stage (and any other report found): run or not, docs, drops, truth P/R, seconds."""
    names = list(STAGES) + sorted(set(reports) - set(STAGES))
    rows = []
    for name in names:
        rep = reports.get(name)
        truth = (rep or {}).get("truth") or {}
        rows.append({"stage": name, "run": rep is not None, "docs_in": (rep or {}).get("docs_in"),
                     "docs_out": (rep or {}).get("docs_out"), "dropped_total": (rep or {}).get("dropped_total"),
                     "precision": truth.get("precision"), "recall": truth.get("recall"),
                     "seconds": (rep or {}).get("seconds")})
    return rows


def collect(reports_dir: str | Path, live_dir: str | Path | None, page_dir: str | Path) -> dict[str, Any]:
    """Everything the page shows, as plain data (the tests read this as well as the page)."""
    reports = load_reports(reports_dir)
    link = os.path.relpath(Path(reports_dir) / "contamination" / "report.html", Path(page_dir))
    return {"reports": sorted(reports), "stages": stage_table(reports), "funnel": funnel(reports),
            "mixture": mixture(reports), "losses": losses(reports, live_dir), "evals": evals(reports),
            "contamination": contamination(reports, link), "export": reports.get("export"),
            "claims": summary_claims.rows(reports),
            "train": reports.get("train"), "source_names": SOURCE_NAMES,
            "papers": {k: {"label": p["label"], "source": p["source"]} for k, p in PAPER.items()}}


def to_markdown(s: dict[str, Any]) -> str:
    """The same page as Markdown tables (curves as their endpoints)."""
    out = ["# Run summary", ""]
    out += ["## Stages", "", "| stage | docs in | docs out | dropped | P / R vs truth | seconds |",
            "|---|---|---|---|---|---|"]
    for r in s["stages"]:
        pr = f"{num(r['precision'])} / {num(r['recall'])}" if r["precision"] is not None else ""
        out.append(f"| {r['stage']} | {num(r['docs_in'])} | {num(r['docs_out'])} | {num(r['dropped_total'])} | {pr} | "
                   f"{num(r['seconds'])} |" if r["run"] else f"| {r['stage']} | {NOT_RUN} | | | | |")
    out += ["", "## (a) Data funnel per source", ""]
    for source, rows in s["funnel"].items():
        out += [f"### {s['source_names'].get(source, source)}", "",
                "| stage | unit | in | out | dropped by reason | size in -> out | tokens | note |",
                "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            if not r["run"]:
                out.append(f"| {r['stage']} | {r['unit']} | {NOT_RUN} | | | | | |")
                continue
            drops = ", ".join(f"{k} {v}" for k, v in r["dropped"].items())
            size = f"{num(r['size_in'])} -> {num(r['size_out'])} {r['size_unit']}" if r["size_in"] is not None else ""
            toks = ", ".join(f"{k} {num(v)}" for k, v in (r["tokens"] or {}).items())
            out.append(f"| {r['stage']} | {r['unit']} | {num(r['docs_in'])} | {num(r['docs_out'])} | {drops} | "
                       f"{size} | {toks} | {r['note']} |")
        out.append("")
    out += ["## (b) Mixture", ""]
    mix = s["mixture"]
    if mix is None:
        out += [f"Mixture: {NOT_RUN}.", ""]
    else:
        out += ["| source | target share | achieved share (chars) | token share | epochs | train docs |",
                "|---|---|---|---|---|---|"]
        out += [f"| {r['source']} | {pct(r['target_share'])} | {pct(r['achieved_share'])} | {pct(r['token_share'])} | "
                f"{num(r['epochs'])} | {num(r['train_docs'])} |" for r in mix["rows"]]
        out += ["", f"Largest share error: {num(mix['max_share_error'])}.", ""]
    out += ["## (c) Loss", ""]
    loss = s["losses"]
    if loss is None:
        out += [f"Loss curves: {NOT_RUN}.", ""]
    else:
        for name, pts in loss["series"].items():
            ends = (f", step {num(pts[0][0])} {num(pts[0][1])} -> step {num(pts[-1][0])} {num(pts[-1][1])}"
                    if pts else f" ({NOT_RUN})")
            out.append(f"- {name}: {len(pts)} points{ends}")
        out += [f"- unigram entropy (the baseline to beat): {num(loss['unigram_entropy_nats'])} nats", ""]
    out += ["## (d) Evaluation", ""]
    ev = s["evals"]
    if ev is None:
        out += [f"Evaluation: {NOT_RUN}.", ""]
    else:
        labels = [p["label"] for p in s["papers"].values()]
        out += ["| task | metric | ours | chance / baseline | " + " | ".join(labels) + " | n |",
                "|---|---|---|---|" + "---|" * len(labels) + "---|"]
        for r in ev["rows"]:
            ours = (f"{num(r['ours'])}{'%' if r['percent'] else ''}") if r["run"] else NOT_RUN
            papers = " | ".join(num(r[k]) + ("%" if r["percent"] and r[k] is not None else "") for k in s["papers"])
            out.append(f"| {r['task']} | {r['metric']} | {ours} | {r['baseline']} | {papers} | {num(r['n'])} |")
        val = ev["val"]
        if val:
            out += ["", f"Validation loss {num(val.get('loss'))} nats (perplexity {num(val.get('perplexity'))}) vs "
                    f"unigram entropy {num(val.get('unigram_entropy_nats'))} nats."]
        out += [""] + [f"- {p['label']}: {p['source']}." for p in s["papers"].values()] + [""]
    out += ["## (e) Contamination", ""]
    con = s["contamination"]
    if con is None:
        out += [f"Contamination: {NOT_RUN}.", ""]
    else:
        out += ["| task | n-gram | dirty / total | dirty fraction | score all | score clean | clean - all |",
                "|---|---|---|---|---|---|---|"]
        for r in con["rows"]:
            cells = [", ".join(f"{k} {num(d.get(k))}" for k in r["metrics"]) for d in (r["all"], r["clean"],
                                                                                      r["clean_minus_all"])]
            out.append(f"| {r['task']} | {r['n']} | {num(r['dirty'])} / {num(r['total'])} | "
                       f"{num(r['dirty_fraction'])} | " + " | ".join(cells) + " |")
        if con["leaks"]:
            out += ["", "Planted leaks: " + ", ".join(f"{k} {v}" for k, v in con["leaks"].items()) + "."]
        out += ["", f"Full audit: [{con['link']}]({con['link']})", ""]
    out += summary_claims.markdown(s["claims"])
    return "\n".join(out)


def run(reports_dir: str | Path, live_dir: str | Path | None, html_path: str | Path, md_path: str | Path,
        report: Any = None) -> dict[str, Any]:
    """The summary stage: collect, then write the HTML and Markdown pages atomically."""
    html_path, md_path = Path(html_path), Path(md_path)
    s = collect(reports_dir, live_dir, html_path.parent)
    page = summary_html.render(s, [("(f) The papers' claims at this scale", summary_claims.html(s["claims"]))])
    for path, text in ((html_path, page), (md_path, to_markdown(s))):
        with io.atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    if report is not None:
        sections = {k: NOT_RUN if s[k] is None else "ok" for k in ("mixture", "losses", "evals", "contamination")}
        sections["funnel"] = "ok" if any(r["run"] for rows in s["funnel"].values() for r in rows) else NOT_RUN
        report.docs_in = len(s["reports"])
        report.bytes_out = len(page.encode()) + md_path.stat().st_size
        report.extra.update(reports_read=s["reports"], sections=sections,
                            stages_not_run=[r["stage"] for r in s["stages"] if not r["run"]])
    return s

