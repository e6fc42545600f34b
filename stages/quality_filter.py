r"""Stage `quality_filter`: score crawl documents and keep each when pareto(alpha) > 1 - score (GPT-3 app. A).

In:     --in     the cc stage's document folder; --model  the quality_train fastText model.bin: a page listed in
                 train_ids.txt beside it is scored by fold_<its fold>.bin (a model that never saw it), any
                 other page by model.bin; metadata quality_score and quality_model ("full" or "fold_<k>")
Out:    --out    document folder: docs/ (kept), removed/low_quality/, scores.parquet (id, url, score, draw, kept, model);
        reports/quality_filter.json (expected vs observed kept fraction, pages per scoring model; with --truth:
        P/R of drops, and kept fraction and mean score per truth class, good vs junk);
        reports/plots/quality_filter/retention.json (kept fraction per score bucket)
Params: seed, quality.alpha (only: changing the classifier's knobs retrains via quality_train instead)
Usage:  python stages/quality_filter.py --in data/interim/cc --model models/quality/model.bin \
            --out data/interim/cc_filtered --truth data/raw/sample/truth.json
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

from pipeline.core import cli, executor, params, storage
from pipeline.curate import quality_filter


def main() -> None:
    parser = cli.stage_parser(__doc__)
    parser.add_argument("--in", dest="in_dir", required=True, help="crawl document folder to score")
    parser.add_argument("--model", required=True, help="fastText model.bin from quality_train (fold models and train_ids.txt beside it)")
    parser.add_argument("--out", required=True, help="output document folder")
    parser.add_argument("--truth", default=None, help="sample truth.json: report precision/recall of drops")
    args = cli.parse_args(parser)
    # only quality.alpha is a declared param of this stage
    fcfg = params.build(quality_filter.FilterConfig, {"alpha": params.load("quality")["alpha"]}, prefix="quality.")
    exec_cfg = params.config(executor.ExecutorConfig, "executor")  # output-neutral: not declared in dvc.yaml
    rep = quality_filter.run(fcfg, params.load("seed"), args.in_dir, args.model, args.out, truth_path=args.truth,
                             exec_cfg=exec_cfg)
    rep.write()


if __name__ == "__main__":
    storage.run_stage(main)
