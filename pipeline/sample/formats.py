"""File formats of the embedded sample (pipeline/sample/generator.py): Gutenberg .txt, EPUB, Pushshift .zst,
HTML site + _routes.json, Common Crawl WARC, LAMBADA/WikiText/HellaSwag files, truth.json.

Every writer is byte-deterministic: fixed zip timestamps for the EPUB (ebooklib stamps the current
time), fixed WARC-Date and uuid5 WARC-Record-IDs (warcio's gzip members carry mtime 0), zstd without
timestamps, stable JSON.
"""
from __future__ import annotations

import datetime
import html
import io
import json
import random
import textwrap
import uuid
import zipfile
from collections import Counter
from pathlib import Path

import zstandard

from pipeline.core import rng

CC_WARC = "CC-SAMPLE-2019-04-00000.warc.gz"
WARC_DATE = "2019-04-20T00:00:00Z"
HTTP_DATE = "Sat, 20 Apr 2019 00:00:00 GMT"
ZIP_TIME = (2019, 1, 1, 0, 0, 0)
SUBREDDITS = ["worldnews", "science", "technology", "travel", "books", "history", "todayilearned", "news"]
HOSTS_LOW = ["news.sample.test", "blog.sample.test", "daily.sample.test"]  # low-karma link targets
QUALITY_ALPHA = 9.0  # quality.alpha (GPT-3); used only to pick truth labels that hold for any score


def record_uuid(seed: int, name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{seed}:{name}"))


def draw(seed: int, doc_id: str, purpose: str) -> float:
    return rng.uniform(seed, doc_id, purpose)


def retention(seed: int, doc_id: str) -> float:
    """quality_filter's Pareto draw for a crawl doc: kept when this exceeds 1 - score (GPT-3)."""
    return rng.pareto(QUALITY_ALPHA, rng.uniform(seed, doc_id, "retention"))


# --- books ----------------------------------------------------------------------------------
LICENCE = """Updated editions will replace the previous one--the old editions will
be renamed.

Creating the works from print editions not protected by U.S. copyright
law means that no one owns a United States copyright in these works,
so the Foundation (and you!) can copy and distribute it in the United
States without permission and without paying copyright royalties.

START: FULL LICENSE

THE FULL PROJECT GUTENBERG LICENSE
PLEASE READ THIS BEFORE YOU DISTRIBUTE OR USE THIS WORK

To protect the Project Gutenberg(TM) mission of promoting the free
distribution of electronic works, by using or distributing this work
(or any other work associated in any way with the phrase "Project
Gutenberg"), you agree to comply with all the terms of the Full
Project Gutenberg(TM) License available with this file or online at
www.gutenberg.org/license.
"""


def gutenberg_text(book: dict) -> str:
    """A book as a Project Gutenberg plain-text file: header, START marker, body, END marker, licence."""
    title, upper = book["title"], book["title"].upper()
    head = (f"The Project Gutenberg eBook of {title}\n\n"
            "This ebook is for the use of anyone anywhere in the United States and\n"
            "most other parts of the world at no cost and with almost no restrictions\n"
            "whatsoever. You may copy it, give it away or re-use it under the terms\n"
            "of the Project Gutenberg License included with this ebook or online\n"
            "at www.gutenberg.org.\n\n"
            f"Title: {title}\n\nAuthor: {book['author']}\n\n"
            f"Release date: January {book['release']}, 2019 [eBook #{90000 + book['release']}]\n\n"
            "Language: English\n\nCredits: the gpt-repro sample generator\n\n\n"
            f"*** START OF THE PROJECT GUTENBERG EBOOK {upper} ***\n\n\n\n\n"
            f"{upper}\n\nby {book['author']}\n\n\n\n")
    body = []
    for n, (ch_title, paras) in enumerate(book["chapters"], 1):
        body.append(f"CHAPTER {n}. {ch_title}\n\n")
        body += [textwrap.fill(p, 70) + "\n\n" for p in paras]
        body.append("\n\n")
    return head + "".join(body) + f"*** END OF THE PROJECT GUTENBERG EBOOK {upper} ***\n\n\n\n" + LICENCE


def _epub_bytes(book: dict, tmp: Path) -> bytes:
    """A real EPUB written by ebooklib, re-zipped with fixed timestamps (mimetype first, stored)."""
    from ebooklib import epub

    e = epub.EpubBook()
    e.set_identifier(f"gpt-repro-sample-{book['release']}")
    e.set_title(book["title"])
    e.set_language("en")
    e.add_author(book["author"])
    chapters = []
    for n, (ch_title, paras) in enumerate(book["chapters"], 1):
        c = epub.EpubHtml(title=ch_title, file_name=f"chap_{n:02d}.xhtml", lang="en")
        c.content = f"<h1>Chapter {n}. {html.escape(ch_title)}</h1>" + "".join(
            f"<p>{html.escape(p)}</p>" for p in paras)
        e.add_item(c)
        chapters.append(c)
    e.toc = chapters
    e.spine = ["nav"] + chapters
    e.add_item(epub.EpubNcx())
    e.add_item(epub.EpubNav())
    raw = tmp / ".raw.epub"
    epub.write_epub(str(raw), e, {"mtime": datetime.datetime(2019, 1, 1)})
    buf = io.BytesIO()
    with zipfile.ZipFile(raw) as zin, zipfile.ZipFile(buf, "w") as zout:
        names = sorted(zin.namelist(), key=lambda n: (n != "mimetype", n))
        for name in names:
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.create_system, info.external_attr = 3, 0o644 << 16
            info.compress_type = zipfile.ZIP_STORED if name == "mimetype" else zipfile.ZIP_DEFLATED
            zout.writestr(info, zin.read(name))
    raw.unlink()
    return buf.getvalue()


def write_books(folder: Path, books: list[dict], seed: int) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    counts = Counter()
    for b in books:
        if b["file"].endswith(".epub"):
            (folder / b["file"]).write_bytes(_epub_bytes(b, folder))
            counts["books_epub"] += 1
            continue
        data = gutenberg_text(b).encode("utf-8")
        if b["kind"] == "undecodable":  # invalid UTF-8 in the middle of the body
            cut = data.index(b"\n\n", len(data) // 2)
            data = data[:cut] + b"\n\xff\xfe\xfa broken bytes\n" + data[cut:]
        (folder / b["file"]).write_bytes(data)
        counts["books_" + b["kind"]] += 1
        if b.get("dup_file"):
            (folder / b["dup_file"]).write_bytes(data)
            counts["books_duplicate"] += 1
    return dict(counts)


# --- reddit ----------------------------------------------------------------------------------
def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out


def reddit_posts(seed: int, pages: list[dict], private_urls: list[str], normalise_url) -> tuple[list[dict], dict]:
    """~150 Pushshift submissions covering every planted case; returns (posts, {keep, drop, kinds}).

    `normalise_url` gives the natural key; a URL is kept iff one of its posts passes every filter."""
    r = random.Random(f"{seed}:reddit")
    posts, keep, drop = [], set(), set()

    def post(url, score, kind, is_self=False, nsfw=False):
        pid = _b36(36 ** 5 + 7919 * len(posts) + 1000)
        sub = r.choice(SUBREDDITS)
        title = f"{kind.replace('_', ' ').capitalize()} link {len(posts)}"
        permalink = f"/r/{sub}/comments/{pid}/{title.lower().replace(' ', '_')}/"
        if is_self:
            url = "https://www.reddit.com" + permalink
        host = url.split("/")[2].split(":")[0].lower() if "://" in url else ""
        posts.append({"author": f"user_{r.randint(1000, 99999)}", "created_utc": 0,
                      "domain": f"self.{sub}" if is_self else host.removeprefix("www."), "id": pid,
                      "is_self": is_self, "num_comments": r.randint(0, 300), "over_18": nsfw,
                      "permalink": permalink, "score": score, "subreddit": sub, "title": title, "url": url,
                      "_kind": kind})
        return normalise_url(url)

    for p in pages:
        keep.add(post(p["url"], r.randint(3, 900), p["kind"]))
    for u in private_urls:
        keep.add(post(u, r.randint(10, 200), "private_address"))
    good = [p for p in pages if p["kind"] == "good"]
    variants = ["?utm_source=reddit&utm_medium=social", "#comments", "?fbclid=IwAR0sample", "HOST", ":80",
                "?utm_campaign=spring#top", "?gclid=Cj0sample", "LOWSCORE"]
    for j, v in enumerate(variants):  # the same page linked again: dedup keeps the highest-scored post
        u = good[10 + j]["url"]
        if v == "HOST":
            u = u.replace(good[10 + j]["host"], good[10 + j]["host"].upper().replace("SAMPLE", "Sample"))
        elif v == ":80":
            u = u.replace(good[10 + j]["host"], good[10 + j]["host"] + ":80")
        elif v != "LOWSCORE":
            u += v
        keep.add(post(u, 1 if v == "LOWSCORE" else r.randint(3, 2000), "duplicate_url"))
    for k in range(32):
        drop.add(post(f"http://{r.choice(HOSTS_LOW)}/2019/01/low-karma-{k}.html", r.randint(-5, 2), "low_karma"))
    for k in range(22):
        drop.add(post("", r.randint(5, 800), "self_post", is_self=True))
    for k in range(8):
        drop.add(post(f"http://nsfw.sample.test/gallery/{k}.html", r.randint(5, 800), "nsfw", nsfw=True))
    blocked = ["https://i.imgur.com/{}.jpg", "https://imgur.com/a/{}", "https://www.youtube.com/watch?v={}",
               "https://youtu.be/{}", "https://en.wikipedia.org/wiki/Sample_{}", "https://redd.it/{}",
               "https://www.reddit.com/r/pics/comments/{}/a_link/"]
    for k in range(21):
        drop.add(post(blocked[k % len(blocked)].format(_b36(10 ** 7 + 31 * k)), r.randint(5, 800), "blocked_domain"))
    for k in range(2):
        drop.add(post(f"ftp://files.sample.test/pub/notes-{k}.txt", r.randint(5, 50), "non_http"))
    r.shuffle(posts)
    for i, p in enumerate(posts):  # a monthly dump is in time order
        p["created_utc"] = 1546300800 + i * 17000 + r.randint(0, 9000)
    drop -= keep  # a URL posted once with enough karma survives
    kinds = Counter(p.pop("_kind") for p in posts)
    return posts, {"keep": sorted(keep), "drop": sorted(drop), "kinds": dict(kinds)}


def write_reddit(path: Path, posts: list[dict]) -> dict:
    lines = [json.dumps(p, sort_keys=True, separators=(",", ":")) for p in posts]
    lines.insert(len(lines) // 2, '{"id":"broken","title":"a truncated record","url":"http://news.sam')
    path.parent.mkdir(parents=True, exist_ok=True)
    data = ("\n".join(lines) + "\n").encode("utf-8")
    path.write_bytes(zstandard.ZstdCompressor(level=3).compress(data))
    return {"reddit_posts": len(posts), "reddit_malformed_lines": 1}


# --- site and WARC HTML -------------------------------------------------------------------------
def article_html(a: dict, site: str, crawl: bool = False) -> str:
    """A real-looking page: head/title, cookie banner, nav, <article> with <p>s, aside, footer."""
    e = html.escape
    nav = "".join(f'<li><a href="/{s.lower()}/">{s}</a></li>' for s in ["World", "Science", "Travel", "Opinion", "Sport"])
    paras = "\n".join(f"<p>{e(p)}</p>" for p in a["paras"])
    related = "".join(f'<li><a href="/related/{i}.html">More stories from {e(site)} ({i})</a></li>' for i in range(5))
    banner = ('<div class="cookie-banner"><p>We use cookies to improve your experience. By continuing to browse '
              'you agree to our use of cookies.</p><button>Accept</button></div>')
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{e(a["title"])} | {e(site)}'
            f'</title>\n</head>\n<body>\n{"" if crawl else banner}\n<header><div class="logo">{e(site)}</div>'
            f'<nav><ul>{nav}</ul></nav></header>\n<main>\n<article>\n<h1>{e(a["title"])}</h1>\n'
            f'<p class="byline">By {e(a.get("author", "Staff"))}</p>\n{paras}\n</article>\n'
            f'<aside><h3>Related</h3><ul>{related}</ul></aside>\n</main>\n<footer><p>Copyright 2019 {e(site)}. '
            f'All rights reserved.</p><ul><li><a href="/privacy">Privacy</a></li><li><a href="/terms">Terms</a>'
            f'</li></ul></footer>\n</body>\n</html>\n')


def write_site(folder: Path, pages: list[dict], robots_host: str) -> dict:
    routes = {}
    counts = Counter()
    for p in pages:
        path = p["path"] + ("index.html" if p["path"].endswith("/") else "")
        target = folder / p["host"] / path.lstrip("/")
        counts["site_" + p["kind"]] += 1
        route = {"404": {"status": 404}, "slow": {"delay_s": 5.0},
                 "redirect_private": {"status": 302, "location": "http://10.0.0.7/admin/"},
                 "pdf": {"content_type": "application/pdf"}, "huge": {"body_bytes": 20_000_000}}.get(p["kind"])
        if route:
            routes[p["host"] + p["path"]] = route
        if p["kind"] == "pdf":
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"%PDF-1.4\n% sample\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")
        elif "paras" in p:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(article_html(p, p["host"].split(".")[0].capitalize() + " Sample"), encoding="utf-8")
    (folder / robots_host / "robots.txt").write_text("User-agent: *\nDisallow: /private/\n", encoding="utf-8")
    (folder / "_routes.json").write_text(json.dumps(routes, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return dict(counts)


def write_warc(path: Path, cc: list[dict], seed: int) -> dict:
    """warcinfo, then request/response pairs, as Common Crawl writes them; byte-deterministic."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    path.parent.mkdir(parents=True, exist_ok=True)
    counts = Counter()
    with open(path, "wb") as fh:
        w = WARCWriter(fh, gzip=True)
        info = w.create_warcinfo_record(path.name, {"software": "gpt-repro sample generator",
                                                    "isPartOf": "CC-SAMPLE-2019-04", "format": "WARC File Format 1.0"})
        info.rec_headers.replace_header("WARC-Record-ID", f"<urn:uuid:{record_uuid(seed, 'warcinfo')}>")
        info.rec_headers.replace_header("WARC-Date", WARC_DATE)
        w.write_record(info)
        for c in sorted(cc, key=lambda c: c["record_id"]):
            host, _, rest = c["url"].partition("://")[2].partition("/")
            body = article_html(c, host.split(".")[0], crawl=True).encode("utf-8")
            rid = f"<urn:uuid:{c['record_id']}>"
            req = w.create_warc_record(c["url"], "request", payload=io.BytesIO(b""), length=0, http_headers=StatusAndHeaders(
                f"GET /{rest} HTTP/1.1", [("Host", host), ("User-Agent", "CCBot/2.0 (https://commoncrawl.org/faq/)"),
                                          ("Accept", "text/html")], is_http_request=True),
                warc_headers_dict={"WARC-Record-ID": f"<urn:uuid:{record_uuid(seed, 'request:' + c['url'])}>",
                                   "WARC-Date": WARC_DATE, "WARC-Concurrent-To": rid})
            resp = w.create_warc_record(c["url"], "response", payload=io.BytesIO(body), length=len(body),
                                        http_headers=StatusAndHeaders("200 OK", [
                                            ("Content-Type", "text/html; charset=utf-8"), ("Date", HTTP_DATE),
                                            ("Content-Length", str(len(body)))], protocol="HTTP/1.1"),
                                        warc_headers_dict={"WARC-Record-ID": rid, "WARC-Date": WARC_DATE,
                                                           "WARC-IP-Address": "192.0.2.1"})
            w.write_record(req)
            w.write_record(resp)
            counts["cc_" + c["kind"]] += 1
    return dict(counts)


# --- eval sets and truth -----------------------------------------------------------------------
def write_evals(folder: Path, evals: dict, leaks: list[dict], seed: int) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "lambada_test.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps({"text": t}) + "\n" for t in evals["lambada"])
    lines = []
    for title, paras in evals["wikitext"]:
        lines += [" \n", f" = {title} = \n", " \n"]
        for heading, text in paras:
            if heading:
                lines += [f" = = {heading} = = \n", " \n"]
            lines += [f" {text} \n", " \n"]
    (folder / "wikitext-2-raw-v1_test.txt").write_text("".join(lines), encoding="utf-8")
    r = random.Random(f"{seed}:hellaswag")
    leaked = {x["index"] for x in leaks if x["task"] == "hellaswag"}
    items = evals["hellaswag"]
    with open(folder / "hellaswag_val.jsonl", "w", encoding="utf-8") as fh:
        for i, (label_text, ctx_a, ctx_b, gold) in enumerate(items):
            # distractors: other items' gold endings, never a leaked one (it is in training text)
            others = [items[j][3] for j in r.sample([j for j in range(len(items)) if j != i and j not in leaked], 3)]
            label = r.randrange(4)
            endings = others[:label] + [gold] + others[label:]
            fh.write(json.dumps({"ind": i, "activity_label": label_text, "ctx_a": ctx_a, "ctx_b": ctx_b,
                                 "ctx": f"{ctx_a} {ctx_b}", "endings": endings, "label": label, "split": "val",
                                 "split_type": "indomain", "source_id": f"activitynet~v_sample{i:04d}"}) + "\n")
    n_par = sum(len(p) for _, p in evals["wikitext"])
    return {"eval_lambada": len(evals["lambada"]), "eval_wikitext_paragraphs": n_par,
            "eval_wikitext_articles": len(evals["wikitext"]), "eval_hellaswag": len(items)}
