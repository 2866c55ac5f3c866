"""Shared palette and layout for every Distill Studio figure."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

TEACHER = "#1f77b4"
STUDENT_BEFORE = "#9e9e9e"
STUDENT_AFTER = "#e4572e"
# Fallback cycle for models / loss terms without a fixed role colour.
PALETTE = ("#1f77b4", "#e4572e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
FONT_FAMILY = "Inter, 'Segoe UI', 'DejaVu Sans', Arial, sans-serif"
MONO_FONT = "'DejaVu Sans Mono', Menlo, Consolas, monospace"  # token labels: spaces and ␣ stay aligned


def model_color(name: str, index: int = 0) -> str:
    """Role colour for a model name ('teacher', 'student (before)', 'student (after)', 'student');
    names without a known role get PALETTE[index]."""
    lowered = name.lower()
    if "teacher" in lowered:
        return TEACHER
    if "before" in lowered:
        return STUDENT_BEFORE
    if "student" in lowered:
        return STUDENT_AFTER
    return PALETTE[index % len(PALETTE)]


def apply_layout(fig: go.Figure, title: str = "", height: int = 420) -> go.Figure:
    """White template, readable fonts, room for a title and a horizontal legend on top. Returns fig."""
    top = 90 if title else 50
    fig.update_layout(
        template="plotly_white",
        height=height,
        title=dict(text=title, x=0.01, xanchor="left", y=0.98, yanchor="top", font=dict(size=17))
        if title else None,
        font=dict(family=FONT_FAMILY, size=13, color="#222"),
        margin=dict(l=70, r=30, t=top, b=60),
        legend=dict(orientation="h", yanchor="bottom", y=1.08, xanchor="left", x=0, font=dict(size=12)),
        hoverlabel=dict(font=dict(family=FONT_FAMILY, size=12)),
    )
    return fig


def as_matrices(named: dict, expected: str) -> dict:
    """name -> 2-D float array, in dict order; ValueError naming the first entry that is not 2-D
    (`expected` says which axes it should have) or an empty dict."""
    if not named:
        raise ValueError("nothing to plot: no model's values were given")
    matrices = {}
    for name, values in named.items():
        matrix = np.asarray(values, dtype=float)
        if matrix.ndim != 2:
            raise ValueError(f"{name!r}: values of shape {matrix.shape}; expected ({expected})")
        matrices[name] = matrix
    return matrices


def grid_heatmap(grid: np.ndarray, name: str, hovertemplate: str) -> go.Heatmap:
    """A (rows, columns) grid as a heatmap on the figure's shared colour axis, one cell per entry (gaps drawn
    between cells), non-finite entries left blank."""
    rows, cols = grid.shape
    return go.Heatmap(z=np.where(np.isfinite(grid), grid, None).tolist(), x=list(range(cols)), y=list(range(rows)),
                      coloraxis="coloraxis", xgap=1, ygap=1, name=name, hoverongaps=False, hovertemplate=hovertemplate)
