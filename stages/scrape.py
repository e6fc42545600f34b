"""Stage `scrape`: fetch the WebText URLs, archive every exchange to WARC, extract the documents (GPT-2 sec. 2.2).

In:     --urls        urls.parquet from reddit_urls (url, post_id, score, subreddit, ...)
        --serve-site  sample mode: serve this site folder on 127.0.0.1 and resolve every *.test host to it
                      (omit it to fetch the live web with real DNS)
Out:    --out         document folder: docs/, removed/<reason>/ (no_text, too_short, wrong_language, boilerplate
                      rules), warc/webtext-00000.warc.gz (every response and every failure, sorted by URL),
                      fetch_log.parquet, _manifest.json;
        reports/scrape.json (URLs in, fetched, archived, docs out, drops and errors per reason, truth P/R)
        Resume state: data/resume/scrape/<fingerprint>/journal.warc.gz (a rerun does not refetch what it holds)
Params: scrape.* (timeout, size cap, robots, politeness, allowed networks, threads, retries with backoff);
        extract.* (trafilatura options, min_words, languages, boilerplate line ratios)
Usage:  python stages/scrape.py --urls data/interim/reddit_urls/urls.parquet --serve-site data/raw/sample/site \
            --out data/interim/webtext --truth data/raw/sample/truth.json
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
import logging

from pipeline.core import params
from pipeline.sources import crawler, extract, scrape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--urls", required=True, help="urls.parquet written by the reddit_urls stage")
    parser.add_argument("--serve-site", default=None, help="sample site folder to serve on loopback (sample mode)")
    parser.add_argument("--out", required=True, help="output document folder")
    parser.add_argument("--truth", default=None, help="sample truth.json: report precision/recall of drops")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    cfg = params.config(crawler.ScrapeConfig, "scrape")
    ecfg = params.config(extract.ExtractConfig, "extract")
    rep = scrape.run(cfg, ecfg, args.urls, args.out, site=args.serve_site, truth_path=args.truth)
    data = rep.write()
    score = data.get("truth") or {}
    print(f"scrape: {data['docs_out']} documents from {data['urls_in']} URLs ({data['fetched']} fetched now, "
          f"{data['from_journal']} from the journal); dropped {data['dropped']}; errors {data['errors']}"
          + (f"; truth P {score['precision']} R {score['recall']}" if score else ""))


if __name__ == "__main__":
    main()
