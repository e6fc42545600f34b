r"""Stage `contamination`: n-gram overlap between training documents and eval sets (GPT-3 appendix C).

In:     --train   the mix folder (training documents under train/docs)
        --eval    folder of eval files (lambada_test.jsonl, wikitext-2-raw-v1_test.txt, hellaswag_val.jsonl, ...)
        --scores  evaluate's examples.jsonl (per-example scores, joined by task and index)
        --truth   the sample's truth.json (planted leaks), optional
Out:    --out     report.html (self-contained, overlaps <mark>ed), report.json, report.md;
        reports/contamination.json (per task dirty fraction, all vs clean scores, planted-leak match)
        reports/plots/contamination/{dirty_fraction,scores}.json (dvc plots)
Params: contamination.ngram, min_ngram, max_doc_frequency (GPT-3 rule), index, index_shard_bits (out-of-core
        index), decontaminate (+ _margin, _min_piece, _max_pieces: GPT-3 appendix C counts, off by default)
Usage:  python stages/contamination.py --train data/processed/mix --eval data/raw/sample/eval \
            --scores reports/evaluate/examples.jsonl --truth data/raw/sample/truth.json --out reports/contamination
        Decontaminated copy of the mix (GPT-3 appendix C): python -m pipeline.evaluation.contamination decontaminate \
            --train data/processed/mix --eval data/raw/sample/eval --out data/processed/mix_decontaminated
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

from pipeline.core import cli, params, report, storage, truth
from pipeline.evaluation import contamination


def main() -> None:
    parser = cli.stage_parser(__doc__)
    parser.add_argument("--train", required=True, help="mix output folder (train/docs inside)")
    parser.add_argument("--eval", dest="eval_dir", required=True, help="folder of eval set files")
    parser.add_argument("--scores", default=None, help="evaluate's per-example scores (examples.jsonl)")
    parser.add_argument("--truth", default=None, help="sample truth.json: compare dirty examples with planted leaks")
    parser.add_argument("--out", required=True, help="folder for report.html, report.json, report.md")
    args = cli.parse_args(parser)
    cfg = params.config(contamination.ContaminationConfig, "contamination")
    rep = report.StageReport("contamination")
    result = contamination.run(cfg, args.train, args.eval_dir, args.out, args.scores, truth.load(args.truth), rep)
    rep.write()
    for name, t in result["tasks"].items():
        print(f"contamination: {name}: {t['dirty']}/{t['total']} dirty ({t['n']}-grams), clean-all {t['clean_minus_all']}")
    if result.get("leaks"):
        lk = result["leaks"]
        print(f"contamination: leaks planted {lk['planted']}, reached {lk['reached_training']}, "
              f"found {lk['found']}, exact match {lk['exact_match']}")


if __name__ == "__main__":
    storage.run_stage(main)
