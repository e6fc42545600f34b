"""Files between stages: shard layout, datatrove reader/writer factories, atomic writes, resume dirs.

Layout of a document folder (the output of any document stage):
    <folder>/docs/<rank:05d>.jsonl.zst                kept documents
    <folder>/removed/<reason>/<rank:05d>.jsonl.zst    dropped documents, `metadata.filter_reason` set
    <folder>/_manifest.json                           stage, params, shard hashes and doc counts

Shards are zstd, not gzip: a gzip header stores the write time, so gzip shards are never
byte-identical across runs, and byte-identical outputs are a promise of this project.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

DOCS = "docs"
REMOVED = "removed"
SHARD_NAME = "${rank}.jsonl.zst"
SHARD_GLOB = "*.jsonl.zst"
MANIFEST = "_manifest.json"
WORK_ROOT = Path("data/resume")  # resume state: outside every DVC out, so `dvc repro` never deletes it
# atomic_path's temp names: "." + target name + "." + mkstemp's 8 random characters + ".tmp"
PARTIAL_WRITE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


# --- atomic writes ---------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs should read like any other file
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def drop_partial_writes(folder: str | Path) -> list[Path]:
    """Delete the temp files that killed atomic_path writes left anywhere under `folder`; returns them.

    A SIGKILL skips atomic_path's cleanup, so a stage killed while writing into its staging folder leaves
    a temp beside the target. The rerun writes the target again, but the temp would be published (and
    listed in the manifest) with it: publish and write_manifest call this first. Only for folders that no
    other process is writing into."""
    folder = Path(folder)
    found = sorted(p for p in folder.rglob(".*.tmp") if p.is_file() and PARTIAL_WRITE.match(p.name))
    for path in found:
        path.unlink()
    return found


def write_json(path: str | Path, obj: Any) -> None:
    """Write stable JSON (sorted keys, 2-space indent, trailing newline) atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- resume directories ------------------------------------------------------------------
def work_dir(stage: str, fingerprint: str) -> Path:
    """Scratch + resume folder of a stage run, keyed by its params fingerprint.

    DVC deletes a stage's outs before rerunning it, so anything a killed stage should
    reuse (datatrove completions, fetched pages) lives here, then is published to outs.
    The path is absolute (under the current directory): datatrove steps carry their paths to Ray workers,
    whose working directory is not the driver's, and datatrove caches its DataFolders by path string, so a
    relative path resolved once would keep pointing at the first cwd that resolved it.
    """
    path = (WORK_ROOT / stage / fingerprint).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def staging_dir(stage: str) -> Path:
    """An empty folder in the stage's work area to build a whole output in, then io.publish(..., move=True) it:
    for stages with nothing to resume (a kill restarts them). Written into in place, their output folder would
    be left half made by a kill (a model without its fold models, a tokenizer without its meta)."""
    path = work_dir(stage, "staging")
    shutil.rmtree(path)
    path.mkdir()
    return path


def run_fingerprint(*configs: Any, inputs: Iterable[str | Path] = (), code: Iterable[str | Path] = ()) -> str:
    """Key of a resumable run: params, input bytes and code together (names the work dir).

    DVC reruns a stage when its code or inputs change, not only its params; keying the work dir
    on params alone would let datatrove skip tasks it completed for old inputs or old code.
    `inputs` are files or folders (every file below, by relative name and sha256); `code` are the
    module files whose change must start clean (pass `__file__`).
    """
    from pipeline.core import params

    h = hashlib.sha256(params.fingerprint(*configs).encode())
    for item in map(Path, inputs):
        files = sorted(p for p in item.rglob("*") if p.is_file()) if item.is_dir() else [item]
        for f in files:
            name = f.relative_to(item) if item.is_dir() else f.name
            h.update(f"{name}\0{sha256_file(f) if f.exists() else '-'}\n".encode())
    for module in code:
        h.update(sha256_file(module).encode())
    return h.hexdigest()[:12]


def publish(src: str | Path, dst: str | Path, move: bool = False) -> None:
    """Replace folder `dst` by a copy of `src`, without the temps of writes into `src` that a kill interrupted
    (drop_partial_writes). A kill at any moment leaves `dst` whole (old or new) or absent, never partial.

    The copy is made beside `src` (scratch space, where a half-made copy bothers nobody; the next publish
    removes it) and renamed over `dst`; beside `dst` only where the two are on different file systems. An
    old `dst` is renamed aside before it is deleted: deleted in place, a kill would leave it half-gone.
    `move`: `src` is not kept (a staging_dir, nothing to resume from), so it is renamed instead of copied."""
    src, dst = Path(src), Path(dst)
    drop_partial_writes(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    scratch = src.resolve().parent
    same_fs = scratch.stat().st_dev == dst.parent.stat().st_dev
    if not same_fs:  # os.replace cannot cross file systems
        scratch = dst.parent
    tmp, old = scratch / f".{dst.name}.publish", scratch / f".{dst.name}.replaced"
    for leftover in (tmp, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    if move and same_fs:
        os.replace(src, tmp)
    else:
        shutil.copytree(src, tmp)
    if dst.exists():
        os.replace(dst, old)
    os.replace(tmp, dst)
    shutil.rmtree(old, ignore_errors=True)
    if move:
        shutil.rmtree(src, ignore_errors=True)


def publish_file(src: str | Path, dst: str | Path) -> None:
    """Move finished file `src` over `dst` in one rename (across file systems: copied to a temp beside `dst`,
    then renamed), so that `dst` is the old file, the new one or absent whenever a kill lands."""
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
        src.unlink()


# --- datatrove readers and writers --------------------------------------------------------
def doc_reader(folder: str | Path, subdir: str = DOCS, **kwargs):
    """A datatrove JsonlReader over `<folder>/<subdir>/*.jsonl.zst` in sorted file order.

    add_file_path is off: an absolute path in metadata would differ from machine to machine.
    """
    from datatrove.pipeline.readers import JsonlReader

    # absolute: datatrove caches DataFolders by path string, so a relative path would
    # keep pointing at whatever cwd first resolved it
    return JsonlReader(
        str((Path(folder) / subdir).resolve()), glob_pattern=SHARD_GLOB, compression="zstd", add_file_path=False, **kwargs
    )


def doc_writer(folder: str | Path, subdir: str = DOCS):
    """A datatrove JsonlWriter writing zstd shards into `<folder>/<subdir>/`."""
    from datatrove.pipeline.writers import JsonlWriter

    return JsonlWriter(str((Path(folder) / subdir).resolve()), output_filename=SHARD_NAME, compression="zstd")


def removed_writer(folder: str | Path, reason_group: str):
    """Exclusion writer for a filter: dropped documents go to `removed/<reason_group>/`."""
    return doc_writer(folder, f"{REMOVED}/{reason_group}")


def iter_docs(folder: str | Path, subdir: str = DOCS) -> Iterator[Any]:
    """Iterate the datatrove Documents of a document folder, in shard order, in one process."""
    if not (Path(folder) / subdir).exists():
        return iter(())
    return doc_reader(folder, subdir).run(None, rank=0, world_size=1)


def read_records(folder: str | Path, subdir: str = DOCS) -> list[dict]:
    """Raw JSON lines of a folder's shards. Unlike iter_docs this keeps documents with empty
    text (pages trafilatura found nothing in), which a report must still count."""
    import orjson
    import zstandard

    rows = []
    for shard in shard_paths(folder, subdir):
        with open(shard, "rb") as fh:
            data = zstandard.ZstdDecompressor().stream_reader(fh).read()
        rows.extend(orjson.loads(line) for line in data.splitlines() if line.strip())
    return rows


def shard_paths(folder: str | Path, subdir: str = DOCS) -> list[Path]:
    return sorted((Path(folder) / subdir).glob(SHARD_GLOB))


def iter_removed(folder: str | Path) -> Iterator[Any]:
    """Every dropped document of a folder, whatever its reason."""
    root = Path(folder) / REMOVED
    if not root.exists():
        return
    for reason_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        yield from iter_docs(folder, f"{REMOVED}/{reason_dir.name}")


# --- manifests -------------------------------------------------------------------------------
def write_manifest(folder: str | Path, stage: str, params: Any, inputs: dict[str, str | Path] | None = None) -> dict:
    """Describe a finished output folder: params used, input manifests' hashes, every file's sha256.

    It makes lineage readable without DVC (and is itself deterministic: no times, no hosts).
    """
    folder = Path(folder)
    drop_partial_writes(folder)
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        files[str(path.relative_to(folder))] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    input_hashes = {}
    for name, path in (inputs or {}).items():
        manifest = Path(path) / MANIFEST
        input_hashes[name] = sha256_file(manifest) if manifest.exists() else None
    manifest = {"stage": stage, "params": params, "inputs": input_hashes, "files": files}
    write_json(folder / MANIFEST, manifest)
    return manifest
