"""Raw inputs fetched, pinned and versioned: a fetch list -> verified bytes under data/raw/fetched/.

A profile's fetch list (profiles/<name>.yaml, `files:`) names every raw input as a URI and where it goes:
  - {uri, dest, sha256}: one file. `uri` is a local path, http(s)://..., s3://... or a path relative to
    `inputs.mirror` (a Gutenberg or Common Crawl mirror, or the loopback mirror the tests serve).
  - {commoncrawl: {crawl, kind, count, seed[, listing, listing_sha256]}, dest}: `count` WARC or WET files
    of a crawl, picked deterministically from its `<kind>.paths.gz` listing (commoncrawl.py).
  - {gutenberg: {ids, url[, sha256]}, dest}: Project Gutenberg books by id, `url` a template with {id}.

Why a DVC stage and not `dvc import-url`: import-url writes one .dvc file per URL outside params, so a
profile could not be switched in params.yaml nor its files pinned by sha256 (import-url pins an ETag,
which servers compute in their own ways), and downloads would be neither parallel nor resumable. Here
the fetched folder is a stage output: `dvc push`/`dvc pull` carry exactly the bytes a run read, and a
stage reads only its own source's subfolder, so changing one source reruns only what is downstream of it.

Downloads are parallel (`fetch.workers`), retried with exponential backoff, resumed with HTTP Range from
the partial file a killed run left, and verified against sha256 before they enter a content-addressed
store (data/resume/fetch/blobs/<sha256>, outside DVC outputs, so a rerun refetches nothing it has).
A mismatch is an error that names the file; the output folder is published only when every file is
verified, so a half-downloaded file never becomes an output.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urljoin, urlsplit

import urllib3
import yaml
from tqdm import tqdm

from pipeline.core import io
from pipeline.core.report import StageReport
from pipeline.sources.commoncrawl import CC_HTTP, pick_paths, s3_to_https

log = logging.getLogger(__name__)
CHUNK = 1 << 16  # written as it arrives: a dropped transfer resumes from the last whole chunk
TRUTH = "truth.json"  # real data has no planted truth; stages read this empty record instead (see run)


@dataclass(frozen=True)
class FetchConfig:
    """params.yaml `fetch`: how to download (none of it changes the bytes, which sha256 pins)."""

    workers: int = 4             # parallel downloads
    retries: int = 4             # extra attempts after a transient failure
    backoff_s: float = 1.0       # wait before retry k: backoff_s * 2**k
    timeout_s: float = 60.0      # per socket read; a stalled transfer is retried and resumed
    user_agent: str = "gpt-repro-fetch/0.1"


@dataclass(frozen=True)
class FileSpec:
    uri: str          # where the bytes come from now (a mirror's address may change from run to run)
    dest: str
    sha256: str = ""  # empty: unpinned (a Common Crawl pick): recorded in the manifest after download
    source: str = ""  # the URI as the fetch list names it (what the manifest records)


class FetchError(RuntimeError):
    """A file that could not be fetched or verified; the message names it. `final`: retrying cannot help."""

    def __init__(self, message: str, final: bool = False):
        super().__init__(message)
        self.final = final


class ChecksumError(FetchError):
    pass


# --- the fetch list -------------------------------------------------------------------------------
def _safe_dest(dest: str) -> str:
    """A dest stays inside the output folder: relative, no '..' parts."""
    path = PurePosixPath(dest)
    if not dest or path.is_absolute() or ".." in path.parts:
        raise ValueError(f"fetch list dest {dest!r} must be a relative path inside the output folder")
    return str(path)


def load_list(path: str | Path | None) -> dict:
    """The fetch list file ({} for none): keys `files` (list of entries) and `inputs` (the profile)."""
    if not path:
        return {}
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a fetch list is a mapping with a `files:` list")
    return data


def resolve(uri: str, mirror: str = "") -> str:
    """A fetchable location: s3://commoncrawl/ -> Common Crawl's HTTPS endpoint, relative -> mirror + uri."""
    scheme = urlsplit(uri).scheme
    if scheme == "s3":
        return s3_to_https(uri)
    if scheme in ("http", "https", "file"):
        return uri
    if mirror and not os.path.isabs(uri):
        return urljoin(mirror.rstrip("/") + "/", uri)
    return uri  # a local path


def expand(entries: list[dict], mirror: str, fetch_bytes) -> list[FileSpec]:
    """Entries of a fetch list -> one FileSpec per file (Common Crawl listings are fetched to pick from).

    `fetch_bytes(FileSpec) -> bytes` gets a listing (verified like any file when its sha256 is given)."""
    specs: list[FileSpec] = []
    for entry in entries:
        if "commoncrawl" in entry:
            cc = entry["commoncrawl"]
            kind = cc.get("kind", "warc")
            cc_base = resolve(cc.get("base", CC_HTTP), mirror).rstrip("/") + "/"  # where the crawl's files are
            # an explicit listing is a file of the fetch list (relative to the mirror); else the crawl's own
            listing = cc.get("listing") or f"crawl-data/{cc['crawl']}/{kind}.paths.gz"
            raw = fetch_bytes(FileSpec(resolve(listing, mirror if cc.get("listing") else cc_base),
                                       f"{entry['dest']}/{kind}.paths.gz", cc.get("listing_sha256", ""), listing))
            for path in pick_paths(raw, int(cc["count"]), int(cc.get("seed", 0))):
                specs.append(FileSpec(urljoin(cc_base, path),
                                      _safe_dest(f"{entry['dest']}/{PurePosixPath(path).name}"), source=path))
        elif "gutenberg" in entry:
            gb = entry["gutenberg"]
            pins = {str(k): v for k, v in (gb.get("sha256") or {}).items()}
            for book in gb["ids"]:
                url = gb["url"].format(id=book, mirror=mirror.rstrip("/"))
                name = PurePosixPath(urlsplit(url).path).name or f"pg{book}.txt"
                specs.append(FileSpec(resolve(url, mirror), _safe_dest(f"{entry['dest']}/{name}"),
                                      pins.get(str(book), ""), gb["url"].format(id=book, mirror="{mirror}")))
        else:
            specs.append(FileSpec(resolve(entry["uri"], mirror), _safe_dest(entry["dest"]), entry.get("sha256", ""),
                                  entry["uri"]))
    dests = [s.dest for s in specs]
    clash = sorted({d for d in dests if dests.count(d) > 1})
    if clash:
        raise ValueError(f"fetch list writes these dests twice: {clash}")
    return specs


# --- downloading -----------------------------------------------------------------------------------
class Downloader:
    """Resumable, retried, verified downloads into a content-addressed store."""

    def __init__(self, cfg: FetchConfig, store: Path, progress: tqdm | None = None):
        self.cfg, self.store, self.progress = cfg, Path(store), progress
        (self.store / "blobs").mkdir(parents=True, exist_ok=True)
        (self.store / "partial").mkdir(parents=True, exist_ok=True)
        self.http = urllib3.PoolManager(num_pools=16, maxsize=max(4, cfg.workers),
                                        headers={"User-Agent": cfg.user_agent}, retries=False)
        self.stats = {"downloaded_bytes": 0, "resumed_bytes": 0, "from_store": 0, "retries": 0}

    def blob(self, sha256: str) -> Path:
        return self.store / "blobs" / sha256

    def get(self, spec: FileSpec) -> tuple[Path, str]:
        """(path of the verified bytes in the store, their sha256)."""
        if spec.sha256 and self.blob(spec.sha256).is_file():
            self.stats["from_store"] += 1
            return self.blob(spec.sha256), spec.sha256
        part = self.store / "partial" / (hashlib.sha256(f"{spec.uri}|{spec.sha256}".encode()).hexdigest() + ".part")
        for attempt in range(self.cfg.retries + 1):
            try:
                self._transfer(spec.uri, part)
                break
            except (OSError, FetchError, urllib3.exceptions.HTTPError) as exc:  # resets, stalls, cut bodies
                if getattr(exc, "final", False) or attempt == self.cfg.retries:
                    raise FetchError(f"{spec.dest}: cannot fetch {spec.uri}: {exc}") from None
                self.stats["retries"] += 1
                wait = self.cfg.backoff_s * 2 ** attempt
                log.warning("%s: %s; retry %d in %.1f s", spec.uri, exc, attempt + 1, wait)
                time.sleep(wait)
        digest = io.sha256_file(part)
        if spec.sha256 and digest != spec.sha256:
            part.unlink()  # bad bytes never stay, so the next run starts clean
            raise ChecksumError(f"{spec.dest}: sha256 of {spec.uri} is {digest}, the fetch list pins {spec.sha256}")
        os.replace(part, self.blob(digest))
        return self.blob(digest), digest

    def _transfer(self, uri: str, part: Path) -> None:
        """Append the rest of `uri` to `part` (HTTP Range when part has bytes); local paths are copied."""
        scheme = urlsplit(uri).scheme
        if scheme not in ("http", "https"):
            src = Path(uri[7:] if scheme == "file" else uri)
            if not src.is_file():
                raise FetchError(f"no such file {src}", final=True)
            shutil.copyfile(src, part)
            self._advance(src.stat().st_size)
            return
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        timeout = urllib3.Timeout(connect=min(self.cfg.timeout_s, 30.0), read=self.cfg.timeout_s)
        resp = self.http.request("GET", uri, headers=headers, preload_content=False, redirect=True, timeout=timeout)
        try:
            if resp.status == 416 and have:  # nothing left to send: the partial file is whole
                return
            if resp.status not in (200, 206):  # 400/401/403/404/410 do not heal by waiting
                raise FetchError(f"HTTP {resp.status}", final=resp.status in (400, 401, 403, 404, 410))
            mode = "ab" if resp.status == 206 else "wb"  # 200: the server ignored Range, start over
            if mode == "ab":
                self.stats["resumed_bytes"] += have
            with open(part, mode) as fh:
                for chunk in resp.stream(CHUNK):
                    fh.write(chunk)
                    self.stats["downloaded_bytes"] += len(chunk)
                    self._advance(len(chunk))
            expected = resp.headers.get("Content-Length")
            if expected is not None and part.stat().st_size < int(expected) + (have if mode == "ab" else 0):
                raise FetchError("connection closed before the whole body arrived")
        finally:
            resp.release_conn()

    def _advance(self, n: int) -> None:
        if self.progress is not None:
            self.progress.update(n)


# --- the stage ------------------------------------------------------------------------------------
def run(cfg: FetchConfig, list_path: str | Path | None, out: str | Path, mirror: str = "",
        store: str | Path | None = None) -> StageReport:
    """Fetch every file of the list into `out` (published whole, or not at all); manifest beside them.

    Args:
        cfg: params `fetch`. list_path: the profile's fetch list (None or "": fetch nothing).
        out: output folder (data/raw/fetched). mirror: base URL of relative URIs (params inputs.mirror).
        store: content store (default data/resume/fetch): verified blobs and partial downloads.
    """
    rep = StageReport("fetch")
    listing = load_list(list_path)
    store = Path(store) if store else io.work_dir("fetch", "store")
    bar = tqdm(desc="fetch", unit="B", unit_scale=True, disable=None)
    dl = Downloader(cfg, store, bar)

    def listing_bytes(spec: FileSpec) -> bytes:
        return dl.get(spec)[0].read_bytes()

    specs = expand(listing.get("files") or [], mirror, listing_bytes)
    with ThreadPoolExecutor(max(1, cfg.workers)) as pool:
        results = list(pool.map(dl.get, specs))  # the first failure raises here, before anything is published
    bar.close()
    out = Path(out)
    staged = store / "staging"
    shutil.rmtree(staged, ignore_errors=True)
    rows = []
    for spec, (blob, digest) in sorted(zip(specs, results), key=lambda x: x[0].dest):
        dst = staged / spec.dest
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(blob, dst)
        rows.append({"dest": spec.dest, "source": spec.source or spec.uri, "sha256": digest,
                     "bytes": dst.stat().st_size, "pinned": bool(spec.sha256)})
    staged.mkdir(parents=True, exist_ok=True)
    if not (staged / TRUTH).exists():  # stages take --truth; real data has none to score against
        io.write_json(staged / TRUTH, {"planted": False})
    io.write_json(staged / "fetch_manifest.json", {"profile": (listing.get("inputs") or {}).get("profile", ""),
                                                   "files": rows})
    io.publish(staged, out)
    rep.docs_in = rep.docs_out = len(rows)
    rep.bytes_in = rep.bytes_out = sum(r["bytes"] for r in rows)
    rep.extra.update({"files": len(rows), "unpinned": sum(not r["pinned"] for r in rows), **dl.stats})
    return rep
