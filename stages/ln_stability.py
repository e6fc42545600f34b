"""Stage `ln_stability`: one cell of the Pre-LN vs Post-LN stability grid (GPT-2 sec. 2.3) on the sample's tokens.

In:     --tokens     token shards folder (data/processed/tokens)
Out:    reports/ln_stability.json (diverged or not, by which rule, initial/min/final loss, val loss, wall time);
        reports/plots/ln_stability/loss.json (train loss, lr and grad norm per step)
Params: ln_stability.* (ln, n_layer, lr, warmup_steps, steps, ...), seed
Usage:  python stages/ln_stability.py --tokens data/processed/tokens
        The grid (16 DVC experiments): python -m pipeline.claims.grid ln_stability
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import os

import torch

from pipeline.claims import ln_stability
from pipeline.core import cli, params, report, storage


def main() -> None:
    parser = cli.stage_parser(__doc__)
    parser.add_argument("--tokens", required=True, help="token shards folder (train_*.bin, val_*.bin, meta.json)")
    args = cli.parse_args(parser)
    torch.set_num_threads(int(os.environ.get("GPT_REPRO_THREADS", "2")))
    cfg = params.config(ln_stability.LnStabilityConfig, "ln_stability")
    rep = report.StageReport("ln_stability")
    result, rows = ln_stability.run(args.tokens, cfg, params.load("seed"), rep)
    rep.extra.update(result)
    report.write_plot("ln_stability", "loss", rows)
    rep.write()
    print(f"ln_stability: {cfg.ln}-LN, {cfg.n_layer} layers, lr {cfg.lr}, warm-up {cfg.warmup_steps}: "
          f"{result['verdict']}, rule: {result['reason']} (loss {result['initial_loss']} -> min {result['min_loss']} -> end {result['final_loss']}, "
          f"{result['steps_run']} steps, {result['seconds']} s)")


if __name__ == "__main__":
    storage.run_stage(main)
