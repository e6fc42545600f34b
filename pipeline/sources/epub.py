"""EPUB books: the zip checked before it is opened, then spine chapters to plain text (ebooklib + lxml).

A hostile or broken EPUB (a zip bomb, member names that climb out of the archive, thousands of members)
is refused from its central directory alone, before anything is inflated; the books stage counts it as
bad_epub with the reason and goes on.
"""
from __future__ import annotations

import io as _io
import re
import warnings
from pathlib import PurePosixPath

_BLOCK_TAGS = {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "li", "tr", "blockquote", "pre", "section",
               "article", "table", "ul", "ol", "dd", "dt", "hr", "figure", "header", "footer"}


def html_to_text(html: bytes | str) -> str:
    """Visible text of an XHTML chapter: one paragraph per block element, whitespace inside blocks
    collapsed (source line wrapping is not a line break), <br> kept as a newline."""
    import lxml.html

    if isinstance(html, str):
        html = html.encode("utf-8")
    if not html.strip():
        return ""
    root = lxml.html.fromstring(html)
    for bad in root.xpath("//script|//style|//head"):
        bad.drop_tree()
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        in_pre = el.tag == "pre" or any(a.tag == "pre" for a in el.iterancestors())
        if not in_pre:
            el.text = re.sub(r"\s+", " ", el.text) if el.text else el.text
            el.tail = re.sub(r"\s+", " ", el.tail) if el.tail else el.tail
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        if el.tag == "br":
            el.tail = "\n" + (el.tail or "")
        elif el.tag in _BLOCK_TAGS:
            el.text = "\n\n" + (el.text or "")
            el.tail = "\n\n" + (el.tail or "")
    text = root.text_content()
    text = re.sub(r"[ \t]*\n[ \t]*", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


EPUB_MAX_MEMBERS = 5_000            # a novel has tens to hundreds; more is damage or a zip bomb
EPUB_MAX_UNZIPPED = 256 << 20       # bytes once inflated: the largest Gutenberg EPUBs are a few MB
EPUB_MAX_RATIO = 200                # inflated / compressed per member: text and HTML deflate 3-10x


def epub_problem(data: bytes) -> str | None:
    """Why an EPUB's zip must not be opened, or None: too many members, a member name that is absolute or
    climbs out ('..'), a declared size that is a zip bomb. Checked on the central directory, nothing inflated."""
    import zipfile

    try:
        members = zipfile.ZipFile(_io.BytesIO(data)).infolist()
    except zipfile.BadZipFile as err:
        return f"not a zip: {err}"
    if len(members) > EPUB_MAX_MEMBERS:
        return f"{len(members)} members (limit {EPUB_MAX_MEMBERS})"
    total = 0
    for m in members:
        name = PurePosixPath(m.filename.replace("\\", "/"))
        if name.is_absolute() or ".." in name.parts or len(m.filename) > 1024:
            return f"member name {m.filename[:100]!r} is absolute, climbs out or is overlong"
        total += m.file_size
        if m.compress_size and m.file_size / m.compress_size > EPUB_MAX_RATIO and m.file_size > 1 << 20:
            return f"member {m.filename[:100]!r} inflates {m.file_size // m.compress_size}x (zip bomb)"
    if total > EPUB_MAX_UNZIPPED:
        return f"{total} bytes once inflated (limit {EPUB_MAX_UNZIPPED})"
    return None


def read_epub(path) -> tuple[str, str | None]:
    """(text, title) of an EPUB (a path or a binary file object): spine chapters in reading order
    (the generated nav page skipped), Dublin Core title."""
    import ebooklib
    from ebooklib import epub

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ebooklib warns about future defaults on every call
        book = epub.read_epub(path if hasattr(path, "read") else str(path), options={"ignore_ncx": True})
    chapters = []
    for item_id, _linear in book.spine:
        item = book.get_item_with_id(item_id)
        if isinstance(item, epub.EpubNav):  # the generated table of contents is not book text
            continue
        if item is not None and item.get_type() == ebooklib.ITEM_DOCUMENT:
            chapter = html_to_text(item.get_content())
            if chapter:
                chapters.append(chapter)
    titles = book.get_metadata("DC", "title")
    title = " ".join(titles[0][0].split()) if titles and titles[0][0] else None
    return "\n\n".join(chapters), title
