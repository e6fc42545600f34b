"""Stage `sparse_vs_dense`: GPT-3's alternating dense / locally banded attention vs dense, same tokens and steps.

In:     --tokens     token shards folder (data/processed/tokens)
Out:    reports/sparse_vs_dense.json (val loss, tokens/s and attention FLOPs of each variant, sparse/dense ratios);
        reports/sparse_vs_dense.md (the same as one table);
        reports/plots/sparse_vs_dense/loss_dense.json, loss_alternating_sparse.json (train loss per step)
Params: sparse_vs_dense.* (sizes, block_size, sparse_window, steps, ...), seed
Usage:  python stages/sparse_vs_dense.py --tokens data/processed/tokens --md reports/sparse_vs_dense.md
        GPT_REPRO_THREADS sets torch's CPU threads; on a machine with CUDA both variants run on the GPU.
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import os

import torch

from pipeline.claims import sparse_dense
from pipeline.core import cli, io, params, report, storage


def main() -> None:
    parser = cli.stage_parser(__doc__)
    parser.add_argument("--tokens", required=True, help="token shards folder (train_*.bin, val_*.bin, meta.json)")
    parser.add_argument("--md", required=True, help="markdown table to write")
    args = cli.parse_args(parser)
    torch.set_num_threads(int(os.environ.get("GPT_REPRO_THREADS", "2")))
    cfg = params.config(sparse_dense.SparseDenseConfig, "sparse_vs_dense")
    rep = report.StageReport("sparse_vs_dense")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    result, curves = sparse_dense.run(args.tokens, cfg, params.load("seed"), rep, device=device)
    rep.extra.update(result)
    for variant, rows in curves.items():
        report.write_plot("sparse_vs_dense", f"loss_{variant}", rows)
    table = sparse_dense.markdown(result)
    with io.atomic_path(args.md) as tmp:
        tmp.write_text(table, encoding="utf-8")
    rep.write()
    print(table)


if __name__ == "__main__":
    storage.run_stage(main)
