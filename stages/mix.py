"""mix stage: the GPT-3 style training mixture (source weights) plus a held-out validation split.

In:  data/interim/dedup (one document folder per source).
Out: <out>/train/docs (documents repeated per source weight, metadata split=train, epoch=k),
     <out>/val/docs (split=val), <out>/_manifest.json; reports/mix.json.
Params: mix.{weights, val_fraction}, seed.
Usage: python stages/mix.py --in data/interim/dedup --out data/processed/mix
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

from pipeline.core import cli, params, storage
from pipeline.curate import mix


def main() -> None:
    parser = cli.stage_parser(__doc__)
    parser.add_argument("--in", dest="in_dir", required=True, help="dedup output folder (one folder per source)")
    parser.add_argument("--out", required=True, help="output folder (train/ and val/ document folders)")
    args = cli.parse_args(parser)
    cfg = params.config(mix.MixConfig, "mix")
    rep = mix.run(cfg, params.load("seed"), args.in_dir, args.out)
    data = rep.write()
    shares = {s: (v["target_share"], v["achieved_share"]) for s, v in data["per_source"].items()}
    print(f"mix: {data['train_docs']} train docs ({data['train_chars']} chars), {data['val_docs']} val docs; "
          f"(target, achieved) shares {shares}")


if __name__ == "__main__":
    storage.run_stage(main)
