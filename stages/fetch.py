"""Stage `fetch`: the profile's raw inputs, fetched by URI, pinned by sha256, published as one DVC output.

In:     --list    the profile's fetch list (params inputs.fetch, e.g. profiles/real-mini.yaml; its `files:`
                  entries: {uri, dest, sha256}, {commoncrawl: {crawl, kind, count, seed}, dest},
                  {gutenberg: {ids, url}, dest}); the embedded sample's list is empty
        --mirror  base URL for the list's relative URIs (params inputs.mirror; "" for none)
Out:    --out     data/raw/fetched/<dest> for every file, fetch_manifest.json (dest, source, sha256, bytes),
                  truth.json (no planted truth: real data); reports/fetch.json (files, bytes, resumed bytes,
                  files taken from the store, retries)
        Store:    data/resume/fetch/store/blobs/<sha256> (verified bytes) and partial/ (resumable downloads)
Params: fetch.* (workers, retries, backoff, timeout: none of them changes the bytes)
Usage:  python stages/fetch.py --list profiles/real-mini.yaml --mirror=http://127.0.0.1:8765/ --out data/raw/fetched
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

from pipeline.core import cli, params, storage
from pipeline.sources import fetch


def main() -> None:
    parser = cli.stage_parser(__doc__)
    parser.add_argument("--list", required=True, help="fetch list YAML (the profile file)")
    parser.add_argument("--mirror", default="", help="base URL for relative URIs in the list")
    parser.add_argument("--out", required=True, help="output folder (data/raw/fetched)")
    args = cli.parse_args(parser)
    cfg = params.config(fetch.FetchConfig, "fetch")
    try:
        rep = fetch.run(cfg, args.list, args.out, mirror=args.mirror)
    except (fetch.FetchError, ValueError) as exc:
        sys.exit(f"fetch: {exc} (nothing was published to {args.out})")
    data = rep.write()
    print(f"fetch: {data['files']} files, {data['bytes_out']} bytes ({data['downloaded_bytes']} downloaded now, "
          f"{data['resumed_bytes']} resumed, {data['from_store']} files from the store, {data['retries']} retries)")


if __name__ == "__main__":
    storage.run_stage(main)
