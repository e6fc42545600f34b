"""The embedded sample: determinism, every planted kind, real-format parsing, truth consistency,
no accidental eval/train n-gram overlap, leaks present verbatim."""
from __future__ import annotations

import hashlib
import html
import json
import math
import re
import shutil
import subprocess
import sys
import zipfile
from collections import Counter
from pathlib import Path

import pytest
import zstandard

from pipeline.core import params, records
from pipeline.sample import generator as sample
from pipeline.sources import extract
from pipeline.sample import formats as files

ROOT = Path(__file__).resolve().parents[1]
SEED = 1337
START = re.compile(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG EBOOK (.+?) ?\*\*\*", re.M)
END = re.compile(r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG EBOOK (.+?) ?\*\*\*", re.M)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample") / "sample"
    sample.build(sample.SampleConfig(), SEED, out)
    return out


@pytest.fixture(scope="module")
def truth(built) -> dict:
    return json.loads((built / "truth.json").read_text())


def _posts(built: Path) -> tuple[list[dict], int]:
    raw = (built / "reddit" / "RS_2019-01.jsonl.zst").read_bytes()
    with zstandard.ZstdDecompressor(max_window_size=2**31).stream_reader(raw) as r:
        lines = r.read().decode("utf-8").splitlines()
    posts, bad = [], 0
    for line in lines:
        try:
            posts.append(json.loads(line))
        except json.JSONDecodeError:
            bad += 1
    return posts, bad


def _warc(built: Path) -> list:
    from warcio.archiveiterator import ArchiveIterator

    out = []
    with open(built / "cc" / files.CC_WARC, "rb") as fh:
        for rec in ArchiveIterator(fh):
            body = rec.content_stream().read()
            out.append((rec.rec_type, rec.rec_headers.get_header("WARC-Target-URI"),
                        rec.rec_headers.get_header("WARC-Record-ID"), rec.rec_headers.get_header("WARC-Date"), body))
    return out


def _page_file(built: Path, key: str) -> Path:
    rest = key.split("://", 1)[1]
    return built / "site" / (rest + ("index.html" if rest.endswith("/") else ""))


def _html_text(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def _training_docs(built: Path) -> dict[str, str]:
    """Every training-source document by natural key: books, site pages, crawl pages."""
    from ebooklib import ITEM_DOCUMENT, epub

    docs = {}
    for f in sorted((built / "books").iterdir()):
        if f.suffix == ".txt":
            docs[f.name] = f.read_bytes().decode("utf-8", errors="replace")
        else:
            book = epub.read_epub(str(f))
            docs[f.name] = " ".join(_html_text(i.get_content().decode()) for i in book.get_items_of_type(ITEM_DOCUMENT))
    for f in sorted((built / "site").rglob("*.html")):
        key = "http://" + str(f.relative_to(built / "site"))
        docs[key.removesuffix("index.html")] = _html_text(f.read_text())
    for rtype, url, _, _, body in _warc(built):
        if rtype == "response":
            docs[url] = _html_text(body.decode("utf-8"))
    return docs


def _eval_units(built: Path) -> dict[tuple[str, int], list[str]]:
    """(task, index) -> texts an 8-gram may come from: LAMBADA text, WikiText paragraph, HellaSwag ctx + each ending."""
    ev = built / "eval"
    units = {("lambada", i): [json.loads(l)["text"]] for i, l in enumerate(ev.joinpath("lambada_test.jsonl").open())}
    paras = [l.strip() for l in ev.joinpath("wikitext-2-raw-v1_test.txt").open() if l.strip() and not l.strip().startswith("=")]
    units.update({("wikitext", i): [p] for i, p in enumerate(paras)})
    for i, line in enumerate(ev.joinpath("hellaswag_val.jsonl").open()):
        item = json.loads(line)
        units[("hellaswag", i)] = [f"{item['ctx']} {e}" for e in item["endings"]]
    return units


def test_config_defaults_match_params_yaml():
    assert sample.SampleConfig() == params.config(sample.SampleConfig, "sample", ROOT / "params.yaml")
    assert params.load("seed", ROOT / "params.yaml") == SEED


def test_byte_identical_across_runs(built, tmp_path):
    again = tmp_path / "again"
    sample.build(sample.SampleConfig(), SEED, again)

    def digests(root):
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    first = digests(built)
    assert len(first) > 50 and first == digests(again)
    other = tmp_path / "other_seed"
    sample.build(sample.SampleConfig(), SEED + 1, other)
    assert digests(other)["truth.json"] != first["truth.json"]


def test_normalise_url():
    n = sample.normalise_url
    assert n("HTTP://News.Sample.Test:80/a/b.html?x=1&utm_source=r&y=2#frag") == "http://news.sample.test/a/b.html?x=1&y=2"
    assert n("https://a.test:443/p?fbclid=1&gclid=2") == "https://a.test/p"
    assert n("http://a.test:8080/p/") == "http://a.test:8080/p/"
    assert n("https://www.youtube.com/watch?v=abc") == "https://www.youtube.com/watch?v=abc"


def test_books(built, truth):
    from ebooklib import epub

    books = built / "books"
    names = sorted(p.name for p in books.iterdir())
    assert len(names) == 12 + 3 and sum(n.endswith(".epub") for n in names) == 1
    short, undecodable = truth["expect_drop"]["books"]
    with pytest.raises(UnicodeDecodeError):
        (books / undecodable).read_bytes().decode("utf-8")
    short_text = (books / short).read_text()
    body = short_text[START.search(short_text).end():END.search(short_text).start()]
    assert 200 < len(body.split()) < 400
    kept_txt = [n for n in truth["expect_keep"]["books"] if n.endswith(".txt")]
    sizes = Counter(hashlib.sha256((books / n).read_bytes()).hexdigest() for n in kept_txt)
    assert sorted(sizes.values())[-1] == 2  # exactly one exact duplicate
    for n in kept_txt:
        text = (books / n).read_text()
        start, end = START.search(text), END.search(text)
        assert start and end and start.group(2) == end.group(2)
        assert re.search(r"^Title: .+$", text, re.M) and re.search(r"^Author: .+$", text, re.M)
        assert 3000 <= len(text[start.end():end.start()].split()) <= 6600
        assert "PROJECT GUTENBERG LICENSE" in text[end.end():]
    epub_path = books / next(n for n in names if n.endswith(".epub"))
    with zipfile.ZipFile(epub_path) as z:
        first = z.infolist()[0]
        assert first.filename == "mimetype" and first.compress_type == zipfile.ZIP_STORED
        assert all(i.date_time == files.ZIP_TIME for i in z.infolist())
    book = epub.read_epub(str(epub_path))
    assert book.get_metadata("DC", "title")[0][0] and len(list(book.get_items())) > 4


def test_reddit_dump(built, truth):
    posts, bad = _posts(built)
    assert bad == 1 and 130 <= len(posts) <= 170
    fields = {"id", "title", "url", "domain", "score", "subreddit", "is_self", "over_18", "created_utc",
              "permalink", "num_comments", "author"}
    assert all(fields <= set(p) for p in posts)
    assert [p["created_utc"] for p in posts] == sorted(p["created_utc"] for p in posts)
    assert sum(p["score"] < 3 for p in posts) >= 20 and sum(p["is_self"] for p in posts) >= 10
    assert sum(p["over_18"] for p in posts) >= 5
    domains = {p["domain"] for p in posts}
    assert {"imgur.com", "i.imgur.com", "youtube.com", "youtu.be", "en.wikipedia.org", "redd.it"} <= domains
    urls = [p["url"] for p in posts]
    assert any("utm_" in u for u in urls) and any("#" in u for u in urls) and any(":80/" in u for u in urls)
    assert any(re.match(r"http://[^/]*[A-Z]", u) for u in urls)
    assert {"http://10.0.0.5/internal/report.html", "http://169.254.169.254/latest/meta-data/"} <= set(urls)
    normalised = {sample.normalise_url(u) for u in urls}
    keep, drop = set(truth["expect_keep"]["reddit_urls"]), set(truth["expect_drop"]["reddit_urls"])
    assert keep | drop == normalised and not keep & drop
    by_url = {}
    for p in posts:
        by_url.setdefault(sample.normalise_url(p["url"]), []).append(p)
    for url, ps in by_url.items():  # a URL is kept iff one of its posts passes every filter
        ok = any(p["score"] >= 3 and not p["is_self"] and not p["over_18"] and p["url"].startswith("http")
                 and not re.search(r"(imgur|youtube|youtu\.be|wikipedia|reddit|redd\.it)", p["domain"]) for p in ps)
        assert ok == (url in keep), url
    assert any(len(ps) > 1 and min(p["score"] for p in ps) < 3 and url in keep for url, ps in by_url.items())


def test_site(built, truth):
    routes = json.loads((built / "site" / "_routes.json").read_text())
    kinds = Counter(k for r in routes.values() for k in r if k != "location")
    assert kinds == {"status": 2, "delay_s": 1, "content_type": 1, "body_bytes": 1}
    assert any(r.get("location", "").startswith("http://10.") for r in routes.values())
    assert max(r.get("body_bytes", 0) for r in routes.values()) > 5_000_000
    assert "Disallow: /private/" in (built / "site" / sample.ROBOTS_HOST / "robots.txt").read_text()
    cfg = extract.ExtractConfig()
    for key in truth["expect_keep"]["scrape"]:  # good pages survive trafilatura with enough words
        page = _page_file(built, key).read_text()
        assert "<article>" in page and "cookie" in page and "<nav>" in page
        assert not extract.too_short(extract.extract_text(page, cfg, url=key), cfg), key
    boiler = [k for k in truth["expect_drop"]["scrape"] if "/tags/" in k]
    assert len(boiler) == 3
    for key in boiler:  # boilerplate pages: too little main text after extraction
        assert extract.too_short(extract.extract_text(_page_file(built, key).read_text(), cfg, url=key), cfg)
    drops = set(truth["expect_drop"]["scrape"])
    assert {sample.normalise_url(u) for u in sample.PRIVATE_URLS} <= drops
    assert {sample.normalise_url("http://" + k) for k in routes} <= drops


def test_warc(built, truth):
    recs = _warc(built)
    assert recs[0][0] == "warcinfo"
    assert [r[0] for r in recs[1:]] == ["request", "response"] * ((len(recs) - 1) // 2)
    assert {r[3] for r in recs} == {files.WARC_DATE}
    responses = {r[1]: r for r in recs if r[0] == "response"}
    assert all(re.fullmatch(r"<urn:uuid:[0-9a-f-]{36}>", r[2]) for r in responses.values())
    assert all(re.match(r"http://[a-z0-9-]+\.cc\.test/", u) for u in responses)
    assert len(responses) == 60 + 60 + 2 + 3
    labelled = set(truth["expect_keep"]["cc"]) | set(truth["expect_drop"]["cc"]) | set(truth["expect_drop"]["quality_filter"])
    assert labelled <= set(responses)
    for key in truth["expect_drop"]["cc"]:  # the foreign pages hold no English prose
        assert " the " not in _html_text(responses[key][4].decode())
    # truth keys are what the crawl stage will compute: records.cc_id of the record id
    assert all(records.cc_id(r[2]).startswith("cc/") for r in responses.values())


def test_eval_sets(built, truth):
    ev = built / "eval"
    lambada = [json.loads(l) for l in ev.joinpath("lambada_test.jsonl").open()]
    assert len(lambada) == 40 and all(set(x) == {"text"} for x in lambada)
    for x in lambada:  # the target (last word) appears earlier: predictable from context
        words = x["text"].split()
        assert 55 <= len(words) <= 130 and words[-1].isalpha() and words[-1] in " ".join(words[:-1])
    wiki = ev.joinpath("wikitext-2-raw-v1_test.txt").read_text().splitlines()
    assert re.fullmatch(r" = [^=]+ = ", wiki[1]) and any(re.fullmatch(r" = = [^=]+ = = ", l) for l in wiki)
    assert sum(1 for l in wiki if l.strip() and not l.strip().startswith("=")) == 40
    hella = [json.loads(l) for l in ev.joinpath("hellaswag_val.jsonl").open()]
    assert len(hella) == 40 and all(len(h["endings"]) == 4 and 0 <= h["label"] < 4 for h in hella)
    assert all(h["ctx"] == f"{h['ctx_a']} {h['ctx_b']}" and h["ind"] == i for i, h in enumerate(hella))
    assert len({h["label"] for h in hella}) == 4  # the gold is not always in one position


def test_no_accidental_overlap_and_leaks_verbatim(built, truth):
    docs = {k: " ".join(sample.norm_words(v)) for k, v in _training_docs(built).items()}
    leaks = {(x["task"], x["index"]): x for x in truth["leaks"]}
    assert len(leaks) == 9 and Counter(x["source"] for x in leaks.values()) == {"books": 3, "webtext": 3, "cc": 3}
    for x in leaks.values():  # present verbatim (after GPT-3 normalisation) in its carrier
        assert " ".join(sample.norm_words(x["text"])) in docs[x["key"]], (x["task"], x["key"])
    train = set()
    for text in docs.values():
        w = text.split()
        train.update(" ".join(w[i:i + 8]) for i in range(len(w) - 7))
    units = _eval_units(built)
    dirty = set()
    for (task, index), texts in units.items():
        for t in texts:
            w = sample.norm_words(t)
            if any(" ".join(w[i:i + 8]) in train for i in range(len(w) - 7)):
                dirty.add((task, index))
    assert dirty == set(leaks)  # exactly the planted leaks share an 8-gram with training text


def test_truth_dedup_rule(built, truth):
    pairs = truth["near_duplicates"]
    assert len(pairs) == 1 + 2 + 3
    prio = {"books": 0, "webtext": 1, "cc": 2}

    record_ids = {r[1]: r[2] for r in _warc(built) if r[0] == "response"}

    def doc_id(key):
        if key.endswith((".txt", ".epub")):
            return records.book_id(key)
        return records.cc_id(record_ids[key]) if ".cc.test/" in key else records.webtext_id(key)

    for kept, removed in pairs:
        assert (prio[records.source_of(doc_id(kept))], doc_id(kept)) < (prio[records.source_of(doc_id(removed))], doc_id(removed))
    assert sorted(p[1] for p in pairs) == truth["expect_drop"]["dedup"]
    docs = {}
    warc_bodies = {r[1]: r[4] for r in _warc(built) if r[0] == "response"}
    for key in {k for pair in pairs for k in pair}:  # main text as the pipeline extracts it
        if key.endswith(".txt"):
            docs[key] = (built / "books" / key).read_text()
        else:
            body = warc_bodies[key] if key in warc_bodies else _page_file(built, key).read_bytes()
            docs[key] = extract.extract_text(body, extract.ExtractConfig())

    def shingles(t):
        w = t.lower().split()
        return {tuple(w[i:i + 5]) for i in range(len(w) - 4)}

    for kept, removed in pairs:  # near-duplicates really are: 5-shingle Jaccard well above dedup.threshold 0.7
        a, b = shingles(docs[kept]), shingles(docs[removed])
        assert len(a & b) / len(a | b) > 0.75, (kept, removed)
    carriers = {x["key"] for x in truth["leaks"]}
    assert not carriers & set(truth["expect_drop"]["dedup"]) and carriers <= set(truth["expect_keep"]["dedup"])


def test_learnable_structure(built):
    """A bigram model on held-out book text beats the unigram one by > 1 bit/word: structure to learn."""
    words = []
    for f in sorted((built / "books").glob("*.txt"))[:8]:
        words += f.read_bytes().decode("utf-8", errors="replace").lower().split()
    cut = int(len(words) * 0.8)
    train, test = words[:cut], words[cut:]
    uni, bi = Counter(train), Counter(zip(train, train[1:]))
    vocab = len(uni) + 1

    def p_uni(w):
        return (uni[w] + 1) / (len(train) + vocab)

    h_uni = -sum(math.log2(p_uni(w)) for w in test) / len(test)
    h_bi = -sum(math.log2(0.7 * bi[(a, b)] / uni[a] + 0.3 * p_uni(b) if uni[a] else p_uni(b))
                for a, b in zip(test, test[1:])) / (len(test) - 1)
    assert h_uni - h_bi > 1.0, (h_uni, h_bi)


def test_stage_script(in_tmp_cwd):
    shutil.copy(ROOT / "params.yaml", in_tmp_cwd / "params.yaml")
    script = str(ROOT / "stages" / "sample.py")
    assert "--out" in subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, check=True).stdout
    subprocess.run([sys.executable, script, "--out", "data/raw/sample"], check=True, capture_output=True)
    rep = json.loads((in_tmp_cwd / "reports" / "sample.json").read_text())
    planted = rep["planted"]
    assert planted["leaks"] == 9 and planted["books_short"] == planted["books_undecodable"] == 1
    assert planted["cc_foreign"] == 2 and planted["site_huge"] == 1 and rep["bytes_out"] > 100_000
    manifest = json.loads((in_tmp_cwd / "data/raw/sample/_manifest.json").read_text())
    assert manifest["params"]["seed"] == SEED and "truth.json" in manifest["files"]


def test_formats_match_real_files(built, shared_data):
    """Our files parse the way the real ones do: Gutenberg markers, Pushshift keys, WikiText headings, LAMBADA."""
    for real in sorted((shared_data / "books").glob("*.txt"))[:5]:
        text = real.read_text(encoding="utf-8", errors="replace")
        assert START.search(text) or "START OF" in text
    ours = (built / "books" / json.loads((built / "truth.json").read_text())["expect_keep"]["books"][0]).read_text()
    assert START.search(ours) and END.search(ours)
    real_post = json.loads((shared_data / "reddit" / "RS_pmaw_cassettes_head100.jsonl").open().readline())
    posts, _ = _posts(built)
    assert set(posts[0]) <= set(real_post) | {"selftext"}
    assert all(type(posts[0][k]) is type(real_post[k]) for k in posts[0])
    real_wiki = (shared_data / "eval" / "wikitext" / "wikitext-2-raw-v1_test.txt").open().readline()
    ours_wiki = (built / "eval" / "wikitext-2-raw-v1_test.txt").read_text().splitlines()[1] + "\n"
    heading = re.compile(r" = [^=].* = \n")
    assert heading.fullmatch(real_wiki) and heading.fullmatch(ours_wiki)
    real_lambada = json.loads((shared_data / "eval" / "lambada" / "lambada_test.jsonl").open().readline())
    assert set(real_lambada) == set(json.loads((built / "eval" / "lambada_test.jsonl").open().readline()))
