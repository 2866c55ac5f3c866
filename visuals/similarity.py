"""Hidden-state similarity between teacher and student layers: linear CKA (Kornblith et al. 2019)
of every layer pair, the mapped pairs' similarity, and how it moved over the training steps."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from .theme import STUDENT_AFTER, apply_layout, as_matrices, grid_heatmap, model_color

CKA_SCALE = "Viridis"
PAIR_MARK = "mapped pair (student:teacher)"


def pair_label(pair: Sequence[int]) -> str:
    """A (student layer, teacher layer) pair as the app writes it: 's:t'."""
    return f"{int(pair[0])}:{int(pair[1])}"


def cka_heatmaps(cka: dict[str, Sequence], layer_pairs: Sequence[Sequence[int]] | None = None,
                 title: str = "") -> go.Figure:
    """One heatmap per student (dict order): linear CKA between every teacher layer (y, layer 0 at the
    bottom) and every student layer (x), on one 0..1 colour scale. The mapped (student, teacher) pairs
    are outlined. cka: name -> (teacher_layers, student_layers) matrix."""
    mats = as_matrices(cka, "teacher layers, student layers")
    names = list(mats)
    pairs = [(int(s), int(t)) for s, t in (layer_pairs or [])]
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, horizontal_spacing=0.07)
    for col, name in enumerate(names, start=1):
        m = mats[name]
        n_t, n_s = m.shape
        fig.add_trace(grid_heatmap(m, name, f"{name}<br>student layer %{{x}} vs teacher layer %{{y}}<br>CKA %{{z:.3f}}"
                                            "<extra></extra>"), row=1, col=col)
        shown = [(s, t) for s, t in pairs if s < n_s and t < n_t]
        if shown:
            fig.add_trace(go.Scatter(
                x=[s for s, _ in shown], y=[t for _, t in shown], mode="markers", name=PAIR_MARK,
                legendgroup="pairs", showlegend=col == 1,
                marker=dict(symbol="square-open", size=max(6, min(16, 300 // max(n_t, 1))), color=STUDENT_AFTER,
                            line=dict(width=2.5, color=STUDENT_AFTER)),
                customdata=[[float(m[t, s])] for s, t in shown],
                hovertemplate="mapped pair %{x}:%{y}<br>CKA %{customdata[0]:.3f}<extra></extra>"), row=1, col=col)
        fig.update_xaxes(title_text="student layer", range=[-0.5, n_s - 0.5], showgrid=False, zeroline=False,
                         dtick=1 if n_s <= 12 else (2 if n_s <= 24 else 5), row=1, col=col)
        fig.update_yaxes(title_text="teacher layer" if col == 1 else None, range=[-0.5, n_t - 0.5],
                         showgrid=False, zeroline=False, dtick=1 if n_t <= 12 else (2 if n_t <= 24 else 5),
                         row=1, col=col)
    apply_layout(fig, title, height=max(380, 200 + 14 * max(m.shape[0] for m in mats.values())))
    fig.update_layout(coloraxis=dict(colorscale=CKA_SCALE, cmin=0.0, cmax=1.0,
                                     colorbar=dict(title=dict(text="linear CKA", side="right"), thickness=14,
                                                   len=0.8)),
                      plot_bgcolor="#e6e6e6")
    return fig


def pair_similarity_bars(layer_pairs: Sequence[Sequence[int]], cka: dict[str, Sequence[float]],
                         cosine: dict[str, Sequence[float]] | None = None, title: str = "") -> go.Figure:
    """Per mapped pair (x, 's:t'): grouped bars of each model's CKA (left panel) and, given a FitNets
    projection, the mean cosine similarity of the projected student state to the teacher's (right)."""
    labels = [pair_label(p) for p in layer_pairs]
    panels = ["Linear CKA of the mapped pairs"] + (["Cosine after the FitNets projection"] if cosine else [])
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=panels, horizontal_spacing=0.1)
    for col, values in enumerate([cka] + ([cosine] if cosine else []), start=1):
        for i, (name, ys) in enumerate(values.items()):
            ys = [float(y) for y in ys]
            if len(ys) != len(labels):
                raise ValueError(f"{name!r}: {len(ys)} values for {len(labels)} layer pairs")
            fig.add_trace(go.Bar(x=labels, y=ys, name=name, legendgroup=name, showlegend=col == 1 or name not in cka,
                                 marker_color=model_color(name, i),
                                 hovertemplate=f"{name}<br>pair %{{x}}<br>%{{y:.3f}}<extra></extra>"), row=1, col=col)
        fig.update_xaxes(title_text="layer pair (student:teacher)", type="category", row=1, col=col)
    fig.update_yaxes(title_text="linear CKA", range=[0, 1.02], row=1, col=1)
    if cosine:
        lowest = min([0.0] + [float(y) for ys in cosine.values() for y in ys if math.isfinite(float(y))])
        fig.update_yaxes(title_text="cosine similarity", range=[max(-1.0, lowest - 0.05), 1.02], row=1, col=2)
    apply_layout(fig, title, height=380)
    fig.update_layout(barmode="group")
    return fig


def pair_cka_over_steps(steps: Sequence[int], pair_cka: Sequence[Sequence[float]],
                        layer_pairs: Sequence[Sequence[int]], title: str = "") -> go.Figure:
    """One line per mapped pair (coloured from the shallowest to the deepest student layer): its
    CKA at each session snapshot; with several pairs, their mean as a thick dashed line.
    steps: (n,); pair_cka: (n, n_pairs), from the session's probe events."""
    steps = [int(s) for s in steps]
    values = np.asarray(pair_cka, dtype=float).reshape(len(steps), -1) if steps else np.zeros((0, len(layer_pairs)))
    if values.shape[1] != len(layer_pairs):
        raise ValueError(f"{values.shape[1]} CKA values per step for {len(layer_pairs)} layer pairs")
    fig = go.Figure()
    n = len(layer_pairs)
    colors = sample_colorscale("Viridis", [i / max(1, n - 1) * 0.9 for i in range(n)]) if n else []
    mode = "lines+markers" if len(steps) > 1 else "markers"
    for i, pair in enumerate(layer_pairs):
        name = pair_label(pair)
        fig.add_trace(go.Scatter(x=steps, y=values[:, i].tolist(), mode=mode, name=name, showlegend=True,
                                 line=dict(color=colors[i], width=1.6), marker=dict(size=6),
                                 hovertemplate=f"pair {name}<br>step %{{x}}<br>CKA %{{y:.3f}}<extra></extra>"))
    if n > 1 and steps:
        fig.add_trace(go.Scatter(x=steps, y=values.mean(1).tolist(), mode=mode, name="mean of the pairs",
                                 line=dict(color="#222", width=3.5, dash="dash"), marker=dict(size=8),
                                 hovertemplate="mean<br>step %{x}<br>CKA %{y:.3f}<extra></extra>"))
    apply_layout(fig, title, height=max(380, 160 + 21 * (n + (n > 1))))
    fig.update_xaxes(title_text="step", rangemode="tozero", dtick=1 if steps and max(steps) <= 10 else None)
    fig.update_yaxes(title_text="linear CKA of the pair", range=[0, 1.02])
    fig.update_layout(legend=dict(orientation="v", x=1.02, xanchor="left", y=1, yanchor="top", font=dict(size=11),
                                  tracegroupgap=0, title=dict(text="pair<br>(student:teacher)")),
                      margin=dict(r=160))
    if not steps:
        fig.update_xaxes(range=[0, 10])
        fig.add_annotation(text="No snapshots yet: run a session in Distill", xref="paper", yref="paper", x=0.5,
                           y=0.5, showarrow=False, font=dict(size=16, color="#666"))
    return fig


def snapshots_to_series(probes: Sequence[dict[str, Any]]) -> tuple[list[int], list[list[float]], list[list[int]]]:
    """Session probe events -> (steps, pair_cka per step, layer_pairs): the events that carry
    `pair_cka` (sessions with the teacher loaded), in step order, one per step (the last wins)."""
    by_step: dict[int, dict[str, Any]] = {}
    for event in probes:
        if event.get("pair_cka") is not None and event.get("layer_pairs") is not None:
            by_step[int(event["step"])] = event
    steps = sorted(by_step)
    pairs = [list(p) for p in by_step[steps[-1]]["layer_pairs"]] if steps else []
    steps = [s for s in steps if len(by_step[s]["pair_cka"]) == len(pairs)]
    return steps, [list(by_step[s]["pair_cka"]) for s in steps], pairs
