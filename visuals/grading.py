"""The teacher grades a model's own words: each model's continuation of one prompt, token by token, every token a
chip coloured by how likely the teacher finds it (or by the reverse KL there), the teacher's own top choices on
hover, and each continuation's mean score in its heading."""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go
from plotly.colors import sample_colorscale

from .distributions import display_token
from .theme import MONO_FONT, apply_layout, model_color

COLOR_BY = ("teacher_prob", "reverse_kl")
"""What the chips' colour shows: the teacher's probability of the token, or the reverse KL(model || teacher) there."""
GRADE_SCALE = [[0.0, "#e8847c"], [0.5, "#f9e08b"], [1.0, "#9fd89a"]]
"""Red (the teacher would not have written it) through yellow to green (what the teacher expects); pale enough
for black text."""
PROB_FLOOR = 1e-4
"""Probabilities at or below this take the reddest colour (the scale is logarithmic: 1e-4 .. 1)."""
KL_CEILING = 4.0
"""Reverse KL (nats) at or above this takes the reddest colour."""
LINE_CHARS = 64
"""Characters per line before a continuation wraps."""


def grade_value(row: dict[str, Any], index: int, color_by: str) -> float:
    """Where token `index` of a graded row sits on the colour scale, 0 (red) .. 1 (green)."""
    if color_by == "reverse_kl":
        return 1.0 - min(max(row["reverse_kl"][index], 0.0), KL_CEILING) / KL_CEILING
    p = min(max(row["teacher_prob"][index], PROB_FLOOR), 1.0)
    return 1.0 + math.log10(p) / -math.log10(PROB_FLOOR)  # 1e-4 -> 0, 1 -> 1


def _layout_tokens(tokens: list[str]) -> list[tuple[int, float, float]]:
    """(line, x start, width) of each token chip, in characters, wrapping at LINE_CHARS."""
    placed, line, x = [], 0, 0.0
    for token in tokens:
        width = max(2.0, len(display_token(token)) + 1.0)
        if x > 0 and x + width > LINE_CHARS:
            line, x = line + 1, 0.0
        placed.append((line, x, width))
        x += width
    return placed


def _hover(row: dict[str, Any], index: int) -> str:
    choices = ", ".join(f"<b>{display_token(token)}</b> {p:.0%}" if p >= 0.01 else f"<b>{display_token(token)}</b> "
                        f"{p:.1e}" for token, p in row["teacher_top"][index])
    return (f"token {index + 1}: <b>{display_token(row['tokens'][index])}</b><br>teacher's probability "
            f"{row['teacher_prob'][index]:.3g} · the writer's {row['model_prob'][index]:.3g}<br>reverse KL there "
            f"{row['reverse_kl'][index]:.2f} nats<br>teacher's top choices: {choices}")


def _heading(name: str, row: dict[str, Any]) -> str:
    return (f"<b>{name}</b>: teacher's NLL {row['mean_nll']:.2f} nats/token · reverse KL "
            f"{row['mean_reverse_kl']:.2f} nats/token · {len(row['tokens'])} tokens")


def graded_continuations(rows: dict[str, dict[str, Any]], color_by: str = "teacher_prob", title: str = "") -> go.Figure:
    """One block per model (its heading with the means, then its continuation as chips); `rows` maps a model's
    name to a graded row (grading.graded_row: tokens, teacher_prob, model_prob, reverse_kl, teacher_top,
    mean_nll, mean_reverse_kl)."""
    if color_by not in COLOR_BY:
        raise ValueError(f"color_by must be one of {', '.join(COLOR_BY)}, got {color_by!r}")
    if not rows:
        raise ValueError("nothing to plot: no continuation was given")
    fig, shapes, y = go.Figure(), [], 0.0
    for index, (name, row) in enumerate(rows.items()):
        fig.add_annotation(x=0, y=y, text=_heading(name, row), showarrow=False, xanchor="left", yanchor="middle",
                           font=dict(size=13, color=model_color(name, index)))
        placed = _layout_tokens(row["tokens"])
        values = [grade_value(row, i, color_by) for i in range(len(row["tokens"]))]
        colors = sample_colorscale(GRADE_SCALE, values) if values else []
        xs, ys = [], []
        for (line, x, width), color in zip(placed, colors):
            top = y - 1.0 - line
            shapes.append(dict(type="rect", x0=x + 0.1, x1=x + width - 0.1, y0=top - 0.42, y1=top + 0.42,
                               fillcolor=color, line=dict(width=0), layer="below"))
            xs.append(x + width / 2)
            ys.append(top)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="text", text=[display_token(t) for t in row["tokens"]],
                                 textfont=dict(family=MONO_FONT, size=13, color="#111"), name=name, showlegend=False,
                                 hovertext=[_hover(row, i) for i in range(len(row["tokens"]))], hoverinfo="text"))
        y -= 2.4 + (placed[-1][0] if placed else 0)
    fig.add_trace(_colorbar(color_by))
    fig.update_layout(shapes=shapes)
    fig.update_xaxes(visible=False, range=[-0.5, LINE_CHARS + 0.5])
    fig.update_yaxes(visible=False, range=[y + 0.9, 0.8])
    apply_layout(fig, title, height=int(110 + 30 * -y))
    fig.update_layout(margin=dict(l=20, r=20), hovermode="closest")
    return fig


def _colorbar(color_by: str) -> go.Scatter:
    """An invisible trace that draws the colour scale's legend."""
    if color_by == "reverse_kl":
        ticks = {1.0: "0", 0.75: "1", 0.5: "2", 0.25: "3", 0.0: f"≥{KL_CEILING:g}"}
        label = "reverse KL<br>(nats)"
    else:
        ticks = {1.0: "1", 0.75: "0.1", 0.5: "0.01", 0.25: "0.001", 0.0: "≤1e-4"}
        label = "teacher's<br>probability"
    return go.Scatter(x=[None], y=[None], mode="markers", showlegend=False, hoverinfo="skip",
                      marker=dict(color=[0.0], cmin=0.0, cmax=1.0, colorscale=GRADE_SCALE, showscale=True,
                                  colorbar=dict(title=dict(text=label), tickvals=list(ticks),
                                                ticktext=list(ticks.values()), len=0.9, thickness=14)))
