"""The document data contract: id builders and metadata keys shared by every stage.

A document is a datatrove `Document(text, id, metadata)`. Ids are stable and say
where a document came from: `books/<sha>`, `webtext/<url-hash>`, `cc/<warc-record-id>`.
Metadata keys are the constants below; stages add keys, they never rename them, so
provenance survives all the way to the token shards and the contamination report.
"""
from __future__ import annotations

import hashlib

# --- sources -------------------------------------------------------------------------------
BOOKS, WEBTEXT, CC = "books", "webtext", "cc"
SOURCES = (BOOKS, WEBTEXT, CC)  # also the default dedup priority: earlier sources win

# --- metadata keys (add, never rename) --------------------------------------------------
SOURCE = "source"
SOURCE_FILE = "source_file"          # file the document was read from (book file, dump, WARC)
URL = "url"
MAX_URL_CHARS = 2048  # longer is damage, not a link: the practical limit crawlers use (every source drops it)
REDDIT_POST_ID = "reddit_post_id"
REDDIT_SCORE = "reddit_score"
SUBREDDIT = "subreddit"
WARC_FILE = "warc_file"
WARC_OFFSET = "warc_offset"
WARC_RECORD_ID = "warc_record_id"
BOOK_TITLE = "book_title"
LANG = "lang"
LANG_SCORE = "lang_score"
QUALITY_SCORE = "quality_score"
QUALITY_MODEL = "quality_model"      # which fastText model scored a page: "full" or "fold_<k>" (cross-fitting)
RETENTION_DRAW = "retention_draw"
KEPT = "kept"
DEDUP_CLUSTER_ID = "dedup_cluster_id"
DEDUP_CLUSTER_SIZE = "dedup_cluster_size"
FILTER_REASON = "filter_reason"      # set on documents written to removed/<reason>/
SPLIT = "split"                      # train / val, set by mix
EPOCH = "epoch"                      # repeat number of a document the mix upsampled (0 = first copy)


def sha(text: str | bytes, n: int = 16) -> str:
    """Hex sha256 prefix; the building block of every stable id."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()[:n]


def book_id(file_name: str) -> str:
    """Id of a book: hash of its file name inside the books folder.

    Not of its bytes: two copies of one book must stay two documents, so that dedup,
    not the id, decides which copy survives."""
    return f"{BOOKS}/{sha(file_name)}"


def webtext_id(url: str) -> str:
    """Id of a WebText page: hash of the normalised URL."""
    return f"{WEBTEXT}/{sha(url)}"


def cc_id(warc_record_id: str) -> str:
    """Id of a crawl document: the WARC-Record-ID without its <urn:uuid:...> wrapping."""
    rid = warc_record_id.strip("<>")
    if rid.startswith("urn:uuid:"):
        rid = rid[len("urn:uuid:"):]
    return f"{CC}/{rid}"


def source_of(doc_id: str) -> str:
    return doc_id.split("/", 1)[0]


def natural_key(metadata: dict) -> str:
    """The key the sample's ground truth (truth.json) uses for a document:
    the URL for web and crawl pages, the file name for books."""
    if metadata.get(URL):
        return metadata[URL]
    return metadata.get(SOURCE_FILE, "")
