r"""Stage `summary`: one page on the whole run, from the stages' own reports (no data is reread).

In:     --reports  folder of reports/<stage>.json (every stage's StageReport; missing ones show as "not run")
        --live     the train stage's dvclive folder (plots/metrics/train_loss.tsv, val_loss.tsv)
Out:    --html     self-contained page: data funnel per source with drops by reason, mixture shares, loss curves
                   (inline SVG), evals beside chance and paper figures, contamination headline + link to its audit
        --md       the same as Markdown tables
        reports/summary.json (reports read, sections present or not run)
Params: none
Usage:  python stages/summary.py --reports reports --live reports/train --html reports/summary.html \
            --md reports/summary.md
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

from pipeline.core import cli, report, storage
from pipeline.evaluation import summary


def main(argv: list[str] | None = None) -> dict:
    parser = cli.stage_parser(__doc__)
    parser.add_argument("--reports", required=True, help="folder of <stage>.json reports")
    parser.add_argument("--live", default=None, help="train stage's dvclive folder (loss curves)")
    parser.add_argument("--html", required=True, help="output page (HTML)")
    parser.add_argument("--md", required=True, help="output page (Markdown)")
    args = cli.parse_args(parser, argv)
    rep = report.StageReport("summary")
    summary.run(args.reports, args.live, args.html, args.md, report=rep)
    data = rep.write()
    print(f"summary: {args.html}, {args.md} from {len(data['reports_read'])} reports; sections {data['sections']}")
    return data


if __name__ == "__main__":
    storage.run_stage(main)
