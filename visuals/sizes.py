"""Size vs quality: held-out perplexity of distilled students of several sizes, and the teacher."""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go

from .curves import _log_ticks
from .theme import STUDENT_AFTER, STUDENT_BEFORE, TEACHER, apply_layout

LOG_RANGE = 10.0
"""Use a log perplexity axis when the largest plotted perplexity is more than this many times the smallest."""
BEFORE_OPACITY = 0.45
LABEL_ROOM = 0.2
"""Extra room under the lowest point, as a fraction of the perplexity span, so its label stays inside the plot."""


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _speed(tokens_per_s: Any) -> str:
    return f"{tokens_per_s:,.1f} tok/s" if _finite(tokens_per_s) else "— tok/s"


def _first(rows: list[dict[str, Any]], key: str) -> Any:
    return next((row[key] for row in rows if _finite(row.get(key))), None)


def size_quality_figure(rows: list[dict[str, Any]], title: str = "Size vs quality") -> go.Figure:
    """Parameters (millions) against held-out perplexity, one point per student.

    `rows` are the sweep's rows (`spec`, `params`, `ppl_before`, `ppl`, `tokens_per_s`,
    `teacher_params`, `teacher_ppl`, `teacher_tokens_per_s`, `error`, ...). Each student is a
    marker labelled with its spec and generation speed; its perplexity before distillation is a
    faded marker joined to it by a dotted line; the teacher is a star. Rows without a finite
    `params` / `ppl` (e.g. failed students) are left out, and named in a note under the title."""
    students = [r for r in rows if _finite(r.get("params")) and _finite(r.get("ppl"))]
    skipped = [str(r.get("spec", "?")) for r in rows if r not in students]
    fig = go.Figure()
    ppl_values: list[float] = []

    before = [r for r in students if _finite(r.get("ppl_before"))]
    if before:
        xs: list[float | None] = []
        ys: list[float | None] = []
        for r in before:
            xs += [r["params"] / 1e6, r["params"] / 1e6, None]
            ys += [r["ppl_before"], r["ppl"], None]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="before → after", showlegend=False,
                                 line=dict(color=STUDENT_BEFORE, width=1.5, dash="dot"), hoverinfo="skip"))
        fig.add_trace(go.Scatter(
            x=[r["params"] / 1e6 for r in before], y=[r["ppl_before"] for r in before],
            mode="markers", name="student before distillation", opacity=BEFORE_OPACITY,
            marker=dict(color=STUDENT_BEFORE, size=11, symbol="circle-open", line=dict(width=2)),
            customdata=[[str(r.get("spec", ""))] for r in before],
            hovertemplate="%{customdata[0]} before distillation<br>%{x:.1f} M parameters<br>"
                          "perplexity %{y:.2f}<extra></extra>"))
        ppl_values += [r["ppl_before"] for r in before]

    if students:
        fig.add_trace(go.Scatter(
            x=[r["params"] / 1e6 for r in students], y=[r["ppl"] for r in students],
            mode="markers+text", name="student after distillation",
            marker=dict(color=STUDENT_AFTER, size=13, line=dict(color="white", width=1)),
            text=[f"{r.get('spec', '')}<br>{_speed(r.get('tokens_per_s'))}" for r in students],
            textposition="bottom center", textfont=dict(size=12),
            customdata=[[str(r.get("spec", "")), _speed(r.get("tokens_per_s"))] for r in students],
            hovertemplate="%{customdata[0]}<br>%{x:.1f} M parameters<br>perplexity %{y:.2f}<br>"
                          "%{customdata[1]}<extra></extra>"))
        ppl_values += [r["ppl"] for r in students]

    teacher_params, teacher_ppl = _first(rows, "teacher_params"), _first(rows, "teacher_ppl")
    if teacher_params is not None and teacher_ppl is not None:
        speed = _speed(_first(rows, "teacher_tokens_per_s"))
        fig.add_trace(go.Scatter(
            x=[teacher_params / 1e6], y=[teacher_ppl], mode="markers+text", name="teacher",
            marker=dict(color=TEACHER, size=18, symbol="star", line=dict(color="white", width=1)),
            text=[f"teacher<br>{speed}"], textposition="bottom center", textfont=dict(size=12, color=TEACHER),
            hovertemplate=f"teacher<br>%{{x:.1f}} M parameters<br>perplexity %{{y:.2f}}<br>{speed}<extra></extra>"))
        ppl_values.append(teacher_ppl)

    apply_layout(fig, title, height=480)
    fig.update_xaxes(title_text="parameters (millions)")
    log = bool(ppl_values) and min(ppl_values) > 0 and max(ppl_values) / min(ppl_values) > LOG_RANGE
    fig.update_yaxes(title_text="held-out perplexity ↓" + (" (log scale)" if log else ""),
                     type="log" if log else "linear")
    if log:
        ticks = _log_ticks(min(ppl_values), max(ppl_values))
        lo, hi = math.log10(min(ppl_values)), math.log10(max(ppl_values))
        span = max(hi - lo, 0.3)  # plotly log ranges are in decades
        fig.update_yaxes(tickvals=ticks, ticktext=[f"{t:g}" for t in ticks],
                         range=[lo - LABEL_ROOM * span, hi + 0.08 * span])
    elif ppl_values:  # room under the lowest marker for its two-line label
        lo, hi = min(ppl_values), max(ppl_values)
        span = max(hi - lo, 0.1 * abs(hi), 1.0)
        fig.update_yaxes(range=[max(0.0, lo - LABEL_ROOM * span) if lo >= 0 else lo - LABEL_ROOM * span,
                                hi + 0.08 * span])
    xs_all = [x for trace in fig.data for x in trace.x if x is not None]
    if xs_all:  # room for the labels at both ends
        lo, hi = min(xs_all), max(xs_all)
        pad = max(0.12 * (hi - lo), 0.1 * hi, 1e-3)
        fig.update_xaxes(range=[max(0.0, lo - pad), hi + pad])
    if skipped:
        fig.add_annotation(text="no result: " + ", ".join(skipped), xref="paper", yref="paper", x=1, y=1.0,
                           xanchor="right", yanchor="bottom", showarrow=False, font=dict(size=12, color="#b00"))
    if not students and teacher_ppl is None:
        fig.update_xaxes(range=[0, 10], showticklabels=False, showgrid=False, zeroline=False)
        fig.update_yaxes(range=[0, 1], showticklabels=False, showgrid=False, zeroline=False)
        fig.add_annotation(text="No students yet — press Compare sizes", xref="paper", yref="paper", x=0.5, y=0.5,
                           showarrow=False, font=dict(size=18, color="#666"))
    return fig
