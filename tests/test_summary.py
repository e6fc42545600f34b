"""pipeline/evaluation/summary.py, summary_html.py and stages/summary.py: the one-page run summary, built
from the committed reports (copied to a temp dir), its numbers checked against the report JSONs, its
sections tolerant of missing reports, and the page rendered in headless Chromium when it is installed."""
from __future__ import annotations

import csv
import importlib.util
import json
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from pipeline.evaluation import summary, summary_html

ROOT = Path(__file__).resolve().parents[1]


def _stage_main():
    spec = importlib.util.spec_from_file_location("summary_stage", ROOT / "stages" / "summary.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture
def reports(tmp_path, monkeypatch) -> Path:
    """A copy of the committed reports/ (the stage writes reports/summary.json relative to the cwd)."""
    if not (ROOT / "reports" / "mix.json").exists():
        pytest.skip("the committed reports/ are absent")
    shutil.copytree(ROOT / "reports", tmp_path / "reports", ignore=shutil.ignore_patterns("summary*"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "reports"


def _build(reports: Path, live: str | None = "train") -> tuple[str, str, dict]:
    argv = ["--reports", str(reports), "--html", str(reports / "summary.html"), "--md", str(reports / "summary.md")]
    data = _stage_main()(argv + (["--live", str(reports / live)] if live else []))
    return (reports / "summary.html").read_text(), (reports / "summary.md").read_text(), data


def _json(reports: Path, stage: str) -> dict:
    return json.loads((reports / f"{stage}.json").read_text())


def test_funnel_numbers_are_the_reports_numbers(reports):
    page, md, data = _build(reports)
    s = summary.collect(reports, reports / "train", reports)
    for source, stages in summary.SOURCE_STAGES.items():
        for (stage, _), row in zip(stages, s["funnel"][source]):
            rep = _json(reports, stage)
            assert (row["docs_in"], row["docs_out"], row["size_in"], row["size_out"]) == (
                rep["docs_in"], rep["docs_out"], rep["bytes_in"], rep["bytes_out"])
            assert row["dropped"] == {k: v for k, v in rep["dropped"].items() if v}
            assert f"{rep['bytes_in']:,} →<br>{rep['bytes_out']:,}" in page
            assert f"{rep['bytes_in']:,} -> {rep['bytes_out']:,} bytes" in md
        dedup = _json(reports, "dedup")["per_source"][source]
        row = next(r for r in s["funnel"][source] if r["stage"] == "dedup")
        assert (row["docs_in"], row["docs_out"], row["size_out"]) == (
            dedup["docs_in"], dedup["docs_out"], dedup["bytes_out"])
        assert sum(row["dropped"].values()) == dedup["docs_in"] - dedup["docs_out"]  # every drop has its reason
        tokens = _json(reports, "tokenize")["tokens_per_source"]
        row = next(r for r in s["funnel"][source] if r["stage"] == "tokenize")
        assert row["tokens"]["train"] == tokens["train"][source] and f"{tokens['train'][source]:,}" in page
    scrape = _json(reports, "scrape")["dropped"]
    for reason, n in scrape.items():
        assert f"{reason} <b>{n}</b>" in page
    assert data["sections"] == {k: "ok" for k in ("funnel", "mixture", "losses", "evals", "contamination")}
    assert json.loads((reports.parent / "reports" / "summary.json").read_text())["stage"] == "summary"


def test_mixture_shares_and_evals_against_chance_and_papers(reports):
    page, md, _ = _build(reports)
    mix = _json(reports, "mix")["per_source"]
    for source, p in mix.items():
        assert f"| {source} | {100 * p['target_share']:.1f}% | {100 * p['achieved_share']:.1f}% |" in md
        assert f"{100 * p['achieved_share']:.1f}%" in page
    ev = _json(reports, "evaluate")
    s = summary.collect(reports, reports / "train", reports)
    rows = {(r["task"], r["metric"]): r for r in s["evals"]["rows"]}
    assert rows[("hellaswag", "acc")]["ours"] == round(100 * ev["tasks"]["hellaswag"]["acc"], 2)
    assert rows[("hellaswag", "acc")]["baseline"] == "25% (chance)"
    assert rows[("lambada", "acc")]["baseline"] == "0% (chance)"
    assert rows[("hellaswag", "acc_norm")]["gpt3_125m"] == 33.7 and rows[("lambada", "acc")]["gpt2_117m"] == 45.99
    assert rows[("wikitext", "word_perplexity")]["gpt2_117m"] == 29.41
    assert "(paper)" in page and "GPT-2 paper table 3" in page and "GPT-3 paper table H.1" in page
    if "piqa" not in ev["tasks"]:
        assert not rows[("piqa", "acc")]["run"] and "| piqa | acc | not run |" in md
    assert rows[("wikitext", "token_perplexity")]["baseline_value"] == pytest.approx(
        2.718281828 ** ev["val"]["unigram_entropy_nats"], rel=1e-6)


def test_loss_curves_are_inline_svg_with_one_point_per_logged_step(reports):
    page, _, _ = _build(reports)
    for name in ("train_loss", "val_loss"):
        with open(reports / "train" / "plots" / "metrics" / f"{name}.tsv") as fh:
            logged = list(csv.DictReader(fh, delimiter="\t"))
        m = re.search(rf'<path class="series" data-series="{name}" data-points="(\d+)" d="([^"]+)"', page)
        assert m, f"no SVG path for {name}"
        commands = re.findall(r"[ML]-?[\d.]+,-?[\d.]+", m.group(2))
        assert int(m.group(1)) == len(commands) == len(logged) > 1
    assert 'class="baseline"' in page  # the unigram entropy line
    # self-contained: no script, no external asset, no vega
    assert "<script" not in page.lower() and "src=" not in page and "<link" not in page and "vega" not in page


def test_contamination_headline_links_to_the_audit(reports):
    page, md, _ = _build(reports)
    con = _json(reports, "contamination")
    for task, t in con["tasks"].items():
        assert f"{t['dirty']} / {t['total']}" in page and f"| {task} | {t['n']} | {t['dirty']} / {t['total']} |" in md
    assert 'href="contamination/report.html"' in page and "(contamination/report.html)" in md
    assert (reports / "contamination" / "report.html").exists()  # the relative link resolves from the page


def test_missing_reports_say_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    empty = tmp_path / "reports"
    empty.mkdir()
    page, md, data = _build(empty, live=None)
    for section in ("Mixture (mix stage)", "Loss curves", "Evaluation (evaluate stage)", "Contamination"):
        assert f"{section}" in page
    assert page.count(summary_html.NOT_RUN) >= len(summary.STAGES) + 4
    assert "<svg" not in page.split("(c) Loss")[1].split("(d)")[0]
    assert "Mixture: not run." in md and "Evaluation: not run." in md and "Contamination: not run." in md
    assert set(data["sections"].values()) == {"not run"} and data["reports_read"] == []


def test_partial_and_broken_reports_leave_the_rest(reports):
    (reports / "mix.json").unlink()
    (reports / "evaluate.json").write_text('{"tasks": {"lambada": {"acc": 0.5, "n": 4')  # truncated
    shutil.rmtree(reports / "train" / "plots")
    page, md, data = _build(reports)
    assert data["sections"]["mixture"] == data["sections"]["evals"] == data["sections"]["losses"] == "not run"
    assert data["sections"]["funnel"] == data["sections"]["contamination"] == "ok"
    s = summary.collect(reports, reports / "train", reports)
    assert all(not next(r for r in rows if r["stage"] == "mix")["run"] for rows in s["funnel"].values())
    assert next(r for r in s["funnel"]["cc"] if r["stage"] == "quality_filter")["run"]
    assert "| mix | documents → train + val | not run |" in md


def _png_stats(path: Path) -> tuple[int, int, int]:
    """(width, height, distinct byte values in the decompressed image data): a blank page gives a handful."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", (0, 0)
    while pos < len(data):
        n, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8]
        if kind == b"IHDR":
            size = struct.unpack(">II", data[pos + 8:pos + 16])
        elif kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + n]
        pos += 12 + n
    return size[0], size[1], len(set(zlib.decompress(idat)))


def test_page_renders_in_headless_chromium(reports, tmp_path, chromium):
    _build(reports)
    shots = {}
    (tmp_path / "blank.html").write_text("<!DOCTYPE html><html><body></body></html>")
    for name, page in (("summary", reports / "summary.html"), ("blank", tmp_path / "blank.html")):
        shots[name] = tmp_path / f"{name}.png"
        subprocess.run([str(chromium), "--headless", "--disable-gpu", "--no-sandbox", f"--screenshot={shots[name]}",
                        "--window-size=1200,2000", f"file://{page}"], capture_output=True, timeout=120, check=True)
        assert shots[name].exists(), f"chromium wrote no screenshot of {page}"
    try:
        from PIL import Image

        colours = {n: len(Image.open(p).convert("RGB").getcolors(1 << 24) or ()) for n, p in shots.items()}
        assert colours["summary"] > 50 and colours["blank"] <= 2, colours
    except ImportError:  # no Pillow: distinct bytes of the raw image data and the file size tell the same story
        (w, h, distinct), (_, _, blank) = _png_stats(shots["summary"]), _png_stats(shots["blank"])
        assert (w, h) == (1200, 2000) and distinct > 64 and blank < 16, (distinct, blank)
    assert shots["summary"].stat().st_size > 10 * shots["blank"].stat().st_size


def test_claims_section_reads_the_claim_reports_and_says_not_run():
    from pipeline.evaluation import summary_claims

    reports = {
        "finetune": {"task": "piqa", "chance_acc": 0.5, "zero_shot": {"acc": 0.41},
                     "finetuned": {"lambda=0.5": {"acc": 1.0}, "lambda=0.0": {"acc": 0.98}}},
        "fewshot": {"tasks": {"hellaswag": {"0": {"acc": 0.3}, "1": {"acc": 0.35}, "8": {"acc": 0.3}}}},
        "scaling": {"interval_95": [2.5, 3.0], "predicted": 2.7, "measured": 2.86, "inside": True},
        "sparse_vs_dense": {"rows": []},
    }
    rows = {r["stage"]: r for r in summary_claims.rows(reports)}
    assert list(rows) == list(summary_claims.CLAIM_STAGES)
    assert rows["finetune"]["verdict"] == "fine-tuning beat zero-shot" and "zero-shot 0.41" in rows["finetune"]["ours"]
    assert rows["fewshot"]["verdict"].startswith("did not rise") and "k=0,1,8" in rows["fewshot"]["ours"]
    assert rows["scaling"]["verdict"].startswith("held") and "measured 2.86" in rows["scaling"]["ours"]
    assert rows["sparse_vs_dense"]["ours"].startswith("unreadable")
    assert not rows["ln_stability"]["run"] and rows["ln_stability"]["ours"] == summary_html.NOT_RUN
    md = "\n".join(summary_claims.markdown(list(rows.values())))
    assert "| finetune |" in md and "(f)" in md
    assert "<table>" in summary_claims.html(list(rows.values()))


def test_line_chart_log_x_puts_points_by_their_logarithm():
    """bench/dedup_scale.py draws corpus sizes on a log axis with the summary page's chart."""
    import xml.dom.minidom

    from pipeline.evaluation.summary_html import line_chart

    svg = line_chart({"a": [(1e5, 0.76), (3e5, 0.82), (1e6, 1.12)], "b": [(1e5, 0.35), (1e6, 0.46)]},
                     baseline=4.0, baseline_label="goal", log_x=True, width=600, height=300)
    doc = xml.dom.minidom.parseString(svg)
    paths = doc.getElementsByTagName("path")
    xs = [float(x) for x in re.findall(r"[ML]([\d.]+),", paths[0].getAttribute("d"))]
    left, right = xs[0], xs[-1]  # 1e5 and 1e6 are the axis ends (ticks at powers of ten)
    assert abs((xs[1] - left) / (right - left) - 0.4771) < 0.01  # log10(3)
    assert paths[0].getAttribute("stroke") != paths[1].getAttribute("stroke")  # unnamed series: distinct colours
    assert "1,000,000" in svg and "100,000" in svg
