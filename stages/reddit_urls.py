"""Stage `reddit_urls`: the WebText URL list from Reddit submissions (GPT-2).

In:  --in folder of Pushshift submission dumps (*.jsonl, *.jsonl.zst, *.zst, *.gz), or the live API when
     reddit.source=praw (credentials from env PRAW_CLIENT_ID/PRAW_CLIENT_SECRET/PRAW_USER_AGENT or PRAW_SITE)
Out: --out folder: urls.parquet (one row per normalised URL, sorted), removed.parquet (url, post_id, reason),
     _manifest.json; reports/reddit_urls.json; reports/plots/reddit_urls/score_hist.json
Params: reddit.* (source, dump_glob, date_from/date_to, min_score, score_rule, exclude_self_posts, exclude_nsfw,
        block_domains, allow_domains, praw_*)
Usage: python stages/reddit_urls.py --in data/raw/sample/reddit --out data/interim/reddit_urls --truth data/raw/sample/truth.json
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

from pipeline.core import cli, params, report, storage
from pipeline.sources import reddit


def main() -> None:
    ap = cli.stage_parser(__doc__)
    ap.add_argument("--in", dest="in_dir", default=None, help="folder of Pushshift dumps (unused when reddit.source=praw)")
    ap.add_argument("--out", required=True, help="folder to write (urls.parquet, removed.parquet, _manifest.json)")
    ap.add_argument("--truth", default=None, help="the sample's truth.json, to score the drops (optional)")
    args = cli.parse_args(ap)

    cfg = params.config(reddit.RedditConfig, "reddit")
    rep = reddit.run(cfg, args.in_dir, args.out, truth_path=args.truth)
    report.write_plot("reddit_urls", "score_hist", rep.extra.pop("score_hist"))
    data = rep.write()
    print(f"reddit_urls: {data['kept']} URLs kept of {data['links_in']} posts, dropped {data['dropped']}, "
          f"errors {data['errors']}"
          + (f", truth P {data['truth']['precision']} R {data['truth']['recall']}" if "truth" in data else ""))


if __name__ == "__main__":
    storage.run_stage(main)
