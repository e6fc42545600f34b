r"""Stage `quality_train`: GPT-3's quality classifier (fastText), curated text vs raw crawl, cross-fitted.

In:     --positives  document folders of curated text (WebText, books; books are cut into 100-300-word chunks)
        --negatives  document folders of raw crawl (the cc stage's output, unfiltered by quality)
Out:    --out        folder with model.bin (full fastText model, for pages it never saw), fold_<k>.bin (k < folds,
                     each trained without the documents of fold k), train_ids.txt (sorted ids of every training
                     document) and model.json (params, labels, folds, counts, out-of-fold metrics);
        reports/quality_train.json (out-of-fold precision/recall/F1/ROC AUC over all training examples, calibration);
        reports/plots/quality_train/calibration.json
Params: seed, quality.{dim, epoch, word_ngrams, lr, min_count, bucket, folds}
Usage:  python stages/quality_train.py --positives data/interim/webtext data/interim/books \
            --negatives data/interim/cc --out models/quality
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

from pipeline.core import cli, params, storage
from pipeline.curate import quality


def main() -> None:
    parser = cli.stage_parser(__doc__)
    parser.add_argument("--positives", nargs="+", required=True, help="document folders of high-quality text")
    parser.add_argument("--negatives", nargs="+", required=True, help="document folders of raw crawl text")
    parser.add_argument("--out", required=True, help="output folder for model.bin, fold_<k>.bin, train_ids.txt and model.json")
    args = cli.parse_args(parser)
    cfg = params.config(quality.QualityConfig, "quality")
    rep = quality.run_train(cfg, params.load("seed"), args.positives, args.negatives, args.out)
    rep.write()


if __name__ == "__main__":
    storage.run_stage(main)
