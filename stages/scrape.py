r"""Stage `scrape`: fetch the WebText URLs, archive every exchange to WARC, extract the documents (GPT-2 sec. 2.2).

In:     --urls          urls.parquet from reddit_urls (url, post_id, score, subreddit, ...)
        --webtext       the profile's WebText source folder (params inputs.webtext), read per --webtext-mode:
        --webtext-mode  site:  serve that folder on 127.0.0.1, resolve every *.test host to it, fetch --urls
                               (the embedded sample's web);
                        pages: a page mirror (pages.json: name -> {"url"}; html/<name>.html[.gz]) archived under
                               its URLs with no network (the real-mini profile's 181 real article pages);
                        live:  fetch --urls from the web with real DNS (folder unused)
Out:    --out         document folder: docs/, removed/<reason>/ (no_text, too_short, wrong_language, boilerplate
                      rules), warc/webtext-00000.warc.gz (every response and every failure, sorted by URL),
                      fetch_log.parquet, _manifest.json;
        reports/scrape.json (URLs in, fetched, archived, docs out, drops and errors per reason, truth P/R)
        Resume state: data/resume/scrape/<fingerprint>/journal.warc.gz (a rerun does not refetch what it holds)
Params: scrape.* (timeout, size cap, robots, politeness, allowed networks, threads, retries with backoff);
        extract.* (trafilatura options, min_words, languages, boilerplate line ratios)
Usage:  python stages/scrape.py --urls data/interim/reddit_urls/urls.parquet --webtext data/raw/sample/site \
            --webtext-mode site --out data/interim/webtext --truth data/raw/sample/truth.json
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

from pipeline.core import cli, params, storage
from pipeline.sources import crawler, extract, scrape


def main() -> None:
    parser = cli.stage_parser(__doc__)
    parser.add_argument("--urls", required=True, help="urls.parquet written by the reddit_urls stage (unused with pages)")
    parser.add_argument("--webtext", default=None, help="WebText source folder (a site to serve, or a page mirror)")
    parser.add_argument("--webtext-mode", choices=("site", "pages", "live"), default="live",
                        help="site: serve --webtext on loopback and fetch --urls; pages: archive the page mirror "
                             "--webtext; live: fetch --urls from the web (default)")
    parser.add_argument("--out", required=True, help="output document folder")
    parser.add_argument("--truth", default=None, help="sample truth.json: report precision/recall of drops")
    args = cli.parse_args(parser)

    cfg = params.config(crawler.ScrapeConfig, "scrape")
    ecfg = params.config(extract.ExtractConfig, "extract")
    if args.webtext_mode != "live" and not args.webtext:
        parser.error(f"--webtext-mode {args.webtext_mode} needs --webtext")
    site = args.webtext if args.webtext_mode == "site" else None
    pages = args.webtext if args.webtext_mode == "pages" else None
    rep = scrape.run(cfg, ecfg, args.urls, args.out, site=site, truth_path=args.truth or None, pages=pages)
    data = rep.write()
    score = data.get("truth") or {}
    print(f"scrape: {data['docs_out']} documents from {data['urls_in']} URLs ({data['fetched']} fetched now, "
          f"{data['from_journal']} from the journal); dropped {data['dropped']}; errors {data['errors']}"
          + (f"; truth P {score['precision']} R {score['recall']}" if score else ""))


if __name__ == "__main__":
    storage.run_stage(main)
