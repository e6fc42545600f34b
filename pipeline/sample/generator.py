"""The embedded sample: every raw input of the GPT-1/2/3 data recipe, generated, with planted truth.

Builds data/raw/sample/ (contract: docs/CONTRACT.md and the SAMPLE section of the design):
  books/    Gutenberg-style .txt novels + one .epub (BooksCorpus stand-in, GPT-1); planted: a too-short
            book, an undecodable .txt, an exact duplicate under another name
  reddit/   RS_2019-01.jsonl.zst, Pushshift submissions (GPT-2 WebText: links from posts with >= 3 karma);
            planted: low karma, self, NSFW, blocked domains, tracking-param duplicates, private addresses,
            a malformed line
  site/     the HTML pages those links point at, served on loopback by the scrape stage, + _routes.json
            (404, slow, redirect to a private address, pdf, huge page) and a robots.txt
  cc/       a Common Crawl style WARC (GPT-3): good pages, spam/gibberish/boilerplate, foreign-language
            pages, crawl copies of WebText articles (MinHash near-duplicates)
  eval/     LAMBADA, WikiText raw, HellaSwag in their public formats, n_leaks examples each planted
            verbatim in training documents (GPT-3 appendix C contamination)
  truth.json  what each filter should drop/keep, near-duplicate pairs, leaks
Text comes from pipeline.sample.textgen; everything is seeded and byte-identical run to run.
"""
from __future__ import annotations

import json
import random
import string
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from pipeline.core import io, records
from pipeline.sample import mc_task, textgen
from pipeline.sample import formats as files

N_GRAM = 8  # eval examples share no 8-gram with non-leak training text (GPT-2 used 8-grams)
HOSTS = ["news.sample.test", "blog.sample.test", "science.sample.test", "travel.sample.test", "daily.sample.test"]
MIRROR_HOSTS = ["mirror.sample.test", "reprint.sample.test"]
SPAM_HOSTS = ["deals.sample.test", "cheap.sample.test", "bestprice.sample.test"]
ROBOTS_HOST = "blog.sample.test"
PRIVATE_URLS = ["http://10.0.0.5/internal/report.html", "http://192.168.1.20/admin/index.html",
                "http://169.254.169.254/latest/meta-data/"]
# The draws other stages make (mix.py "val", quality.py "retention"): carriers of planted leaks and
# labelled crawl pages are chosen so that those draws keep them, whatever the classifier's score.
VAL_PURPOSE, RETENTION_PURPOSE = "val", "retention"


@dataclass(frozen=True)
class SampleConfig:
    n_books: int = 12
    n_articles: int = 40
    n_cc_good: int = 60
    n_cc_junk: int = 60
    n_eval: int = 40
    n_leaks: int = 3
    n_finetune_train: int = 400  # planted multiple-choice task for the finetune stage (mc_task.py)
    n_finetune_valid: int = 200


def normalise_url(url: str) -> str:
    """The natural key of a web page: lower-case scheme and host, no fragment, no utm_*/fbclid/gclid
    params (others kept in order), default port dropped. Must agree with pipeline/sources/reddit.py (a test checks).

    Kept apart from reddit.normalize_url on purpose, like norm_words below and the contamination code:
    importing a stage module here would make it a dep of `sample`, so editing it would regenerate the
    sample and rerun the whole DAG, and the ground truth would be computed by the code it judges."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url.strip())
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    netloc = host
    if parts.port and (scheme, parts.port) not in (("http", 80), ("https", 443)):
        netloc += f":{parts.port}"
    keep = [q for q in parts.query.split("&") if q and not _tracking(q.split("=", 1)[0])]
    return urlunsplit((scheme, netloc, parts.path, "&".join(keep), ""))


def _tracking(key: str) -> bool:
    key = key.lower()
    return key.startswith("utm_") or key in ("fbclid", "gclid")


_PUNCT = str.maketrans("", "", string.punctuation)


def norm_words(text: str) -> list[str]:
    """GPT-3 contamination normalisation: lower-case, punctuation stripped, whitespace words."""
    return text.lower().translate(_PUNCT).split()


def ngram_set(text: str, n: int = N_GRAM) -> set[tuple[str, ...]]:
    w = norm_words(text)
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


def slug(title: str) -> str:
    return "-".join(norm_words(title))


def _perturb(paras: list[str], rng: random.Random, frac: float) -> list[str]:
    """Light edits (~frac of words replaced): a near-duplicate MinHash (5-shingles, J>=0.7) catches."""
    out = []
    for p in paras:
        words = p.split()
        for i in range(len(words)):
            if rng.random() < frac:
                words[i] = rng.choice(textgen.ADJECTIVES)
        out.append(" ".join(words))
    return out


# --- content --------------------------------------------------------------------------------
def make_books(cfg: SampleConfig, lex: textgen.Lexicon, seed: int) -> list[dict]:
    """n_books novels (~3,000-6,000 words) in chapters; book 5 becomes the .epub."""
    rng = random.Random(f"{seed}:books")
    books, titles = [], set()
    for i in range(cfg.n_books + 2):  # + the too-short and the undecodable one
        p = textgen.Prose(lex, rng, "narrative")
        title = p.title()
        while title in titles:
            title = p.title()
        titles.add(title)
        n_words = 300 if i == cfg.n_books else rng.randint(3000, 6000)
        n_ch = 1 if i == cfg.n_books else rng.randint(4, 8)
        chapters = [(p.title(), p.paragraphs(n_words // n_ch)) for _ in range(n_ch)]
        kind = "short" if i == cfg.n_books else "undecodable" if i == cfg.n_books + 1 else "book"
        ext = "epub" if i == 4 and kind == "book" else "txt"
        books.append({"file": f"b{i + 1:02d}-{slug(title)}.{ext}", "title": title, "author": p.cast[-1],
                      "chapters": chapters, "kind": kind, "release": i + 1})
    return books


def _article(p: textgen.Prose, host: str, path: str, kind: str, paras: list[str], title: str) -> dict:
    url = f"http://{host}{path}"
    return {"url": url, "key": normalise_url(url), "host": host, "path": path, "title": title,
            "author": p.cast[0], "paras": paras, "kind": kind}


def make_site(cfg: SampleConfig, lex: textgen.Lexicon, seed: int) -> list[dict]:
    """Good articles, near-duplicate copies on mirror hosts, boilerplate and spam pages, special pages."""
    rng = random.Random(f"{seed}:site")
    pages = []
    for i in range(cfg.n_articles):
        p = textgen.Prose(lex, rng, "expository")
        host = HOSTS[i % len(HOSTS)]
        title = p.title()
        s = f"{slug(title)}-{i}"
        path = [f"/2019/01/{s}.html", f"/posts/{s}/", f"/articles/{s}.html", f"/stories/{s}.html",
                f"/2019/01/{i % 28 + 1:02d}/{s}/"][i % len(HOSTS)]
        pages.append(_article(p, host, path, "good", p.paragraphs(rng.randint(450, 700)), title))
    for j, host in enumerate(MIRROR_HOSTS):  # near-duplicate pairs across two hosts
        src = pages[j]
        copy = dict(src, url=f"http://{host}/copy/{slug(src['title'])}.html", host=host,
                    path=f"/copy/{slug(src['title'])}.html", kind="mirror", of=src["key"],
                    paras=_perturb(src["paras"], rng, 0.015))
        copy["key"] = normalise_url(copy["url"])
        pages.append(copy)
    for j in range(3):  # boilerplate-heavy pages: a menu-laden page around two short sentences
        p = textgen.Prose(lex, rng, "expository")
        title = p.title()
        pages.append(_article(p, HOSTS[j], f"/tags/{slug(title)}.html", "boilerplate",
                              [p.sentence() + " " + p.sentence()], title))
    for j, host in enumerate(SPAM_HOSTS):
        p = textgen.Prose(lex, rng, "expository")
        pages.append(_article(p, host, f"/offer-{j}.html", "spam", [textgen.spam_text(rng, 60) for _ in range(3)],
                              "Buy cheap " + textgen.PRODUCTS[j] + " best price"))
    specials = [("slow", "daily.sample.test", "/2019/01/15/slow-page/"),
                ("robots", ROBOTS_HOST, "/private/draft-notes.html")]
    for kind, host, path in specials:
        p = textgen.Prose(lex, rng, "expository")
        pages.append(_article(p, host, path, kind, p.paragraphs(300), p.title()))
    for kind, host, path in [("404", "news.sample.test", "/2019/01/missing-page.html"),
                             ("redirect_private", "blog.sample.test", "/go/internal/"),
                             ("pdf", "science.sample.test", "/papers/annual-report.pdf"),
                             ("huge", "news.sample.test", "/2019/01/huge-page.html")]:
        url = f"http://{host}{path}"
        pages.append({"url": url, "key": normalise_url(url), "host": host, "path": path, "kind": kind})
    return pages


def make_cc(cfg: SampleConfig, lex: textgen.Lexicon, seed: int, pages: list[dict]) -> list[dict]:
    """Crawl pages: good prose, junk (spam, gibberish, boilerplate), foreign, copies of WebText articles."""
    rng = random.Random(f"{seed}:cc")
    out = []

    def add(kind, host, path, title, paras):
        url = f"http://{host}.cc.test{path}"
        out.append({"url": url, "key": normalise_url(url), "title": title, "paras": paras, "kind": kind,
                    "record_id": files.record_uuid(seed, url)})

    for i in range(cfg.n_cc_good):
        p = textgen.Prose(lex, rng, "expository" if i % 3 else "narrative")
        t = p.title()
        add("good", f"{slug(rng.choice(lex.places))}-times", f"/2019/04/{slug(t)}-{i}.html", t,
            p.paragraphs(rng.randint(250, 500)))
    for i in range(cfg.n_cc_junk):
        kind = ("spam", "gibberish", "boilerplate")[i % 3]
        if kind == "spam":
            paras, t = [textgen.spam_text(rng, 80) for _ in range(3)], "Cheap " + rng.choice(textgen.PRODUCTS)
        elif kind == "gibberish":
            paras, t = [textgen.gibberish_text(rng, 80) for _ in range(2)], textgen.gibberish_text(rng, 3)
        else:
            paras, t = textgen.boilerplate_lines(rng, f"site{i}"), "Home"
        add(kind, f"{kind}-{i}", f"/page/{i}.html", t, paras)
    for lang, host in (("fr", "journal-fr"), ("es", "diario-es")):
        add("foreign", host, "/article.html", "Article", [textgen.foreign_text(rng, lang) for _ in range(3)])
    # crawl copies of three good WebText articles (not the mirrored ones): dedup keeps the WebText copy
    for a in [p for p in pages if p["kind"] == "good"][5:8]:
        k = 0
        while True:  # pick a copy URL whose retention draw keeps it at any reasonable quality score
            path = f"/mirror/{slug(a['title'])}{'-' + str(k) if k else ''}.html"
            rid = files.record_uuid(seed, f"http://copycat.cc.test{path}")
            if files.retention(seed, records.cc_id(rid)) > 0.5:
                break
            k += 1
        add("copy", "copycat", path, a["title"], _perturb(a["paras"], rng, 0.015))
        out[-1]["of"] = a["key"]
    return out


def make_evals(cfg: SampleConfig, lex: textgen.Lexicon, seed: int, train_grams: set) -> dict:
    """Eval sets from their own RNG stream; any unit sharing an 8-gram with training text or with an
    earlier eval unit is redrawn, so only the planted leaks can make an example dirty."""
    rng = random.Random(f"{seed}:eval")
    seen = set(train_grams)

    def fresh(make, text_of=lambda v: v):
        while True:  # redraw until the unit is 8-gram-disjoint from everything so far
            value = make()
            grams = ngram_set(text_of(value))
            if not grams & seen:
                seen.update(grams)
                return value

    lambada = [fresh(lambda: textgen.lambada_text(lex, rng)) for _ in range(cfg.n_eval)]
    wiki, n_par = [], 0  # n_eval paragraphs, in articles of 3-5 paragraphs
    while n_par < cfg.n_eval:
        k = min(rng.randint(3, 5), cfg.n_eval - n_par)
        title, paras = textgen.wiki_article(lex, rng, k)
        redraw = lambda: textgen.wikitok(textgen.Prose(lex, rng, "expository").paragraph(3, 6))  # noqa: E731
        kept = []
        for h, t in paras:
            while ngram_set(t) & seen:
                t = redraw()
            seen.update(ngram_set(t))
            kept.append((h, t))
        wiki.append((title, kept))
        n_par += k
    hella = [fresh(lambda: textgen.hellaswag_item(lex, rng), lambda h: " ".join(h[1:])) for _ in range(cfg.n_eval)]
    return {"lambada": lambada, "wikitext": wiki, "hellaswag": hella}


def wiki_paragraphs(wiki: list) -> list[str]:
    """WikiText examples as the loaders enumerate them: every paragraph line, in file order."""
    return [t for _, paras in wiki for _, t in paras]


def hellaswag_text(item) -> str:
    """The text of a HellaSwag item that can leak: ctx + gold ending."""
    _, ctx_a, ctx_b, gold = item
    return f"{ctx_a} {ctx_b} {gold}"


# --- planting -------------------------------------------------------------------------------
def plant_leaks(cfg: SampleConfig, seed: int, evals: dict, books: list, pages: list, cc: list) -> list[dict]:
    """Insert n_leaks examples per eval set verbatim into carriers spread over books, webtext and cc.

    Carriers are documents every filter keeps (a kept .txt book, a good article, a good crawl page)
    whose mix draw puts them in train, so every planted leak reaches the training set."""
    rng = random.Random(f"{seed}:leaks")
    val = lambda doc_id: files.draw(seed, doc_id, VAL_PURPOSE)  # noqa: E731
    dup_src = {p.get("of") for p in pages + cc}
    carriers = {
        "books": sorted((b for b in books if b["kind"] == "book" and b["file"].endswith(".txt")
                         and not b.get("duplicated")), key=lambda b: -val(records.book_id(b["file"]))),
        "webtext": sorted((p for p in pages if p["kind"] == "good" and p["key"] not in dup_src),
                          key=lambda p: -val(records.webtext_id(p["key"]))),
        "cc": sorted((c for c in cc if c["kind"] == "good" and val(records.cc_id(c["record_id"])) > 0.3),
                     key=lambda c: -files.retention(seed, records.cc_id(c["record_id"]))),
    }
    texts = {"lambada": evals["lambada"], "wikitext": wiki_paragraphs(evals["wikitext"]),
             "hellaswag": [hellaswag_text(h) for h in evals["hellaswag"]]}
    sources = list(carriers)
    leaks = []
    for t, task in enumerate(texts):
        for j, index in enumerate(sorted(rng.sample(range(len(texts[task])), cfg.n_leaks))):
            source = sources[(t + j) % len(sources)]
            doc = carriers[source].pop(0)
            text = texts[task][index]
            if source == "books":
                paras = doc["chapters"][len(doc["chapters"]) // 2][1]
                key = doc["file"]
            else:
                paras, key = doc["paras"], doc["key"]
            paras.insert(len(paras) // 2, text)
            doc.setdefault("leaks", []).append(task)
            leaks.append({"task": task, "index": index, "source": source, "key": key, "text": text})
    return leaks


def truth(seed: int, books: list, pages: list, cc: list, reddit: dict, leaks: list) -> dict:
    """truth.json: per labelled stage the natural keys to drop and to keep, near-duplicates, leaks."""
    kept_books = [b["file"] for b in books if b["kind"] == "book"] + [b["dup_file"] for b in books if b.get("dup_file")]
    fails = {"404", "redirect_private", "pdf", "huge", "slow", "robots", "boilerplate"}
    web_ok = [p["key"] for p in pages if p["kind"] in ("good", "mirror")]
    cc_ok = [c for c in cc if c["kind"] in ("good", "copy")]
    ret = {c["key"]: files.retention(seed, records.cc_id(c["record_id"])) for c in cc}
    pairs = []  # (kept, removed) by the dedup rule: source priority, then the smallest document id
    for b in books:
        if b.get("dup_file"):
            pairs.append(sorted([b["file"], b["dup_file"]], key=records.book_id))
    for p in pages:
        if p["kind"] == "mirror":
            pairs.append(sorted([p["of"], p["key"]], key=records.webtext_id))
    pairs += [[c["of"], c["key"]] for c in cc if c["kind"] == "copy"]
    carriers = sorted({x["key"] for x in leaks})
    return {
        "expect_drop": {
            "books": sorted(b["file"] for b in books if b["kind"] in ("short", "undecodable")),
            "reddit_urls": reddit["drop"],
            "scrape": sorted([p["key"] for p in pages if p["kind"] in fails] + [normalise_url(u) for u in PRIVATE_URLS]),
            "cc": sorted(c["key"] for c in cc if c["kind"] == "foreign"),
            # junk whose draw drops it at any score <= 0.2 (retention is random: label clear cases only)
            "quality_filter": sorted(c["key"] for c in cc if c["kind"] in ("spam", "gibberish", "boilerplate")
                                     and ret[c["key"]] < 0.8),
            "dedup": sorted(p[1] for p in pairs),
        },
        "expect_keep": {
            "books": sorted(kept_books),
            "reddit_urls": reddit["keep"],
            "scrape": sorted(web_ok),
            "cc": sorted(c["key"] for c in cc_ok),
            "quality_filter": sorted(c["key"] for c in cc_ok if ret[c["key"]] > 0.2),  # kept at any score >= 0.8
            "dedup": sorted({p[0] for p in pairs} | set(carriers)),
        },
        "near_duplicates": sorted(pairs),
        "leaks": leaks,
    }


# --- driver ---------------------------------------------------------------------------------
def build(cfg: SampleConfig, seed: int, out: str | Path) -> dict:
    """Build the whole sample into `out` (built in a staging folder, then moved into place by io.publish: a kill
    leaves the old sample, the new one or none). Returns planted counts."""
    out = Path(out)
    tmp = io.staging_dir("sample")
    lex = textgen.Lexicon(seed)
    books = make_books(cfg, lex, seed)
    kept_txt = [b for b in books if b["kind"] == "book" and b["file"].endswith(".txt")]
    dup = kept_txt[1]  # its exact copy is planted under another name
    dup["duplicated"], dup["dup_file"] = True, f"b{len(books) + 1:02d}-{dup['file'].split('-', 1)[1]}"
    pages = make_site(cfg, lex, seed)
    cc = make_cc(cfg, lex, seed, pages)
    train_text = [p for b in books for _, ps in b["chapters"] for p in ps]
    train_text += [p for d in pages + cc for p in d.get("paras", [])]
    train_grams = set().union(*(ngram_set(t) for t in train_text))
    evals = make_evals(cfg, lex, seed, train_grams)
    leaks = plant_leaks(cfg, seed, evals, books, pages, cc)
    posts, reddit_truth = files.reddit_posts(seed, pages, PRIVATE_URLS, normalise_url)

    counts = {"vocabulary": lex.size()}
    counts.update(files.write_books(tmp / "books", books, seed))
    counts.update(files.write_reddit(tmp / "reddit" / "RS_2019-01.jsonl.zst", posts))
    counts.update(files.write_site(tmp / "site", pages, ROBOTS_HOST))
    counts.update(files.write_warc(tmp / "cc" / files.CC_WARC, cc, seed))
    counts.update(files.write_evals(tmp / "eval", evals, leaks, seed))
    counts.update(mc_task.write(tmp / "finetune", seed, cfg.n_finetune_train, cfg.n_finetune_valid))
    truth_json = truth(seed, books, pages, cc, reddit_truth, leaks)
    (tmp / "truth.json").write_text(json.dumps(truth_json, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    counts["leaks"] = len(leaks)
    counts["docs"] = sum(v for k, v in counts.items() if k.startswith(("books_", "site_", "cc_"))) + len(posts)
    counts["bytes"] = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
    io.write_manifest(tmp, "sample", {"seed": seed, "sample": dataclasses.asdict(cfg)})
    io.publish(tmp, out, move=True)
    return counts
