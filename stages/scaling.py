"""Stage `scaling`: GPT-4's predictable scaling on small GPTs: fit L(N) on the smaller sizes, predict the largest, train it.

In:     --tokens     token shards (data/processed/tokens); every size trains on the same tokens
Out:    --out        prediction.json, written after the smaller sizes and BEFORE the largest starts (UTC time inside);
        reports/scaling.json (fit a, alpha, c for L(N) and L(C), predicted, interval_68/95, measured, inside,
        order timestamps, per-size N, C, D, val loss, wall s);
        reports/plots/scaling/points.json (every size, the prediction with its intervals, the fitted curve;
        drawn with a log N axis by the custom template .dvc/plots/scaling_logx.json)
Params: scaling.* (widths, n_layer, head_dim, block_size, batch_size, steps, warmup_steps, lr, ...), seed
Usage:  python stages/scaling.py --tokens data/processed/tokens --out reports/scaling
        dvc exp run -S 'scaling.widths=[32,64,96,128,192,256]' -S scaling.steps=600   (a bigger matrix)
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

from pipeline.claims import scaling
from pipeline.core import cli, params, report, storage


def main() -> None:
    parser = cli.stage_parser(__doc__)
    parser.add_argument("--tokens", required=True, help="token shards folder (train_*.bin, val_*.bin, meta.json)")
    parser.add_argument("--out", required=True, help="folder for prediction.json")
    args = cli.parse_args(parser)
    cfg = params.config(scaling.ScalingConfig, "scaling")
    rep = report.StageReport("scaling")
    res = scaling.run(args.tokens, args.out, cfg, params.load("seed"), rep)
    rep.write()
    lo, hi = res["interval_95"]
    print(f"scaling: L(N) = {res['fit_L_N']['a']} * N^-{res['fit_L_N']['alpha']} + {res['fit_L_N']['c']}; "
          f"predicted {res['predicted']} (95% {lo}-{hi}), measured {res['measured']}: "
          f"{'inside' if res['inside'] else 'OUTSIDE'} the interval; {res['wall_s_total']} s of training")


if __name__ == "__main__":
    storage.run_stage(main)
