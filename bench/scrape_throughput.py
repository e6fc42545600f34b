"""Scrape throughput on a loopback site, and proof that per-domain politeness holds under load.

A generated site of --pages article pages over --hosts virtual hosts (sitesrv on 127.0.0.1, every *.test host)
is fetched three ways in one run:
  reference  a bare concurrent client: urllib3 (kept-alive connections), --concurrency threads, no robots.txt,
             no politeness, no WARC;
  ours       pipeline.sources.scrape.fetch_all with per_domain_delay_s=0 (robots.txt, private-address guard, one request
             in flight per host, every exchange appended to a WARC journal);
  ours+delay the same with per_domain_delay_s=--delay.
The server stamps each request's arrival per host (time.monotonic), so politeness is checked from the server's
side: the smallest gap between two requests to one host (robots.txt included) must be >= per_domain_delay_s.
(The fetcher starts a host's next request only `delay` after the previous one ended, so arrivals are spaced by
at least the delay.) With a delay, hosts / delay pages/s is the ceiling politeness allows.

Usage: .venv/bin/python bench/scrape_throughput.py [--pages 3000] [--hosts 30] [--delay 0.05] [--concurrency 8]
Writes bench/out/scrape_throughput.json and prints a table.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import urllib3  # noqa: E402

from pipeline.sample import loopback_site as sitesrv  # noqa: E402
from pipeline.sources import crawler, scrape, webarchive  # noqa: E402

WORDS = ("the council met on tuesday to weigh a plan for the harbour while farmers asked about roads rain prices "
         "and the new school that opened near the river after a long and cold winter").split()


def make_site(root: Path, pages: int, hosts: int) -> list[str]:
    """pages/hosts article pages per host (about 3 KB each) and a robots.txt per host; returns the URLs."""
    urls = []
    for i in range(pages):
        host = f"h{i % hosts:03d}.bench.test"
        (root / host).mkdir(parents=True, exist_ok=True)
        paras = "".join(f"<p>{' '.join(WORDS[(i + j * 7 + k) % len(WORDS)] for k in range(60))}.</p>" for j in range(5))
        (root / host / f"p{i}.html").write_text(
            f"<html><head><title>Page {i}</title></head><body><nav>Home</nav><article><h1>Page {i}</h1>{paras}"
            f"</article></body></html>")
        urls.append(f"http://{host}/p{i}.html")
    for h in range(min(hosts, pages)):
        (root / f"h{h:03d}.bench.test" / "robots.txt").write_text("User-agent: *\nDisallow: /private/\n")
    return urls


def reference(urls: list[str], port: int, concurrency: int) -> tuple[float, int]:
    """A bare concurrent fetch of every URL: seconds, pages with status 200."""
    pool = urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=concurrency, retries=False)

    def one(url: str) -> int:
        host, _, path = url[len("http://"):].partition("/")
        return pool.request("GET", "/" + path, headers={"Host": host}).status

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as ex:
        ok = sum(status == 200 for status in ex.map(one, urls))
    return time.perf_counter() - start, ok


def ours(urls: list[str], server: sitesrv.SiteServer, cfg: crawler.ScrapeConfig, work: Path) -> tuple[float, dict]:
    rows = [{"url": u, "post_id": str(i), "score": 3, "subreddit": "bench"} for i, u in enumerate(urls)]
    journal = webarchive.Journal(work / "journal.warc.gz")
    with crawler.Fetcher(cfg, host_map=server.host_map, clock=server.clock) as fetcher:
        start = time.perf_counter()
        verdicts = scrape.fetch_all(rows, fetcher, journal)
        seconds = time.perf_counter() - start
    return seconds, {"verdicts": dict(verdicts), "warc_mb": round(journal.path.stat().st_size / 1e6, 2)}


def politeness(server: sitesrv.SiteServer) -> dict:
    """Smallest gap between two arrivals at one host, per the server's own clock, and the requests seen."""
    gaps = [gap for host in server.arrivals for gap in server.gaps(host)]
    return {"min_gap_s": round(min(gaps), 4) if gaps else None, "requests": sum(map(len, server.arrivals.values()))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=3000, help="pages to generate and fetch")
    ap.add_argument("--hosts", type=int, default=30, help="virtual hosts the pages are spread over")
    ap.add_argument("--delay", type=float, default=0.05, help="per_domain_delay_s of the politeness run")
    ap.add_argument("--concurrency", type=int, default=8, help="fetch threads (scrape.concurrency)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "scrape_throughput.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    base = dataclasses.replace(crawler.ScrapeConfig(), concurrency=args.concurrency, max_retries=0)
    results = {}
    with tempfile.TemporaryDirectory(prefix="scrape-bench-") as tmp:
        tmp = Path(tmp)
        urls = make_site(tmp / "site", args.pages, args.hosts)
        with sitesrv.serve(tmp / "site") as server:
            seconds, ok = reference(urls, server.port, args.concurrency)
            results["reference"] = {"seconds": round(seconds, 2), "ok": ok, **politeness(server)}
        for name, delay in (("ours", 0.0), ("ours+delay", args.delay)):
            with sitesrv.serve(tmp / "site") as server:
                (tmp / name).mkdir()
                seconds, extra = ours(urls, server, dataclasses.replace(base, per_domain_delay_s=delay), tmp / name)
                results[name] = {"seconds": round(seconds, 2), "ok": extra["verdicts"].get("ok", 0), "delay_s": delay,
                                 **extra, **politeness(server)}
    for r in results.values():
        r["pages_per_s"] = round(len(urls) / r["seconds"], 1)
    ref = results["reference"]["pages_per_s"]
    polite = results["ours+delay"]
    polite["ceiling_pages_per_s"] = round(args.hosts / args.delay, 1) if args.delay else None
    polite["politeness_held"] = bool(polite["min_gap_s"] is not None and polite["min_gap_s"] >= args.delay)

    print(f"{len(urls)} pages over {args.hosts} hosts on 127.0.0.1, {args.concurrency} threads")
    print(f"{'run':12} {'pages/s':>8} {'x ref':>6} {'ok':>6} {'requests':>8} {'min gap per host (s)':>21}")
    for name, r in results.items():
        print(f"{name:12} {r['pages_per_s']:8.1f} {r['pages_per_s'] / ref:6.2f} {r['ok']:6d} {r['requests']:8d} "
              f"{r['min_gap_s']!s:>21}")
    print(f"politeness run: per_domain_delay_s={args.delay}, ceiling {polite['ceiling_pages_per_s']} pages/s "
          f"({args.hosts} hosts / delay); held: {polite['politeness_held']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"pages": len(urls), "hosts": args.hosts, "concurrency": args.concurrency,
                                    "runs": results}, indent=2) + "\n")
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    if not polite["politeness_held"]:
        sys.exit("politeness did not hold")


if __name__ == "__main__":
    main()
