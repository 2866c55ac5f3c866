"""How two vocabularies line up on one text: the teacher's tokens above the student's, each drawn over the bytes
it covers, the aligned spans as bands between the two rows, and the tokens without a one-to-one partner
highlighted. Long texts wrap, a whole span at a time."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from .distributions import display_token
from .theme import MONO_FONT, STUDENT_AFTER, TEACHER, apply_layout

MERGED = "#f4a261"
"""Tokens without a one-to-one partner, and the bands of the spans they are merged over."""
ONE_TO_ONE_BAND = "rgba(120, 120, 120, 0.18)"
MERGED_BAND = "rgba(244, 162, 97, 0.45)"
ONE_TO_ONE = "#e6eef7"
"""Tokens aligned one to one, on both rows (the outline colour tells the teacher's row from the student's)."""
ROW_LINE = {"teacher": TEACHER, "student": STUDENT_AFTER}
ROW_HEIGHT, BAND_HEIGHT, LINE_GAP = 0.8, 0.7, 0.9
"""In y units: each token row, the band between them, the gap between wrapped lines."""


def _lines(groups: list[dict[str, Any]], line_bytes: int) -> list[list[dict[str, Any]]]:
    """The groups laid out in lines of at most `line_bytes` bytes (a longer group gets a line of its own)."""
    lines: list[list[dict[str, Any]]] = [[]]
    for group in groups:
        if lines[-1] and group["end"] - lines[-1][0]["start"] > line_bytes:
            lines.append([])
        lines[-1].append(group)
    return lines


def _token_rects(side: dict[str, Any], indices: range, x0: int, base: float) -> tuple[list[dict], list[tuple]]:
    """One row's token rectangles (plotly shapes) and label points (x, y, text, hover, highlighted)."""
    shapes, labels = [], []
    for i in indices:
        start, end = side["spans"][i]
        single = side["one_to_one"][i]
        shapes.append(dict(type="rect", x0=start - x0 + 0.06, x1=end - x0 - 0.06, y0=base, y1=base + ROW_HEIGHT,
                           fillcolor=ONE_TO_ONE if single else MERGED,
                           line=dict(color=ROW_LINE[side["name"]], width=1), layer="below"))
        piece = side["pieces"][i]
        hover = (f"{side['name']} token {i}: {display_token(piece, 40)}<br>bytes {start}–{end}<br>"
                 + ("aligned one to one" if single else "no one-to-one partner: merged over its span"))
        labels.append(((start + end) / 2 - x0, base + ROW_HEIGHT / 2, display_token(piece, max(1, end - start)),
                       hover))
    return shapes, labels


def alignment_figure(result: dict[str, Any], title: str = "", line_bytes: int = 64,
                     names: tuple[str, str] = ("teacher", "student")) -> go.Figure:
    """`result`: alignment.align_text's dict (each side's pieces, byte spans and one-to-one flags; the groups;
    the one-to-one share). Each line: the teacher's tokens on top, the student's below, a band per aligned span
    (grey: one token on each side; orange: merged)."""
    shapes, labels = [], []
    lines = _lines(result["groups"], line_bytes)
    line_height = 2 * ROW_HEIGHT + BAND_HEIGHT + LINE_GAP
    for number, line in enumerate(lines):
        if not line:
            continue
        base = -number * line_height
        x0 = line[0]["start"]
        for group in line:
            shapes.append(dict(type="rect", x0=group["start"] - x0, x1=group["end"] - x0, y0=base + ROW_HEIGHT,
                               y1=base + ROW_HEIGHT + BAND_HEIGHT, line=dict(width=0), layer="below",
                               fillcolor=ONE_TO_ONE_BAND if group["one_to_one"] else MERGED_BAND))
        for key, row_base in (("teacher", base + ROW_HEIGHT + BAND_HEIGHT), ("student", base)):
            side = {**result[key], "name": key}
            first, last = line[0][key][0], line[-1][key][1]
            row_shapes, row_labels = _token_rects(side, range(first, last + 1), x0, row_base)
            shapes += row_shapes
            labels += row_labels
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[p[0] for p in labels], y=[p[1] for p in labels], mode="text",
                             text=[p[2] for p in labels], hovertext=[p[3] for p in labels], hoverinfo="text",
                             textfont=dict(family=MONO_FONT, size=12, color="#222"), showlegend=False))
    for name, color in (("aligned one to one", ONE_TO_ONE), ("no one-to-one partner (merged span)", MERGED)):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name,
                                 marker=dict(symbol="square", size=13, color=color, line=dict(color="#666", width=1))))
    tick_y = [v for n in range(len(lines)) for v in (-n * line_height + ROW_HEIGHT + BAND_HEIGHT + ROW_HEIGHT / 2,
                                                      -n * line_height + ROW_HEIGHT / 2)]
    fig.update_layout(shapes=shapes)
    fig.update_xaxes(visible=False, range=[-0.5, line_bytes + 0.5])
    fig.update_yaxes(tickvals=tick_y, ticktext=[n for _ in lines for n in names], showgrid=False, zeroline=False,
                     range=[-(len(lines) - 1) * line_height - 0.2, 2 * ROW_HEIGHT + BAND_HEIGHT + 0.2])
    apply_layout(fig, title, height=130 + 125 * len(lines))
    fig.update_layout(margin=dict(l=80, r=20, t=95 if title else 55, b=20))
    return fig
