"""Stage `tokenize`: encode the mixture into uint16 token shards with a doc index and meta.json.

The script is stages/tokens.py, not tokenize.py: `python stages/X.py` puts stages/ first on sys.path,
so a stages/tokenize.py would shadow the stdlib `tokenize` module (imported by inspect, linecache,
dataclasses) and break every stage script.

In:  <in>/{train,val}/docs (mix documents), <tokenizer>/tokenizer.json
Out: <out>/{train,val}_<n:05d>.bin (headered shards, eot after every document), <out>/doc_index.parquet,
     <out>/meta.json (vocab, eot id, tokenizer sha256, tokens per split and source, unigram entropy);
     reports/tokenize.json (tokens per split/source, docs, tokens/s, unigram entropy)
Params: tokenize.dtype
Usage: python stages/tokens.py --in data/processed/mix --tokenizer models/tokenizer --out data/processed/tokens
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

from pipeline.core import cli, params, report, storage
from pipeline.lm import bpe, tokens


def main() -> None:
    ap = cli.stage_parser(__doc__)
    ap.add_argument("--in", dest="in_dir", required=True, help="mix folder holding train/docs and val/docs")
    ap.add_argument("--tokenizer", required=True, help="tokenizer folder written by the tokenizer stage")
    ap.add_argument("--out", required=True, help="tokens folder to write (shards, doc_index.parquet, meta.json)")
    args = cli.parse_args(ap)

    cfg = params.config(tokens.TokenizeConfig, "tokenize")
    rep = report.StageReport("tokenize")
    encoder = bpe.encoder(args.tokenizer, check_docs=pathlib.Path(args.in_dir) / "train")  # tiktoken if ids match
    meta = tokens.tokenize(args.in_dir, encoder, args.out, cfg, rep)
    rep.write()
    print(f"tokenize: {meta['splits']['train']['tokens']} train / {meta['splits']['val']['tokens']} val tokens "
          f"({meta['encoder']}), unigram entropy {meta['unigram_entropy_bits']:.3f} bits")


if __name__ == "__main__":
    storage.run_stage(main)
