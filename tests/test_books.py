"""Tests of pipeline/sources/books.py and stages/books.py: Gutenberg header/footer stripping on synthetic and
real files, normalisation, epub reading, the datatrove pipeline end to end with bad input, and the
real books in ../shared/data/books."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.core import io, params, records
from pipeline.sources import books, epub

ROOT = Path(__file__).resolve().parents[1]
LICENCE = ("*** END OF THE PROJECT GUTENBERG EBOOK {T} ***\n\nUpdated editions will replace the previous one.\n"
           "START: FULL LICENSE\nTHE FULL PROJECT GUTENBERG LICENSE\nPLEASE READ THIS BEFORE YOU DISTRIBUTE.\n")


def gutenberg(title: str, body: str, author: str = "Ann Author") -> str:
    return (f"The Project Gutenberg eBook of {title}\n\nThis ebook is for the use of anyone anywhere.\n\n"
            f"Title: {title}\n\nAuthor: {author}\n\nRelease date: January 1, 2020 [eBook #1]\n\n"
            f"*** START OF THE PROJECT GUTENBERG EBOOK {title.upper()} ***\n\n{body}\n\n\n"
            + LICENCE.format(T=title.upper()))


def novel(seed: int, words: int) -> str:
    vocab = ["river", "silent", "morning", "she", "walked", "toward", "the", "old", "house", "and", "light", "fell"]
    out = [vocab[(seed * 7 + i * (seed + 3)) % len(vocab)] for i in range(words)]
    paras = [" ".join(out[i:i + 60]).capitalize() + "." for i in range(0, words, 60)]
    return "\n\n".join(paras)


def make_epub(path: Path, title: str, chapters: list[str]) -> None:
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("id-" + title)
    book.set_title(title)
    book.set_language("en")
    items = []
    for i, text in enumerate(chapters):
        ch = epub.EpubHtml(title=f"Chapter {i + 1}", file_name=f"ch{i + 1}.xhtml", lang="en")
        paras = "".join(f"<p>{p}</p>\n" for p in text.split("\n\n"))
        ch.content = f"<html><body><h1>Chapter {i + 1}</h1>\n{paras}</body></html>"
        book.add_item(ch)
        items.append(ch)
    book.toc = items
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", *items]  # a generated TOC in the spine, as ebooklib writers usually put it
    epub.write_epub(str(path), book)


@pytest.fixture
def books_dir(tmp_path) -> Path:
    d = tmp_path / "books"
    (d / "epub").mkdir(parents=True)
    good = gutenberg("The Silent River", "It was a quiet morning on the river.\n\n" + novel(1, 300))
    (d / "b01-the-silent-river.txt").write_text(good, encoding="utf-8")
    (d / "b02-copy.txt").write_text(good, encoding="utf-8")  # exact duplicate: dedup's job, kept here
    crlf = gutenberg("Windows Lines", "Caf\u00c3\u00a9 mojibake here.\n\n\n\n\n\n" + novel(2, 250))
    (d / "b03-windows.txt").write_bytes(crlf.replace("\n", "\r\n").encode("utf-8"))
    (d / "b04-short.txt").write_text(gutenberg("Tiny Tale", "Too short to keep."), encoding="utf-8")
    (d / "b05-broken.txt").write_bytes(gutenberg("Broken", novel(3, 250)).encode() + b"\xff\xfe bad bytes")
    (d / "b06-plain.txt").write_text(novel(4, 260), encoding="utf-8")  # no markers at all
    make_epub(d / "epub" / "e01.epub", "An Epub Journey", ["First chapter text.\n\n" + novel(5, 150), novel(6, 150)])
    (d / "epub" / "e02-broken.epub").write_bytes(b"PK\x03\x04 not really a zip")
    (d / "README.md").write_text("not a book")
    return d


def test_config_defaults_match_params_yaml():
    section = yaml.safe_load((ROOT / "params.yaml").read_text())["books"]
    assert params.as_dict(books.BooksConfig()) == section
    assert params.build(books.BooksConfig, section) == books.BooksConfig()


def test_strip_modern_markers_and_licence():
    body = books.strip_gutenberg(gutenberg("A Book", "Chapter 1\n\nThe body."))
    assert body == "Chapter 1\n\nThe body."


@pytest.mark.parametrize("text,expected", [
    # older "THE", no spaces around the stars, "End of the Project Gutenberg" line before the END marker
    ("head\n***START OF THE PROJECT GUTENBERG EBOOK X***\nBody.\nEnd of the Project Gutenberg EBook of X\n"
     "***END OF THE PROJECT GUTENBERG EBOOK X***\nlicence", "Body."),
    # START marker wrapped over two lines (43-0.txt)
    ("head\n*** START OF THIS PROJECT GUTENBERG EBOOK\nTHE STRANGE CASE ***\n\nBody.\n*** END OF THIS PROJECT "
     "GUTENBERG EBOOK\nTHE STRANGE CASE ***\nlicence", "Body."),
    # missing END marker: the old trailer and SMALL PRINT licence end the book (pg4657.txt)
    ("head\n*** START OF THE PROJECT GUTENBERG ETEXT OF X ***\n\nBody.\n\nThe Project Gutenberg Etext of X\nby Y\n"
     "******This file should be named x.txt******\nmore\n***START**THE SMALL PRINT!**FOR PUBLIC DOMAIN**START***\n"
     "*END THE SMALL PRINT! FOR PUBLIC DOMAIN EBOOKS*Ver.02/11/02*END*\n", "Body."),
    # 1990s: licence in the header, book after "*END*THE SMALL PRINT"
    ("Project Gutenberg Etext\n***START**THE SMALL PRINT!**FOR PUBLIC DOMAIN ETEXTS**START***\nlegal\n"
     "*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\n\nBody.\n", "Body."),
    # no markers: unchanged
    ("Just a text\n\nwith paragraphs.\n", "Just a text\n\nwith paragraphs.\n"),
])
def test_strip_variants(text, expected):
    assert books.strip_gutenberg(text) == expected


def test_find_title_variants():
    assert books.find_title(gutenberg("The Silent River", "x")) == "The Silent River"
    run_on = "re-use it under the terms at www.gutenberg.orgTitle: The Yellow Wallpaper\n\n*** START OF THIS PROJECT GUTENBERG EBOOK X ***\n"
    assert books.find_title(run_on) == "The Yellow Wallpaper"
    wrapped = "Title: Personal Narrative of a Pilgrimage\n       to Al-Madinah\n\nAuthor: B\n*** START OF THE PROJECT GUTENBERG EBOOK P ***"
    assert books.find_title(wrapped) == "Personal Narrative of a Pilgrimage to Al-Madinah"
    assert books.find_title("The Project Gutenberg eBook of Emma, by Jane Austen\n\n*** START OF THE PROJECT GUTENBERG EBOOK EMMA ***") == "Emma"
    assert books.find_title("no header here") is None


def test_normalise_fixes_text_newlines_and_blank_runs():
    text = "don\u00e2\u20ac\u2122t\r\nline two   \r\n\r\n\r\n\r\n\r\n\r\nlast\rend"
    assert books.normalise(text, fix_text=True) == "don't\nline two\n\n\nlast\nend"
    assert books.normalise("don\u00e2\u20ac\u2122t", fix_text=False) == "don\u00e2\u20ac\u2122t"


def test_html_to_text_blocks_and_whitespace():
    html = b"<html><head><title>T</title><style>p{}</style></head><body><h2>Chapter I.</h2><p>One\n  two <i>three</i>.</p><p>a<br/>b</p><pre>x\n  y</pre></body></html>"
    assert epub.html_to_text(html) == "Chapter I.\n\nOne two three.\n\na\nb\n\nx\ny"


def test_run_end_to_end(books_dir, in_tmp_cwd):
    truth = {"expect_drop": {"books": ["b04-short.txt", "b05-broken.txt"]},
             "expect_keep": {"books": ["b01-the-silent-river.txt", "b02-copy.txt", "b06-plain.txt"]}}
    Path("truth.json").write_text(json.dumps(truth))
    cfg = books.BooksConfig(min_words=200)
    rep = books.run(cfg, books_dir, "out", truth_path="truth.json")
    docs = {d.metadata[records.SOURCE_FILE]: d for d in io.iter_docs(in_tmp_cwd / "out")}
    assert sorted(docs) == ["b01-the-silent-river.txt", "b02-copy.txt", "b03-windows.txt", "b06-plain.txt",
                            "epub/e01.epub"]
    river = docs["b01-the-silent-river.txt"]
    assert river.id == records.book_id("b01-the-silent-river.txt") != docs["b02-copy.txt"].id
    assert river.metadata == {"source": "books", "source_file": "b01-the-silent-river.txt", "book_title": "The Silent River"}
    assert river.text.startswith("It was a quiet morning on the river.")
    assert "PROJECT GUTENBERG" not in river.text and "Title:" not in river.text and "LICENSE" not in river.text
    win = docs["b03-windows.txt"].text
    assert "\r" not in win and "Caf\u00e9 mojibake" in win and "\n\n\n\n" not in win
    assert docs["b06-plain.txt"].text == novel(4, 260)
    ep = docs["epub/e01.epub"]
    assert ep.metadata["book_title"] == "An Epub Journey" and ep.text.startswith("Chapter 1\n\nFirst chapter text.")
    removed = [d.metadata for d in io.iter_removed(in_tmp_cwd / "out")]
    assert [(m["source_file"], m["filter_reason"]) for m in removed] == [("b04-short.txt", "too_short")]
    data = rep.to_dict()
    assert data["docs_in"] == 8 and data["docs_out"] == 5
    assert data["dropped"] == {"bad_epub": 1, "too_short": 1, "undecodable": 1}
    assert data["errors"] == {"bad_epub": 1, "undecodable": 1}
    assert data["files_failed"] == [{"file": "b05-broken.txt", "reason": "undecodable"},
                                    {"file": "epub/e02-broken.epub", "reason": "bad_epub"}]
    assert data["truth"]["precision"] == 1.0 and data["truth"]["recall"] == 1.0 and data["truth"]["labelled_not_seen"] == 0
    manifest = json.loads(Path("out/_manifest.json").read_text())
    assert manifest["params"] == {"min_words": 200, "strip_gutenberg": True, "fix_text": True}
    assert "docs/00000.jsonl.zst" in manifest["files"]


def test_outputs_byte_identical_and_resume(books_dir, in_tmp_cwd):
    cfg = books.BooksConfig(min_words=200)
    books.run(cfg, books_dir, "one")
    again = books.run(cfg, books_dir, "resumed")  # same work dir: datatrove skips the completed task
    assert again.docs_out == 5 and again.errors["undecodable"] == 1
    shutil.rmtree("data/resume")
    books.run(cfg, books_dir, "two")
    for rel in ("docs/00000.jsonl.zst", "removed/too_short/00000.jsonl.zst", "_manifest.json"):
        assert Path("one", rel).read_bytes() == Path("two", rel).read_bytes() == Path("resumed", rel).read_bytes(), rel


def test_strip_off_keeps_the_header(books_dir, in_tmp_cwd):
    rep = books.run(books.BooksConfig(min_words=200, strip_gutenberg=False), books_dir, "out")
    river = next(d for d in io.iter_docs(in_tmp_cwd / "out") if d.metadata["source_file"] == "b01-the-silent-river.txt")
    assert "*** START OF THE PROJECT GUTENBERG EBOOK" in river.text and rep.docs_out == 5


def test_stage_script_as_dvc_runs_it(books_dir, in_tmp_cwd):
    shutil.copy(ROOT / "params.yaml", in_tmp_cwd)
    out = subprocess.run([sys.executable, str(ROOT / "stages/books.py"), "--in", str(books_dir), "--out",
                          "data/interim/books"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    data = json.loads(Path("reports/books.json").read_text())
    # params.yaml's min_words 2000 drops every small fixture book as too_short
    assert data["docs_out"] == 0 and data["dropped"]["too_short"] == 6 and data["errors_total"] == 2
    assert "b05-broken.txt skipped (undecodable)" in out.stderr


def test_real_gutenberg_books(shared_data, in_tmp_cwd):
    src = shared_data / "books"
    rep = books.run(books.BooksConfig(), src, "out")
    docs = {d.metadata["source_file"]: d for d in io.iter_docs(in_tmp_cwd / "out")}
    n_files = len(list(src.glob("*.txt"))) + len(list(src.glob("epub/*.epub")))
    assert len(docs) == n_files == rep.docs_in and not rep.dropped and not rep.errors
    for name, doc in docs.items():
        assert "PROJECT GUTENBERG" not in doc.text, name
        assert "Project Gutenberg-tm" not in doc.text and "Project Gutenberg License" not in doc.text, name
        assert "*** START OF" not in doc.text and "*** END OF" not in doc.text, name
    assert "Alice was beginning to get very tired" in docs["11-0.txt"].text
    assert "Alice was beginning to get very tired" in docs["epub/pg11.epub"].text
    assert "Call me Ishmael" in docs["2701-0.txt"].text
    assert "It is a truth universally acknowledged" in docs["epub/pg1342.epub"].text
    assert docs["1952-0.txt"].metadata["book_title"] == "The Yellow Wallpaper"  # run-on header line
    assert docs["43-0.txt"].text.startswith("Produced by David Widger")      # START marker over two lines
    assert docs["pg4657.txt"].text.rstrip().endswith("intelligible to the curious\nlinguist.")  # no END marker
    assert docs["epub/pg1342.epub"].metadata["book_title"] == "Pride and Prejudice"


def test_empty_folder_gives_an_empty_output(tmp_path, in_tmp_cwd):
    (tmp_path / "none").mkdir()
    rep = books.run(books.BooksConfig(), tmp_path / "none", "out")
    assert rep.docs_in == rep.docs_out == 0 and Path("out/_manifest.json").exists()
    assert list(io.iter_docs(in_tmp_cwd / "out")) == []


def _zip(members: dict[str, bytes], compress: bool = True) -> bytes:
    import io as _io
    import zipfile

    buf = _io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_hostile_epubs_are_refused_from_the_central_directory(tmp_path, in_tmp_cwd):
    assert epub.epub_problem(_zip({"mimetype": b"application/epub+zip", "OEBPS/c1.xhtml": b"<p>x</p>"})) is None
    assert "climbs out" in epub.epub_problem(_zip({"../../etc/evil": b"x"}))
    assert "climbs out" in epub.epub_problem(_zip({"/abs/path": b"x"}))
    assert "zip bomb" in epub.epub_problem(_zip({"bomb.xhtml": b"\0" * (8 << 20)}))  # 8 MB of zeros deflate ~1000x
    assert "members" in epub.epub_problem(_zip({f"m{i}": b"" for i in range(epub.EPUB_MAX_MEMBERS + 1)}, False))
    assert "not a zip" in epub.epub_problem(b"PK\x03\x04 garbage")
    d = tmp_path / "books"
    d.mkdir()
    (d / "bomb.epub").write_bytes(_zip({"bomb.xhtml": b"\0" * (8 << 20)}))
    (d / "ok.txt").write_text("word " * 3000)
    rep = books.run(books.BooksConfig(min_words=10), d, "out").to_dict()
    assert rep["errors"] == {"bad_epub": 1} and rep["docs_out"] == 1
