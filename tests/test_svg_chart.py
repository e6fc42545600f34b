"""bench/svg_chart.py draws the README's figures: a valid SVG whose points sit where their values say."""
import sys
import xml.dom.minidom
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import svg_chart  # noqa: E402


def test_points_land_on_their_values():
    pts = [(1e5, 0.76), (3e5, 0.82), (1e6, 1.12)]
    svg = svg_chart.page([svg_chart.line_chart({"rss": pts}, "t", "x", "y", logx=True, hlines={"goal": 4.0})])
    doc = xml.dom.minidom.parseString(svg)
    line = doc.getElementsByTagName("polyline")[0].getAttribute("points").split()
    xy = [tuple(map(float, p.split(","))) for p in line]
    assert len(xy) == 3
    left, right = svg_chart.PAD_L, svg_chart.W - svg_chart.PAD_R
    assert xy[0][0] == left and xy[-1][0] == right  # log axis from 100k to 1M: ends on the frame
    # log scale: 300k sits log10(3) of the way across
    assert abs((xy[1][0] - left) / (right - left) - 0.4771) < 0.01
    assert xy[0][1] > xy[1][1] > xy[2][1]  # larger values higher up (smaller y)
    goal_y = [float(n.getAttribute("y1")) for n in doc.getElementsByTagName("line") if n.getAttribute("stroke-dasharray")]
    assert goal_y and goal_y[0] < xy[2][1]  # the 4 GB line is above every point


def test_ticks_are_readable():
    assert svg_chart._ticks(0, 1.2, False) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2])
    assert svg_chart._label(0.6000000000000001) == "0.6" and svg_chart._label(3e5) == "300k"
    assert svg_chart._ticks(1e5, 1e6, True) == [1e5, 1e6]
    assert 4 <= len(svg_chart._ticks(0, 300, False)) <= 11
