"""Stage `tokenizer`: train GPT-2's byte-level BPE on the mixture's training documents.

In:  <in>/train/docs (the mix stage's training documents; val is never trained on)
Out: <out>/tokenizer.json, <out>/tokenizer_meta.json (vocab_size, eot_id, sha256), <out>/_manifest.json;
     reports/tokenizer.json (vocab size, training chars and docs, seconds, bytes per token on val)
Params: tokenizer.vocab_size, tokenizer.min_frequency
Usage: python stages/tokenizer.py --in data/processed/mix --out models/tokenizer
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

from pipeline.core import cli, params, report, storage
from pipeline.lm import bpe


def main() -> None:
    ap = cli.stage_parser(__doc__)
    ap.add_argument("--in", dest="in_dir", required=True, help="mix folder holding train/docs and val/docs")
    ap.add_argument("--out", required=True, help="tokenizer folder to write (tokenizer.json + tokenizer_meta.json)")
    args = cli.parse_args(ap)

    cfg = params.config(bpe.TokenizerConfig, "tokenizer")
    rep = report.StageReport("tokenizer")
    meta = bpe.run(args.in_dir, args.out, cfg, rep)
    rep.write()
    print(f"tokenizer: vocab {meta['vocab_size']}, eot id {meta['eot_id']}, sha256 {meta['sha256'][:12]}; "
          f"{rep.extra['val_bytes_per_token']} bytes/token on val")


if __name__ == "__main__":
    storage.run_stage(main)
