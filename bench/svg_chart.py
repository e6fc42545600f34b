"""Line charts as plain SVG, for figures the README shows (no plotting library is a dependency).

line_chart() draws one panel; page() puts panels side by side into one SVG document.
"""
from __future__ import annotations

import math
from html import escape

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 420, 280, 60, 20, 30, 45
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")


def _ticks(lo: float, hi: float, log: bool) -> list[float]:
    if log:
        return [10.0 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]
    step = 10 ** math.floor(math.log10((hi - lo) or 1.0))
    n = (hi - lo) / step  # 1 to 10 ticks at this step: aim for 4 to 10
    step *= 0.2 if n < 2 else 0.5 if n < 4 else 2 if n > 10 else 1
    return [i * step for i in range(math.floor(lo / step), math.ceil(hi / step) + 1)]


def _label(v: float) -> str:
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if abs(v) >= size:
            return f"{v / size:g}{unit}"
    return f"{v:g}"


def line_chart(series: dict[str, list[tuple[float, float]]], title: str, xlabel: str, ylabel: str,
               logx: bool = False, hlines: dict[str, float] | None = None, x0: float = 0.0) -> str:
    """One panel (an SVG <g>, W x H, shifted right by x0): each series a line with markers, hlines dashed."""
    hlines = hlines or {}
    xs = [x for pts in series.values() for x, _ in pts]
    ys = [y for pts in series.values() for _, y in pts] + list(hlines.values()) + [0.0]
    xt = _ticks(min(xs), max(xs), logx)
    yt = _ticks(min(ys), max(ys) * 1.05, False)
    fx = (lambda v: math.log10(v)) if logx else (lambda v: v)
    x_lo, x_hi, y_lo, y_hi = fx(xt[0]), fx(xt[-1]), yt[0], yt[-1]

    def px(x: float) -> float:
        return x0 + PAD_L + (fx(x) - x_lo) / ((x_hi - x_lo) or 1) * (W - PAD_L - PAD_R)

    def py(y: float) -> float:
        return PAD_T + (1 - (y - y_lo) / ((y_hi - y_lo) or 1)) * (H - PAD_T - PAD_B)

    out = [f'<text x="{x0 + W / 2}" y="18" text-anchor="middle" font-weight="bold">{escape(title)}</text>']
    for t in xt:
        out.append(f'<line x1="{px(t):.1f}" x2="{px(t):.1f}" y1="{PAD_T}" y2="{H - PAD_B}" stroke="#eee"/>'
                   f'<text x="{px(t):.1f}" y="{H - PAD_B + 15}" text-anchor="middle">{_label(t)}</text>')
    for t in yt:
        out.append(f'<line x1="{x0 + PAD_L}" x2="{x0 + W - PAD_R}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#eee"/>'
                   f'<text x="{x0 + PAD_L - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{_label(t)}</text>')
    out.append(f'<text x="{x0 + W / 2}" y="{H - 8}" text-anchor="middle">{escape(xlabel)}</text>'
               f'<text transform="translate({x0 + 14},{H / 2}) rotate(-90)" text-anchor="middle">{escape(ylabel)}</text>')
    for name, y in hlines.items():
        out.append(f'<line x1="{x0 + PAD_L}" x2="{x0 + W - PAD_R}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#d62728" '
                   f'stroke-dasharray="5,4"/><text x="{x0 + W - PAD_R - 4}" y="{py(y) - 5:.1f}" text-anchor="end" '
                   f'fill="#d62728">{escape(name)}</text>')
    for i, (name, pts) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        if len(pts) <= 20:
            out += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{colour}"/>' for x, y in pts]
        out.append(f'<text x="{x0 + PAD_L + 8}" y="{PAD_T + 14 + 15 * i}" fill="{colour}">{escape(name)}</text>')
    return "<g>" + "".join(out) + "</g>"


def page(panels: list[str]) -> str:
    """Panels (from line_chart with x0 = k * W) side by side in one SVG document."""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W * len(panels)}" height="{H}" '
            f'font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/>'
            + "".join(panels) + "</svg>\n")
