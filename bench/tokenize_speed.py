"""Benchmark: the tokenize stage's encoder vs tokenizers and tiktoken, same vocabulary, one run.

Encodes the same texts with:
- tokenizers `encode` (loop) and `encode_batch` (its Rust thread pool),
- a tiktoken `Encoding` built from the same trained merges (pipeline.lm.bpe.tiktoken_encoding), one
  text at a time on one thread (ANCHORS.md's per-core reference) and batched,
- ours: `pipeline.lm.bpe.encoder(...)`, exactly what the tokenize stage calls (it picks tiktoken after
  checking its ids against tokenizers'), fed batches as pipeline.lm.tokens does.
Ids of every encoder are checked identical to tokenizers' on every text. Throughput is UTF-8 MB/s.

Usage: python bench/tokenize_speed.py [--tokenizer models/tokenizer] [--texts ../shared/data/books]
                                      [--mb 8] [--threads 2]
Without a trained tokenizer it trains one (vocab 8,192) on the texts first. Writes bench/out/tokenize_speed.json.
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
import json
import tempfile
import time
from pathlib import Path

from pipeline.lm import bpe

ROOT = Path(__file__).resolve().parents[1]


def read_texts(folder: Path, mb: float) -> list[str]:
    """Plain-text files, cut into ~8 KB documents (the size of a web page), up to `mb` MB."""
    texts, size = [], 0
    for path in sorted(folder.rglob("*.txt")):
        text = path.read_text(encoding="utf-8", errors="replace")
        for i in range(0, len(text), 8000):
            texts.append(text[i:i + 8000])
            size += len(texts[-1].encode())
            if size >= mb * 1e6:
                return texts
    return texts


def timed(fn, texts):
    t0 = time.perf_counter()
    ids = fn(texts)
    return ids, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", default=str(ROOT / "models/tokenizer"), help="trained tokenizer folder")
    ap.add_argument("--texts", default=str(ROOT.parent / "shared/data/books"), help="folder of .txt files")
    ap.add_argument("--mb", type=float, default=8.0, help="MB of text to encode")
    ap.add_argument("--threads", type=int, default=2, help="threads for the batch encoders")
    args = ap.parse_args()
    import os
    os.environ.setdefault("RAYON_NUM_THREADS", str(args.threads))  # tokenizers' pool size
    texts = [t for t in read_texts(Path(args.texts), args.mb) if bpe.EOT not in t]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    tok_dir = Path(args.tokenizer)
    if not (tok_dir / bpe.TOKENIZER_JSON).is_file():
        tok_dir = Path(tempfile.mkdtemp()) / "tokenizer"
        print(f"no tokenizer at {args.tokenizer}; training one (vocab 8192) on the texts")
        bpe.save(bpe.train(iter(texts), bpe.TokenizerConfig(vocab_size=8192)), tok_dir)
    tok = bpe.load(tok_dir)
    enc = bpe.tiktoken_encoding(tok)
    ours = bpe.encoder(tok_dir)  # the stage's encoder (its id check runs on --check-docs in the stage)

    def batched(fn, size=512):  # pipeline.lm.tokens feeds the encoder 512 documents at a time
        return lambda ts: [ids for i in range(0, len(ts), size) for ids in fn(ts[i:i + size])]

    runs = {
        "tokenizers encode (loop)": lambda ts: [tok.encode(t, add_special_tokens=False).ids for t in ts],
        f"tokenizers encode_batch ({args.threads} thr)": lambda ts: bpe.hf_encode_batch(tok, ts),
        "tiktoken encode_ordinary (loop, 1 thr)": lambda ts: [enc.encode_ordinary(t) for t in ts],
        f"tiktoken encode_ordinary_batch ({args.threads} thr)":
            lambda ts: enc.encode_ordinary_batch(ts, num_threads=args.threads),
        f"ours: bpe.encoder -> {ours.name}": batched(ours.encode_batch),
    }
    reference, rows = None, {}
    for name, fn in runs.items():
        ids, s = timed(fn, texts)
        if reference is None:
            reference = ids
        same = ids == reference
        rows[name] = {"seconds": round(s, 3), "mb_per_s": round(mb / s, 2), "ids_identical": same}
        if not same:
            raise SystemExit(f"{name}: ids differ from tokenizers'")
    base = rows["tiktoken encode_ordinary (loop, 1 thr)"]["mb_per_s"]
    print(f"BPE encoding, vocab {tok.get_vocab_size():,}, {len(texts):,} texts, {mb:.1f} MB")
    print(f"{'encoder':44} {'MB/s':>7} {'vs tiktoken 1 thr':>18} {'ids ==':>7}")
    for name, r in rows.items():
        r["ratio_vs_tiktoken_1thr"] = round(r["mb_per_s"] / base, 2)
        print(f"{name:44} {r['mb_per_s']:7.2f} {r['ratio_vs_tiktoken_1thr']:17.2f}x {str(r['ids_identical']):>7}")
    out = ROOT / "bench" / "out" / "tokenize_speed.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"vocab_size": tok.get_vocab_size(), "mb": round(mb, 2), "threads": args.threads,
                               "results": rows}, indent=2))


if __name__ == "__main__":
    main()
