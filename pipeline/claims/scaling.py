"""GPT-4's predictable scaling, small: fit L(N) on small GPTs, predict the largest before it trains, then train it.

The claim (GPT-4 technical report, OpenAI 2023, sec. 3.1): the final loss of a large run is predictable from
runs with far less compute, with a power law plus an irreducible term, L = a * x^-alpha + c (scaling_fit.py).

The matrix: GPTs of `scaling.n_layer` layers whose width runs over `scaling.widths` (heads of `head_dim`),
so the non-embedding parameter count N (Kaplan et al. 2020: embeddings left out; here the token table, tied
to the head, and the position table) grows ~ width^2. Every size trains on the same token shards, draws the
same batches (one seed), sees the same D tokens and has its own full warmup + cosine schedule over them:
matched schedules at fixed data, the setting of Kaplan's L(N) (at fixed D the data term B / D^beta is a
constant and folds into c). C = 6 N D (Kaplan sec. 2.1). Training is pipeline.lm.train.train, unchanged.

Order (the point of the exercise): the smaller sizes train first; L(N) and L(C) are fitted on them; the
prediction for the largest, with its bootstrap interval, is written to `<out>/prediction.json` with a UTC
timestamp; only then does the largest start. The report records both times and checks the order.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch

from pipeline.claims import scaling_fit
from pipeline.core import io
from pipeline.core.report import StageReport, write_plot
from pipeline.lm.batches import data_meta, load_tokens
from pipeline.lm.model import GPT, ModelConfig, from_params
from pipeline.lm.train import TrainConfig, train

log = logging.getLogger(__name__)
PREDICTION = "prediction.json"
MIN_FIT = 4  # sizes in the fit: 3 parameters + 1 degree of freedom, or the residual spread (the interval) is 0


@dataclass(frozen=True)
class ScalingConfig:
    """params.yaml `scaling`."""

    widths: tuple[int, ...] = (16, 32, 48, 64, 96, 128)  # n_embd per size; the widest is the one predicted
    n_layer: int = 2
    head_dim: int = 16  # n_head = width / head_dim
    block_size: int = 64
    batch_size: int = 16
    steps: int = 300  # the same for every size: same tokens seen
    warmup_steps: int = 30
    lr: float = 0.003  # one lr for every size, train.lr
    min_lr_ratio: float = 0.1
    eval_batches: int = 8  # fixed val windows, the same for every size
    bootstrap_draws: int = 400


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def model_config(cfg: ScalingConfig, width: int) -> ModelConfig:
    if width % cfg.head_dim:
        raise ValueError(f"scaling.widths: {width} is not a multiple of head_dim {cfg.head_dim}")
    return ModelConfig(preset="tiny", n_layer=cfg.n_layer, n_head=width // cfg.head_dim, n_embd=width,
                       block_size=cfg.block_size, dropout=0.0)


def train_config(cfg: ScalingConfig) -> TrainConfig:
    # eval_interval = steps: one evaluation at the end and no mid-run resume files (a size takes seconds)
    return TrainConfig(max_steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, min_lr_ratio=cfg.min_lr_ratio,
                       warmup_steps=cfg.warmup_steps, eval_interval=cfg.steps, eval_batches=cfg.eval_batches)


def count_params(mcfg: ModelConfig, vocab_size: int) -> tuple[int, int, int]:
    """(non-embedding N, all parameters, training FLOPs per token) of one size, built on the meta device."""
    with torch.device("meta"):
        model = GPT(from_params(mcfg, vocab_size))
    n = sum(p.numel() for name, p in model.named_parameters() if not name.startswith(("transformer.wte",
                                                                                        "transformer.wpe")))
    return n, model.num_params(), model.flops_per_token(mcfg.block_size)


def train_size(data_dir: Path, mcfg: ModelConfig, tcfg: TrainConfig, seed: int) -> dict:
    """Train one size with pipeline.lm.train into a scratch folder; its losses and throughput."""
    with tempfile.TemporaryDirectory(prefix="scaling_") as tmp:
        rep = train(data_dir, Path(tmp) / "ckpt", Path(tmp) / "live", mcfg, tcfg, seed, progress=False)
    return {k: rep.extra[k] for k in ("final_val_loss", "final_train_loss", "tokens_seen", "tokens_per_s")}


def run(data_dir: str | Path, out_dir: str | Path, cfg: ScalingConfig, seed: int, report: StageReport,
        train_fn: Callable[..., dict] = train_size) -> dict:
    """Train every size, fitting and predicting the largest before it trains; fill `report`, write plots."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    widths = sorted(set(cfg.widths))
    if len(widths) < MIN_FIT + 1:
        raise ValueError(f"scaling.widths needs >= {MIN_FIT + 1} sizes ({MIN_FIT} to fit a 3-parameter law with a "
                         f"residual to size the interval, 1 to predict); got {widths}")
    vocab = data_meta(data_dir, load_tokens(data_dir, "train"))["vocab_size"]
    tcfg = train_config(cfg)
    rows = []
    for width in widths:
        mcfg = model_config(cfg, width)
        n, n_total, flops = count_params(mcfg, vocab)
        rows.append({"name": f"d{width}", "n_embd": width, "n_layer": cfg.n_layer, "n_head": mcfg.n_head,
                     "N": n, "params_total": n_total, "flops_per_token": flops, "mcfg": mcfg})
    rows.sort(key=lambda r: r["N"])
    small, largest = rows[:-1], rows[-1]

    for row in small:
        _train_row(row, data_dir, tcfg, seed, train_fn)
    fit_rows = [r for r in small if r["final_val_loss"] is not None]
    for r in small:
        if r not in fit_rows:  # a diverged size: counted and left out of the fit, the stage goes on
            log.error("size %s ended with a non-finite val loss; left out of the fit", r["name"])
            report.error("nonfinite_val_loss")
    if len(fit_rows) < MIN_FIT:
        raise ValueError(f"only {len(fit_rows)} sizes with a finite loss; the fit and its interval need {MIN_FIT}")
    prediction = predict_largest(fit_rows, largest, cfg, seed)
    io.write_json(out_dir / PREDICTION, prediction)  # on disk before the largest starts: see `order` below
    log.info("predicted %s (N=%d): %.4f, 95%% [%.4f, %.4f]", largest["name"], largest["N"],
             prediction["L_N"]["predicted"], *prediction["L_N"]["interval_95"])

    _train_row(largest, data_dir, tcfg, seed, train_fn)
    written = io.read_json(out_dir / PREDICTION)  # what was on disk, not what is in memory
    measured = largest["final_val_loss"]
    if measured is None:  # the largest diverged: no measurement to compare, and the claim is not met
        log.error("the largest size %s ended with a non-finite val loss", largest["name"])
        report.error("nonfinite_val_loss")
    verdict = _verdict(written, measured)
    order = {"prediction_written_at": written["written_at"], "largest_started_at": largest["started_at"],
             "largest_finished_at": largest["finished_at"],
             "prediction_before_largest": written["written_at"] < largest["started_at"]}
    for r in rows:
        r["role"] = "predicted" if r is largest else ("fit" if r in fit_rows else "excluded")
    table = [{k: v for k, v in r.items() if k != "mcfg"} for r in rows]
    report.docs_in, report.docs_out = len(rows), len(fit_rows) + 1
    report.extra.update({
        "config": dataclasses.asdict(cfg) | {"widths": list(cfg.widths)},
        "tokens_per_size": largest["tokens_seen"],
        "fit_L_N": written["L_N"]["fit"], "fit_L_C": written["L_C"]["fit"],
        "predicted": written["L_N"]["predicted"], "interval_68": written["L_N"]["interval_68"],
        "interval_95": written["L_N"]["interval_95"], "predicted_L_C": written["L_C"]["predicted"],
        "measured": measured, **verdict, "order": order, "sizes": table,
        "wall_s_total": round(sum(r["wall_s"] for r in rows), 2),
        "cpu_s_total": round(sum(r["cpu_s"] for r in rows), 2),
    })
    _plots(rows, written)
    return report.extra


def _train_row(row: dict, data_dir: Path, tcfg: TrainConfig, seed: int, train_fn: Callable[..., dict]) -> None:
    row["started_at"] = utc_now()
    t0, c0 = time.perf_counter(), time.process_time()
    res = train_fn(data_dir, row["mcfg"], tcfg, seed)
    row["wall_s"] = round(time.perf_counter() - t0, 2)
    row["cpu_s"] = round(time.process_time() - c0, 2)  # all threads: steadier than wall time on a shared machine
    row["finished_at"] = utc_now()
    loss = float(res["final_val_loss"])
    row.update({"final_val_loss": round(loss, 6) if math.isfinite(loss) else None,  # JSON has no NaN
                "final_train_loss": res.get("final_train_loss"), "tokens_seen": int(res["tokens_seen"]),
                "tokens_per_s": res.get("tokens_per_s")})
    row["D"] = row["tokens_seen"]
    row["C"] = 6 * row["N"] * row["D"]  # Kaplan sec. 2.1
    row["C_with_attention"] = row["flops_per_token"] * row["D"]
    log.info("%s: N=%d, val loss %.4f, %.1f s", row["name"], row["N"], loss, row["wall_s"])


def predict_largest(fit_rows: list[dict], largest: dict, cfg: ScalingConfig, seed: int) -> dict:
    """L(N) and L(C) fitted on the smaller sizes and evaluated at the largest's N and C (not yet trained)."""
    y = [r["final_val_loss"] for r in fit_rows]
    out = {"target": largest["name"], "N": largest["N"],
           # C needs D, which is fixed by the schedule and known before training: steps x batch x block
           "C": 6 * largest["N"] * cfg.steps * cfg.batch_size * cfg.block_size,
           "fitted_on": [r["name"] for r in fit_rows]}
    for key, xs, x_new in (("L_N", [r["N"] for r in fit_rows], out["N"]),
                           ("L_C", [r["C"] for r in fit_rows], out["C"])):
        law = scaling_fit.fit(xs, y)
        pred = scaling_fit.predict(law, xs, y, x_new, draws=cfg.bootstrap_draws, seed=seed)
        out[key] = {"fit": law.as_dict(), **pred.as_dict()}
    out["written_at"] = utc_now()
    return out


def _verdict(written: dict, measured: float | None) -> dict:
    if measured is None:
        return {"error": None, "relative_error": None, "inside_68": False, "inside": False}
    pred = written["L_N"]
    lo68, hi68 = pred["interval_68"]
    lo95, hi95 = pred["interval_95"]
    err = measured - pred["predicted"]
    return {"error": round(err, 6), "relative_error": round(err / measured, 6) if measured else None,
            "inside_68": bool(lo68 <= measured <= hi68), "inside": bool(lo95 <= measured <= hi95)}


def _plots(rows: list[dict], written: dict) -> None:
    """reports/plots/scaling/points.json: one row per size (kind fit | excluded | measured), the prediction with
    its intervals (kind prediction), and the L(N) fit on a log grid (kind curve), for .dvc/plots/scaling_logx.json.
    Every row has the same keys (None where one does not apply): dvc plots drops a file whose rows differ."""
    pred = written["L_N"]
    (lo68, hi68), (lo95, hi95) = pred["interval_68"], pred["interval_95"]
    no_interval = {"lo68": None, "hi68": None, "lo95": None, "hi95": None}
    points = [{"N": r["N"], "loss": r["final_val_loss"], "name": r["name"],
               "kind": "measured" if r["role"] == "predicted" else r["role"], **no_interval} for r in rows]
    points.append({"N": written["N"], "loss": pred["predicted"], "name": written["target"], "kind": "prediction",
                   "lo68": lo68, "hi68": hi68, "lo95": lo95, "hi95": hi95})
    f = pred["fit"]
    law = scaling_fit.PowerLaw(a=f["a"], alpha=f["alpha"], c=f["c"], sigma=f["sigma"] or 0.0, n_points=f["n_points"])
    points += [{"N": r["N"], "loss": r["fit"], "name": "L(N) fit", "kind": "curve", **no_interval}
               for r in scaling_fit.curve_rows(law, rows[0]["N"] / 1.5, rows[-1]["N"] * 2)]
    write_plot("scaling", "points", points)
