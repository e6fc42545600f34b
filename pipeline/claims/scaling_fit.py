"""Power laws with an irreducible term, L(x) = a * x^-alpha + c, fitted to a few points, and what they predict.

GPT-4 technical report (OpenAI 2023, sec. 3.1, figure 1): "we predicted GPT-4's final loss ... by fitting a
scaling law with an irreducible loss term (as in Henighan et al.): L(C) = aC^b + c, from models trained
using the same methodology but using at most 10,000x less compute". Kaplan et al. 2020 (eq. 1.1) write the
size law as L(N) = (N_c / N)^alpha_N; the `+ c` is Henighan et al.'s irreducible loss.

The fit: a grid over c (from 0 to just under the smallest loss) with a straight line in log(L - c) vs log x at
each c gives a start no local minimum can fool, then scipy's curve_fit refines it in loss space, with bounds
a > 0, 0 < alpha <= MAX_ALPHA, 0 <= c < min(L). x is divided by its smallest value while fitting (a spans
many decades otherwise); `a` is reported in the caller's units.

Uncertainty (`predict`): a parametric bootstrap. The residual spread sigma = sqrt(SSR / (n - 3)) stands for
run-to-run noise; each draw adds N(0, sigma^2) to the fitted values, refits, and predicts the new point plus
its own N(0, sigma^2) (a measurement, not the mean curve, is what gets compared). With three parameters and
five or six points sigma rests on two or three degrees of freedom, so the interval is itself rough.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

MAX_ALPHA = 3.0  # Kaplan: alpha_N ~ 0.076, alpha_C ~ 0.05 (no c); with c, small models give 0.2-1
C_GRID = 200  # start values of c tried before the refinement


@dataclass(frozen=True)
class PowerLaw:
    """L(x) = a * x^-alpha + c, with the fit's diagnostics."""

    a: float
    alpha: float
    c: float
    sigma: float  # residual standard deviation, sqrt(SSR / (n - 3)); 0 when n <= 3
    n_points: int
    param_sd: tuple[float, float, float] = (math.nan, math.nan, math.nan)  # from curve_fit's covariance

    def __call__(self, x):
        return self.a * np.power(np.asarray(x, dtype=np.float64), -self.alpha) + self.c

    def as_dict(self) -> dict:
        return {"a": _r(self.a), "alpha": _r(self.alpha), "c": _r(self.c), "sigma": _r(self.sigma),
                "n_points": self.n_points, "a_sd": _r(self.param_sd[0]), "alpha_sd": _r(self.param_sd[1]),
                "c_sd": _r(self.param_sd[2])}


def _r(v: float) -> float | None:
    """6 significant digits (stable JSON); None for a non-finite value (JSON has no NaN)."""
    return float(f"{v:.6g}") if math.isfinite(v) else None


def _law(z, a, alpha, c):
    return a * np.power(z, -alpha) + c


def _start(z: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Best (a, alpha, c) over a grid of c, each with a least-squares line through log(y - c) vs log z
    (all C_GRID lines at once: closed-form slope and intercept per row)."""
    lz = np.log(z)
    cs = np.linspace(0.0, y.min(), C_GRID, endpoint=False)[:, None]
    ly = np.log(y[None, :] - cs)  # (grid, n)
    dz = lz - lz.mean()
    slope = (ly * dz).sum(axis=1) / (dz * dz).sum()
    icpt = ly.mean(axis=1) - slope * lz.mean()
    alpha = np.clip(-slope, 1e-6, MAX_ALPHA)[:, None]
    a = np.exp(icpt)[:, None]
    ssr = ((a * np.power(z[None, :], -alpha) + cs - y[None, :]) ** 2).sum(axis=1)
    i = int(np.argmin(ssr))
    return float(a[i, 0]), float(alpha[i, 0]), float(cs[i, 0])


def fit(x, y) -> PowerLaw:
    """Least-squares L(x) = a * x^-alpha + c through (x, y); needs >= 3 points with distinct x > 0."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 3 or len(set(x.tolist())) < 3:
        raise ValueError(f"a 3-parameter power law needs >= 3 distinct x; got {len(set(x.tolist()))}")
    if np.any(x <= 0) or not np.all(np.isfinite(y)):
        raise ValueError("x must be > 0 and every loss finite")
    x0 = float(x.min())
    z = x / x0
    a0, alpha0, c0 = _start(z, y)
    ymin = float(y.min())
    lo, hi = [0.0, 1e-6, 0.0], [np.inf, MAX_ALPHA, ymin * (1 - 1e-9)]
    p0 = [a0, min(max(alpha0, 1e-6), MAX_ALPHA), min(c0, hi[2])]
    try:
        with warnings.catch_warnings():  # "covariance could not be estimated": param_sd is then NaN, as it says
            warnings.simplefilter("ignore", OptimizeWarning)
            popt, pcov = curve_fit(_law, z, y, p0=p0, bounds=(lo, hi), method="trf", maxfev=20_000)
    except RuntimeError:  # no convergence: the grid start is still a least-squares answer at its c
        popt, pcov = np.asarray(p0), np.full((3, 3), np.nan)
    a_z, alpha, c = (float(v) for v in popt)
    dof = len(x) - 3
    ssr = float(np.sum((_law(z, *popt) - y) ** 2))
    sigma = math.sqrt(ssr / dof) if dof > 0 else 0.0
    sd = np.sqrt(np.clip(np.diag(pcov), 0, None)) if np.all(np.isfinite(pcov)) else np.full(3, np.nan)
    # back to the caller's x: a * (x / x0)^-alpha = (a * x0^alpha) * x^-alpha
    scale = x0 ** alpha
    return PowerLaw(a=a_z * scale, alpha=alpha, c=c, sigma=sigma, n_points=len(x),
                    param_sd=(float(sd[0]) * scale, float(sd[1]), float(sd[2])))


@dataclass(frozen=True)
class Prediction:
    """The fit's value at a new x and its bootstrap intervals."""

    x: float
    value: float  # the fitted curve at x
    interval_68: tuple[float, float]
    interval_95: tuple[float, float]
    draws: int
    failed_draws: int

    def as_dict(self) -> dict:
        return {"x": _r(self.x), "predicted": _r(self.value), "interval_68": [_r(v) for v in self.interval_68],
                "interval_95": [_r(v) for v in self.interval_95], "bootstrap_draws": self.draws,
                "bootstrap_failed": self.failed_draws}

    def inside(self, measured: float, level: int = 95) -> bool:
        lo, hi = self.interval_95 if level == 95 else self.interval_68
        return bool(lo <= measured <= hi)


def predict(law: PowerLaw, x, y, x_new: float, draws: int = 400, seed: int = 0) -> Prediction:
    """Parametric bootstrap of the law fitted to (x, y), evaluated at x_new (see the module doc)."""
    x = np.asarray(x, dtype=np.float64)
    rng = np.random.default_rng(seed)
    base = law(x)
    out, failed = [], 0
    for _ in range(draws):
        y_star = base + rng.normal(0.0, law.sigma, size=len(x))
        noise = rng.normal(0.0, law.sigma)  # drawn whether or not the refit works: draws stay aligned
        try:
            out.append(float(fit(x, y_star)(x_new)) + noise)
        except ValueError:  # a draw with a non-finite loss or a degenerate refit
            failed += 1
    value = float(law(x_new))
    if not out:
        return Prediction(x_new, value, (value, value), (value, value), draws, failed)
    q = np.quantile(np.asarray(out), [0.16, 0.84, 0.025, 0.975])
    return Prediction(x_new, value, (float(q[0]), float(q[1])), (float(q[2]), float(q[3])), draws, failed)


def curve_rows(law: PowerLaw, x_lo: float, x_hi: float, n: int = 40) -> list[dict]:
    """The fitted curve on a log-spaced grid from x_lo to x_hi: rows {N, fit}."""
    return [{"N": _r(float(v)), "fit": _r(float(law(v)))} for v in np.geomspace(x_lo, x_hi, n)]
