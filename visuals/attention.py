"""Attention maps side by side: one query x key heatmap per model, their difference, and an
overview of every layer and head (per-head entropy) to find where the patterns live."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .distributions import display_token
from .theme import MONO_FONT, apply_layout, as_matrices, grid_heatmap

MASKED_NOTE = "masked: a token cannot attend to later tokens"
MASK_FILL = dict(shape="/", bgcolor="#f0f0f0", fgcolor="#b5b5b5", size=7, solidity=0.25)
ATTENTION_SCALE = "Blues"
DIFFERENCE_SCALE = "RdBu_r"  # red: the student attends more than the teacher; blue: less
ENTROPY_SCALE = "Viridis"
MAX_TICKS = 48
"""At most about this many token labels per axis (every token is still named on hover)."""


def _square(name: str, array: Sequence, t: int) -> np.ndarray:
    z = np.asarray(array, dtype=float)
    if z.shape != (t, t):
        raise ValueError(f"{name!r}: attention map of shape {z.shape} for {t} tokens; expected ({t}, {t})")
    return z


def causal_mask(t: int) -> np.ndarray:
    """(t, t) booleans, True where query i would look at a later key j > i (what a decoder never sees)."""
    return np.triu(np.ones((t, t), dtype=bool), k=1)


def _masked_region(t: int) -> tuple[list[float], list[float]]:
    """The outline of the cells above the diagonal (x = key, y = query, cell centres on integers):
    a staircase polygon to fill with a hatch pattern."""
    if t < 2:
        return [], []
    xs: list[float] = [t - 0.5, 0.5]
    ys: list[float] = [-0.5, -0.5]
    for i in range(t - 1):  # row i is masked from key i + 1 on
        xs += [i + 0.5, i + 1.5]
        ys += [i + 0.5, i + 0.5]
    xs += [t - 0.5]
    ys += [-0.5]
    return xs, ys


def _mask_trace(t: int, showlegend: bool) -> go.Scatter:
    xs, ys = _masked_region(t)
    return go.Scatter(x=xs, y=ys, mode="lines", fill="toself", fillcolor="#f0f0f0", fillpattern=MASK_FILL,
                      line=dict(width=0, color="#b5b5b5"), name=MASKED_NOTE, legendgroup="masked",
                      showlegend=showlegend, hoverinfo="skip")


def _token_axes(fig: go.Figure, tokens: list[str], row: int, col: int, first: bool) -> None:
    shown = [display_token(t, max_len=12) for t in tokens]
    positions = list(range(len(tokens)))
    stride = max(1, -(-len(tokens) // MAX_TICKS))
    ticks = dict(tickvals=positions[::stride], ticktext=shown[::stride], showgrid=False, zeroline=False,
                 tickfont=dict(family=MONO_FONT, size=11))
    t = len(tokens)
    fig.update_xaxes(**ticks, range=[-0.5, t - 0.5], tickangle=-60, title_text="key (attended-to token)",
                     row=row, col=col)
    # query rows top to bottom: the first token's row on top
    fig.update_yaxes(**ticks, range=[t - 0.5, -0.5], title_text="query (attending token)" if first else None,
                     row=row, col=col)


def attention_heatmaps(tokens: list[str], maps: dict[str, Sequence], titles: Sequence[str] | None = None,
                       title: str = "", zmax: float | None = None) -> go.Figure:
    """One query x key heatmap per model (dict order, left to right), on one colour scale.

    tokens: the decoded tokens, (t,). maps: name -> (t, t) attention weights, query rows first
    (row i: how much token i attends to each key j <= i). Rows run top to bottom; the cells above
    the diagonal (a later key, which a causal decoder cannot see) are blank and hatched.
    The colour scale is shared: 0 to `zmax`, by default the largest weight outside the first row
    (which is always 1: the first token can only attend to itself)."""
    if not maps:
        raise ValueError("maps is empty")
    t = len(tokens)
    names = list(maps)
    arrays = {name: _square(name, maps[name], t) for name in names}
    mask = causal_mask(t)
    if zmax is None:
        rest = np.concatenate([a[1:][~mask[1:]] for a in arrays.values()]) if t > 1 else np.array([1.0])
        rest = rest[np.isfinite(rest)]
        zmax = float(rest.max()) if rest.size else 1.0
    zmax = max(float(zmax), 1e-3)
    shown = [display_token(tok) for tok in tokens]
    hover_text = [[f"{shown[i]} → {shown[j]}" for j in range(t)] for i in range(t)]
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=list(titles) if titles else names,
                        horizontal_spacing=0.05 if len(names) > 1 else 0.1)
    for col, name in enumerate(names, start=1):
        z = np.where(mask | ~np.isfinite(arrays[name]), np.nan, arrays[name])
        fig.add_trace(go.Heatmap(
            z=np.where(np.isnan(z), None, z).tolist(), x=list(range(t)), y=list(range(t)), coloraxis="coloraxis",
            xgap=1, ygap=1, hoverongaps=False, name=name, customdata=hover_text,
            hovertemplate=f"{name}<br>query %{{y}} → key %{{x}}<br>%{{customdata}}<br>weight %{{z:.3f}}<extra></extra>"),
            row=1, col=col)
        fig.add_trace(_mask_trace(t, showlegend=col == 1), row=1, col=col)
        _token_axes(fig, tokens, 1, col, first=col == 1)
    for col in range(1, len(names) + 1):  # square cells
        fig.update_yaxes(scaleanchor=f"x{'' if col == 1 else col}", scaleratio=1, constrain="domain", row=1, col=col)
        fig.update_xaxes(constrain="domain", row=1, col=col)
    height = 560 if t <= 24 else 640
    apply_layout(fig, title, height=height)
    fig.update_layout(coloraxis=dict(colorscale=ATTENTION_SCALE, cmin=0.0, cmax=zmax,
                                     colorbar=dict(title=dict(text="attention<br>weight", side="right"),
                                                   thickness=14, len=0.8)),
                      plot_bgcolor="white", margin=dict(b=110))
    return fig


def attention_difference(tokens: list[str], a: Sequence, b: Sequence, names: tuple[str, str] = ("student", "teacher"),
                         title: str = "") -> go.Figure:
    """a − b on a diverging colour scale centred on 0 (red: `a` attends more, blue: less), the masked
    cells hatched as in `attention_heatmaps`. a, b: (t, t) maps for the same tokens."""
    t = len(tokens)
    a, b = _square(names[0], a, t), _square(names[1], b, t)
    diff = np.where(causal_mask(t), np.nan, a - b)
    finite = np.abs(diff[np.isfinite(diff)])
    limit = max(float(finite.max()) if finite.size else 0.0, 1e-3)
    shown = [display_token(tok) for tok in tokens]
    hover_text = [[f"{shown[i]} → {shown[j]}" for j in range(t)] for i in range(t)]
    fig = make_subplots(rows=1, cols=1, subplot_titles=[f"{names[0]} − {names[1]}"])
    fig.add_trace(go.Heatmap(
        z=np.where(np.isnan(diff), None, diff).tolist(), x=list(range(t)), y=list(range(t)),
        colorscale=DIFFERENCE_SCALE, zmid=0.0, zmin=-limit, zmax=limit, xgap=1, ygap=1, hoverongaps=False,
        name="difference", customdata=hover_text,
        colorbar=dict(title=dict(text="difference", side="right"), thickness=14, len=0.8),
        hovertemplate=(f"query %{{y}} → key %{{x}}<br>%{{customdata}}<br>{names[0]} − {names[1]} = "
                       "%{z:+.3f}<extra></extra>")), row=1, col=1)
    fig.add_trace(_mask_trace(t, showlegend=True), row=1, col=1)
    _token_axes(fig, tokens, 1, 1, first=True)
    fig.update_yaxes(scaleanchor="x", scaleratio=1, constrain="domain")
    fig.update_xaxes(constrain="domain")
    apply_layout(fig, title, height=560 if t <= 24 else 640)
    fig.update_layout(plot_bgcolor="white", margin=dict(b=110))
    return fig


def head_entropy_grid(entropy: dict[str, Sequence], selected: dict[str, tuple[int, int | None]] | None = None,
                      title: str = "") -> go.Figure:
    """Small multiples: per model (dict order), a layers x heads grid of each head's mean normalised
    attention entropy (0: every query looks at one key; 1: spread evenly over every key it can see).
    Layer 0 on top. selected: name -> (layer, head) outlined, or (layer, None) for a whole layer
    (head-averaged)."""
    grids = as_matrices(entropy, "layers, heads")
    names = list(grids)
    finite = np.concatenate([g[np.isfinite(g)].ravel() for g in grids.values()])
    cmax = max(1.0, float(finite.max())) if finite.size else 1.0
    max_layers = max(g.shape[0] for g in grids.values())
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, horizontal_spacing=0.08)
    for col, name in enumerate(names, start=1):
        grid = grids[name]
        layers, heads = grid.shape
        fig.add_trace(grid_heatmap(grid, name, f"{name}<br>layer %{{y}}, head %{{x}}<br>entropy %{{z:.2f}}<extra></extra>"),
                      row=1, col=col)
        fig.update_xaxes(title_text="head", tickmode="linear", dtick=1 if heads <= 16 else max(1, heads // 8),
                         range=[-0.5, heads - 0.5], showgrid=False, zeroline=False, row=1, col=col)
        fig.update_yaxes(title_text="layer" if col == 1 else None, range=[layers - 0.5, -0.5], showgrid=False,
                         zeroline=False, dtick=1 if layers <= 12 else (2 if layers <= 24 else 5), row=1, col=col)
        if selected and name in selected:
            layer, head = selected[name]
            x0, x1 = (-0.5, heads - 0.5) if head is None else (head - 0.5, head + 0.5)
            axis = "" if col == 1 else str(col)
            fig.add_shape(type="rect", x0=x0, x1=x1, y0=layer - 0.5, y1=layer + 0.5, xref=f"x{axis}",
                          yref=f"y{axis}", line=dict(color="#e4572e", width=3), fillcolor="rgba(0,0,0,0)")
    apply_layout(fig, title, height=max(320, 170 + 17 * max_layers))
    fig.update_layout(coloraxis=dict(colorscale=ENTROPY_SCALE, cmin=0.0, cmax=cmax,
                                     colorbar=dict(title=dict(text="entropy<br>(0 sharp, 1 even)", side="right"),
                                                   thickness=14, len=0.8)),
                      plot_bgcolor="#e6e6e6")
    return fig
