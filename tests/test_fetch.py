"""The fetch stage against a real HTTP server on loopback: pinned bytes, Range resume after a dropped
connection, a wrong checksum that publishes nothing, a killed run that refetches nothing it finished,
Common Crawl picks from a real crawl listing, and profiles switched in params.yaml."""
from __future__ import annotations

import gzip
import json
import hashlib
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.core import io
from pipeline.sources import commoncrawl, fetch, mirror, profiles

ROOT = Path(__file__).resolve().parents[1]
FAST = fetch.FetchConfig(workers=3, retries=2, backoff_s=0.01, timeout_s=5.0)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture()
def site(tmp_path):
    root = tmp_path / "mirror"
    files = {"books/a.txt": b"Alice was beginning to get very tired. " * 8000,
             "books/b.txt": b"It is a truth universally acknowledged. " * 50,
             "eval/x.jsonl": b'{"text": "one"}\n{"text": "two"}\n'}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root, files


def write_list(path: Path, entries: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"inputs": {"profile": "t"}, "files": entries}))
    return path


def test_fetches_pinned_files_and_writes_a_manifest(site, tmp_path):
    root, files = site
    entries = [{"uri": rel, "dest": rel, "sha256": sha(data)} for rel, data in files.items()]
    with mirror.serve(root) as server:
        rep = fetch.run(FAST, write_list(tmp_path / "l.yaml", entries), tmp_path / "out", server.url,
                        store=tmp_path / "store").to_dict()
    for rel, data in files.items():
        assert (tmp_path / "out" / rel).read_bytes() == data
    manifest = io.read_json(tmp_path / "out" / "fetch_manifest.json")
    assert [r["dest"] for r in manifest["files"]] == sorted(files)
    assert all(r["pinned"] and r["source"] == r["dest"] for r in manifest["files"])  # no mirror address recorded
    assert io.read_json(tmp_path / "out" / "truth.json") == {"planted": False}
    assert rep["files"] == 3 and rep["bytes_out"] == sum(map(len, files.values()))


def test_wrong_checksum_names_the_file_and_publishes_nothing(site, tmp_path):
    root, files = site
    entries = [{"uri": rel, "dest": rel, "sha256": sha(data)} for rel, data in files.items()]
    entries[1]["sha256"] = "0" * 64
    with mirror.serve(root) as server, pytest.raises(fetch.ChecksumError, match="books/b.txt"):
        fetch.run(FAST, write_list(tmp_path / "l.yaml", entries), tmp_path / "out", server.url, store=tmp_path / "store")
    assert not (tmp_path / "out").exists()
    assert not list((tmp_path / "store" / "partial").iterdir())  # the bad bytes are not kept for a resume


class DropsOnce(mirror.MirrorHandler):
    """Sends the first 100 kB of a whole-file GET, then drops the connection, once per path."""
    dropped: set[str] = set()

    def send_body(self, path, start, length):
        if start == 0 and self.path not in DropsOnce.dropped and length > 200_000:
            DropsOnce.dropped.add(self.path)
            with open(path, "rb") as fh:
                self.wfile.write(fh.read(100_000))
            self.wfile.flush()
            self.close_connection = True
            return
        super().send_body(path, start, length)


def test_a_dropped_transfer_resumes_with_range(site, tmp_path):
    root, files = site
    DropsOnce.dropped = set()
    entries = [{"uri": "books/a.txt", "dest": "books/a.txt", "sha256": sha(files["books/a.txt"])}]
    with mirror.serve(root, handler=DropsOnce) as server:
        rep = fetch.run(FAST, write_list(tmp_path / "l.yaml", entries), tmp_path / "out", server.url,
                        store=tmp_path / "store").to_dict()
        ranges = [r for p, r in server.requests if p.endswith("a.txt")]
    assert (tmp_path / "out" / "books/a.txt").read_bytes() == files["books/a.txt"]
    assert len(ranges) == 2 and ranges[0] == ""
    start = int(ranges[1].removeprefix("bytes=").rstrip("-"))  # the retry asked only for what was missing
    assert 0 < start <= 100_000
    assert rep["retries"] == 1 and rep["resumed_bytes"] == start


def test_a_failed_run_resumes_without_refetching_finished_files(site, tmp_path):
    root, files = site
    entries = [{"uri": rel, "dest": rel, "sha256": sha(data)} for rel, data in files.items()]
    broken = entries + [{"uri": "books/missing.txt", "dest": "books/missing.txt"}]
    with mirror.serve(root) as server:
        with pytest.raises(fetch.FetchError, match="books/missing.txt"):
            fetch.run(FAST, write_list(tmp_path / "l.yaml", broken), tmp_path / "out", server.url, store=tmp_path / "store")
        assert not (tmp_path / "out").exists()
        server.requests.clear()
        rep = fetch.run(FAST, write_list(tmp_path / "l.yaml", entries), tmp_path / "out", server.url,
                        store=tmp_path / "store").to_dict()
        assert server.requests == []  # every file came from the verified store
    assert rep["from_store"] == 3 and (tmp_path / "out" / "books/b.txt").read_bytes() == files["books/b.txt"]


def test_dest_must_stay_inside_the_output(tmp_path):
    for bad in ("../x", "/etc/passwd", ""):
        with pytest.raises(ValueError, match="relative path"):
            fetch.expand([{"uri": "a", "dest": bad}], "", lambda spec: b"")


def test_uri_forms():
    assert fetch.resolve("s3://commoncrawl/crawl-data/CC-MAIN-2024-22/warc.paths.gz") == \
        "https://data.commoncrawl.org/crawl-data/CC-MAIN-2024-22/warc.paths.gz"
    assert fetch.resolve("books/11-0.txt", "http://127.0.0.1:9/base") == "http://127.0.0.1:9/base/books/11-0.txt"
    assert fetch.resolve("/abs/file.txt", "http://m/") == "/abs/file.txt"
    with pytest.raises(ValueError, match="only s3://commoncrawl/"):
        fetch.resolve("s3://private-bucket/x")


def test_gutenberg_ids_expand_against_a_mirror_template():
    specs = fetch.expand([{"gutenberg": {"ids": [11, 1342], "url": "{mirror}/cache/epub/{id}/pg{id}.txt",
                                         "sha256": {11: "ab" * 32}}, "dest": "books"}], "http://m.test", None)
    assert [(s.uri, s.dest, s.sha256) for s in specs] == [
        ("http://m.test/cache/epub/11/pg11.txt", "books/pg11.txt", "ab" * 32),
        ("http://m.test/cache/epub/1342/pg1342.txt", "books/pg1342.txt", "")]


def test_common_crawl_picks_are_seeded_and_nested(shared_data):
    raw = (shared_data / "commoncrawl/whirlwind/CC-MAIN-2024-22.warc.paths.gz").read_bytes()
    paths = commoncrawl.listing_paths(raw)
    assert len(paths) == 300 and len(set(paths)) == 300
    three = commoncrawl.pick_paths(raw, 3, seed=1337)
    assert three == commoncrawl.pick_paths(raw, 3, seed=1337) and len(set(three)) == 3
    assert set(three) <= set(commoncrawl.pick_paths(raw, 10, seed=1337))  # a larger count keeps the smaller pick
    assert three != commoncrawl.pick_paths(raw, 3, seed=1338)
    assert commoncrawl.pick_paths(gzip.decompress(raw), 3, 1337) == three  # plain text listings too


def test_common_crawl_entry_fetches_the_picked_files(shared_data, tmp_path):
    """A crawl listing (real, CC-MAIN-2024-22) on a loopback 'data.commoncrawl.org': the picked paths are
    fetched to dest/<file name>, unpinned, and their sha256 recorded in the manifest."""
    root = tmp_path / "cc"
    listing = shared_data / "commoncrawl/whirlwind/CC-MAIN-2024-22.warc.paths.gz"
    picks = commoncrawl.pick_paths(listing.read_bytes(), 2, seed=7)
    (root / "crawl-data/CC-MAIN-2024-22").mkdir(parents=True)
    shutil.copy(listing, root / "crawl-data/CC-MAIN-2024-22/warc.paths.gz")
    for i, path in enumerate(picks):  # stand-ins for the 1 GB segment files, at their real paths
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shared_data / "commoncrawl/warcio/example.warc.gz", root / path)
    entry = {"commoncrawl": {"crawl": "CC-MAIN-2024-22", "kind": "warc", "count": 2, "seed": 7,
                             "listing_sha256": io.sha256_file(listing)}, "dest": "cc"}
    with mirror.serve(root) as server:
        entry["commoncrawl"]["base"] = server.url
        fetch.run(FAST, write_list(tmp_path / "l.yaml", [entry]), tmp_path / "out", "", store=tmp_path / "store")
    manifest = io.read_json(tmp_path / "out" / "fetch_manifest.json")
    got = {r["dest"]: r for r in manifest["files"]}
    assert set(got) == {f"cc/{Path(p).name}" for p in picks}
    assert all(not r["pinned"] and r["source"] in picks for r in got.values())


def test_profiles_use_rewrites_only_the_inputs_group(tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    before = yaml.safe_load(params.read_text())
    group = profiles.use("real-mini", params, ROOT / "profiles")
    after = yaml.safe_load(params.read_text())
    assert after["inputs"] == group and group["profile"] == "real-mini"
    assert {k: v for k, v in after.items() if k != "inputs"} == {k: v for k, v in before.items() if k != "inputs"}
    assert "# gpt-repro parameters" in params.read_text()  # comments survive
    profiles.use("sample", params, ROOT / "profiles")
    assert params.read_text() == (ROOT / "params.yaml").read_text()  # and back, byte for byte
    with pytest.raises(FileNotFoundError, match="no profile 'nope'"):
        profiles.use("nope", params, ROOT / "profiles")


def test_real_mini_pins_match_the_shared_files(shared_data):
    """Every file of the real-mini profile exists in ../shared/data with the pinned sha256."""
    listing = yaml.safe_load((ROOT / "profiles/real-mini.yaml").read_text())
    for entry in listing["files"]:
        assert io.sha256_file(shared_data / entry["uri"]) == entry["sha256"], entry["uri"]


class Drips(mirror.MirrorHandler):
    """Sends 64 kB every 50 ms: slow enough to kill the fetch stage in the middle of a file."""

    def send_body(self, path, start, length):
        import time

        with open(path, "rb") as fh:
            fh.seek(start)
            while length > 0:
                chunk = fh.read(min(1 << 16, length))
                if not chunk:
                    break
                self.wfile.write(chunk)
                self.wfile.flush()
                length -= len(chunk)
                time.sleep(0.05)


def test_stage_killed_mid_download_resumes_by_range_and_publishes_once(tmp_path, in_tmp_cwd):
    """SIGKILL the real stage script while a file streams: nothing is published, the partial bytes stay, and the
    rerun asks only for the rest (HTTP Range) and publishes the verified file."""
    import os
    import signal
    import subprocess
    import sys
    import time

    big = os.urandom(2_000_000)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "big.bin").write_bytes(big)
    write_list(in_tmp_cwd / "l.yaml", [{"uri": "big.bin", "dest": "raw/big.bin", "sha256": sha(big)}])
    shutil.copy(ROOT / "params.yaml", in_tmp_cwd / "params.yaml")
    partial = in_tmp_cwd / "data/resume/fetch/store/partial"
    with mirror.serve(tmp_path / "m", handler=Drips) as server:
        cmd = [sys.executable, str(ROOT / "stages/fetch.py"), "--list", "l.yaml", f"--mirror={server.url}", "--out", "out"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(p.stat().st_size > 200_000 for p in partial.glob("*.part")):
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not (in_tmp_cwd / "out").exists()
        kept = max(p.stat().st_size for p in partial.glob("*.part"))
        assert 0 < kept < len(big)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        ranges = [r for p, r in server.requests if p.endswith("big.bin")]
    assert ranges[0] == "" and ranges[-1].startswith("bytes=") and int(ranges[-1][6:-1]) >= kept
    assert (in_tmp_cwd / "out/raw/big.bin").read_bytes() == big
    assert json.loads((in_tmp_cwd / "reports/fetch.json").read_text())["resumed_bytes"] >= kept
