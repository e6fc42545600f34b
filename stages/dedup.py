r"""dedup stage: exact + MinHash LSH fuzzy dedup within and across sources (GPT-3 sec. 2.2).

In:  document folders per source (--in books=DIR webtext=DIR cc=DIR), the sample's truth.json.
Out: <out>/<source>/docs (kept), <out>/<source>/removed/{exact_duplicate,duplicate},
     <out>/clusters.parquet, <out>/_manifest.json; reports/dedup.json.
Params: dedup.{ngram, num_perm, threshold, priority}, seed (MinHash permutations); executor.* (local/ray/slurm).
Plots: reports/plots/dedup/sweep.json (threshold vs precision/recall on the sample's planted duplicates).
Usage: python stages/dedup.py --in books=data/interim/books webtext=data/interim/webtext \
           cc=data/interim/cc_filtered --out data/interim/dedup --truth data/raw/sample/truth.json
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse

from pipeline.core import cli, executor, params, storage
from pipeline.curate import dedup


def source_folder(arg: str) -> tuple[str, str]:
    source, sep, folder = arg.partition("=")
    if not sep or not source or not folder:
        raise argparse.ArgumentTypeError(f"expected SOURCE=DIR, got {arg!r}")
    return source, folder


def main() -> None:
    parser = cli.stage_parser(__doc__)
    parser.add_argument("--in", dest="inputs", nargs="+", type=source_folder, required=True,
                        help="input document folders as SOURCE=DIR (source names as in dedup.priority)")
    parser.add_argument("--out", required=True, help="output folder (one document folder per source)")
    parser.add_argument("--truth", default=None, help="truth.json of the embedded sample (precision/recall)")
    args = cli.parse_args(parser)
    cfg = params.config(dedup.DedupConfig, "dedup")
    seed = params.load("seed")
    ecfg = params.config(executor.ExecutorConfig, "executor")  # output-neutral: not declared in dvc.yaml
    rep = dedup.run(cfg, seed, dict(args.inputs), args.out, truth_path=args.truth, ecfg=ecfg)
    data = rep.write()
    print(f"dedup: {data['docs_in']} docs in, {data['docs_out']} out, dropped {data['dropped']}, "
          f"cross-source {data['cross_source_removals']}")


if __name__ == "__main__":
    storage.run_stage(main)
