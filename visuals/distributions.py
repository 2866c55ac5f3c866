"""Per-position views of teacher vs student next-token distributions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from .theme import MONO_FONT, apply_layout, model_color

ACTUAL_MARK = "★ "
_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def display_token(s: str, max_len: int = 18) -> str:
    """Make a decoded token readable on an axis: '' -> '∅', leading/trailing spaces -> '␣',
    newline/tab/CR -> '\\n'/'\\t'/'\\r', other control chars -> '\\xNN', long tokens cut with '…'."""
    if s == "":
        return "∅"
    stripped = s.strip(" ")
    if not stripped:  # whitespace-only token: every space is visible
        return "␣" * len(s)
    lead, trail = len(s) - len(s.lstrip(" ")), len(s) - len(s.rstrip(" "))
    body = "".join(_ESCAPES.get(c, c if c.isprintable() else f"\\x{ord(c):02x}") for c in stripped)
    text = "␣" * lead + body + "␣" * trail
    return text if len(text) <= max_len else text[: max_len - 1] + "…"


def _percent(p: float) -> str:
    """0.0193 -> '1.9%', 0.00004 -> '<0.01%': softened distributions put small numbers on many tokens."""
    if not np.isfinite(p):
        return ""
    if p >= 0.1:
        return f"{p:.0%}"
    return f"{p:.1%}" if p >= 0.001 else ("<0.01%" if p < 0.0001 else f"{p:.2%}")


def _teacher_key(names: Sequence[str]) -> str:
    return next((n for n in names if "teacher" in n.lower()), names[0])


def next_token_bars(labels: list[str], probs_by_model: dict[str, Sequence[float]],
                    actual_label: str | None = None, title: str = "") -> go.Figure:
    """One horizontal-bar panel per model (dict order) over the same candidate tokens.

    labels: raw decoded candidate tokens (e.g. union of each model's top-k), shape (k,).
    probs_by_model: model name -> probability of each label, shape (k,).
    Rows are sorted by the teacher's probability (model named '*teacher*', else the first), highest
    on top; the actual next token gets a ★ label and a black outline. x range is shared: [0, 1.1*max]."""
    if not probs_by_model:
        raise ValueError("probs_by_model is empty")
    probs = {name: np.asarray(p, dtype=float).reshape(-1) for name, p in probs_by_model.items()}
    for name, p in probs.items():
        if p.shape != (len(labels),):
            raise ValueError(f"{name!r}: {p.shape[0]} probabilities for {len(labels)} labels")
    names = list(probs)
    order = np.argsort(-np.nan_to_num(probs[_teacher_key(names)], nan=-1.0), kind="stable")  # (k,)
    is_actual = [actual_label is not None and labels[i] == actual_label for i in order]
    ticktext = [(ACTUAL_MARK if hit else "") + display_token(labels[i]) for i, hit in zip(order, is_actual)]
    rows = list(range(len(order)))  # numeric y so duplicate display strings never merge
    x_max = float(np.nanmax([np.nanmax(p, initial=0.0) for p in probs.values()]))
    x_max = x_max * 1.1 if x_max > 0 else 1.0

    fig = make_subplots(rows=1, cols=len(names), shared_yaxes=True, subplot_titles=names,
                        horizontal_spacing=min(0.04, 0.5 / len(names)))
    for col, name in enumerate(names, start=1):
        color = model_color(name, col - 1)
        fig.add_trace(go.Bar(
            x=probs[name][order], y=rows, orientation="h", name=name, showlegend=False,
            marker=dict(color=color, line=dict(color=["#000" if hit else color for hit in is_actual],
                                               width=[2.5 if hit else 0 for hit in is_actual])),
            text=[_percent(v) for v in probs[name][order]], textposition="outside", cliponaxis=False,
            textfont=dict(size=11), customdata=ticktext,
            hovertemplate=f"{name}<br>%{{customdata}}: p = %{{x:.4f}}<extra></extra>"), row=1, col=col)
    fig.update_xaxes(range=[0, x_max], title_text="probability", tickformat=".2~%" if x_max < 0.05 else ".0%",
                     nticks=4, showgrid=True)
    fig.update_yaxes(tickvals=rows, ticktext=ticktext, autorange="reversed", showgrid=False,
                     tickfont=dict(family=MONO_FONT, size=13))
    if actual_label is not None and not any(is_actual):
        title = f"{title}  (actual next token {display_token(actual_label)} not among candidates)".strip()
    return apply_layout(fig, title, height=max(300, 120 + 26 * len(rows)))


def kl_strip(tokens: list[str], kl_by_model: dict[str, Sequence[float]], title: str = "") -> go.Figure:
    """Heatmap of KL(teacher || model) in nats: one row per model (dict order, first on top), one column
    per token position. NaN (e.g. the last position, which has no next token) shows as an empty grey cell."""
    if not kl_by_model:
        raise ValueError("kl_by_model is empty")
    names = list(kl_by_model)
    rows = [np.asarray(kl_by_model[n], dtype=float).reshape(-1) for n in names]
    for name, row in zip(names, rows):
        if row.shape != (len(tokens),):
            raise ValueError(f"{name!r}: {row.shape[0]} KL values for {len(tokens)} tokens")
    z = np.stack(rows)  # (n_models, n_tokens)
    finite = z[np.isfinite(z)]
    z_max = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    shown = [display_token(t) for t in tokens]
    positions = list(range(len(tokens)))  # numeric x: repeated tokens stay separate columns
    fig = go.Figure(go.Heatmap(
        z=np.where(np.isfinite(z), z, None), x=positions, y=names, zmin=0.0, zmax=z_max,
        colorscale="YlOrRd", xgap=1, ygap=3, hoverongaps=False,
        customdata=[shown] * len(names),
        colorbar=dict(title=dict(text="KL (nats)", side="right"), thickness=14),
        hovertemplate="%{y}<br>pos %{x}: %{customdata}<br>KL = %{z:.3f} nats<extra></extra>"))
    stride = max(1, -(-len(tokens) // 80))  # at most ~80 tick labels; hover still names every token
    fig.update_xaxes(tickvals=positions[::stride], ticktext=shown[::stride], title_text="token position",
                     showgrid=False,
                     tickfont=dict(family=MONO_FONT, size=12))
    fig.update_yaxes(autorange="reversed", title_text="model", showgrid=False)
    apply_layout(fig, title, height=max(240, 190 + 48 * len(names)))
    fig.update_layout(plot_bgcolor="#e6e6e6")  # shows through NaN cells and the row gaps
    return fig


def wrong_answer_ranks(labels: list[str], probs_by_model: dict[str, Sequence[float]], actual_label: str | None,
                       top: int = 10) -> dict[str, Any]:
    """The dark knowledge in ranks: the candidates other than the actual next token ("wrong answers"),
    ranked by each model (1 = the wrong answer it finds most likely, among the candidates).

    Returns labels (the teacher's `top` wrong answers, its most likely first), ranks[name] and
    probs[name] for those labels, and n_wrong (how many wrong candidates were ranked)."""
    if not probs_by_model:
        raise ValueError("probs_by_model is empty")
    probs = {name: np.nan_to_num(np.asarray(p, dtype=float).reshape(-1), nan=-1.0) for name, p in probs_by_model.items()}
    for name, p in probs.items():
        if p.shape != (len(labels),):
            raise ValueError(f"{name!r}: {p.shape[0]} probabilities for {len(labels)} labels")
    wrong = [i for i, label in enumerate(labels) if actual_label is None or label != actual_label]
    ranks: dict[str, dict[int, int]] = {}
    for name, p in probs.items():
        order = sorted(wrong, key=lambda i: (-p[i], i))
        ranks[name] = {index: rank for rank, index in enumerate(order, start=1)}
    teacher = _teacher_key(list(probs))
    shown = sorted(wrong, key=lambda i: ranks[teacher][i])[:top]
    return {"labels": [labels[i] for i in shown],
            "ranks": {name: [ranks[name][i] for i in shown] for name in probs},
            "probs": {name: [float(probs[name][i]) for i in shown] for name in probs},
            "n_wrong": len(wrong)}


def wrong_answer_ranking(labels: list[str], probs_by_model: dict[str, Sequence[float]], actual_label: str | None,
                         top: int = 10, title: str = "") -> go.Figure:
    """A bump chart of the teacher's ranking of the wrong answers next to each student's: one column per
    model (dict order, the teacher first), one line per wrong answer (the teacher's `top` most likely),
    at its rank under each model (1 on top). Flat lines: the student ranks the wrong answers as the
    teacher does, which is what soft targets teach; crossing lines: it does not."""
    result = wrong_answer_ranks(labels, probs_by_model, actual_label, top)
    names = list(probs_by_model)
    teacher = _teacher_key(names)
    names = [teacher] + [n for n in names if n != teacher]
    xs = list(range(len(names)))
    n = len(result["labels"])
    colors = sample_colorscale("Plasma", [0.85 * i / max(1, n - 1) for i in range(n)]) if n else []
    fig = go.Figure()
    for i, label in enumerate(result["labels"]):
        token = display_token(label)
        ranks = [result["ranks"][name][i] for name in names]
        probs = [result["probs"][name][i] for name in names]
        text = [f"{ranks[0]}. {token}"] + [""] * (len(names) - 2) + ([f"{token} ({ranks[-1]})"] if len(names) > 1 else [])
        fig.add_trace(go.Scatter(
            x=xs, y=ranks, mode="lines+markers+text", name=token, showlegend=False,
            line=dict(color=colors[i], width=2.5), marker=dict(size=11, color=colors[i], line=dict(color="white", width=1)),
            text=text, textposition=["middle left"] + ["top center"] * (len(names) - 2) + ["middle right"],
            textfont=dict(family=MONO_FONT, size=12, color=colors[i]), cliponaxis=False,
            customdata=[[name, _percent(p)] for name, p in zip(names, probs)],
            hovertemplate=f"{token}<br>%{{customdata[0]}}: rank %{{y}} among wrong answers, p = %{{customdata[1]}}"
                          "<extra></extra>"))
    worst = max([r for ranks in result["ranks"].values() for r in ranks] + [1])
    apply_layout(fig, title, height=max(320, 150 + 26 * min(worst, 20)))
    fig.update_xaxes(tickvals=xs, ticktext=names, range=[-0.9, len(names) - 1 + 0.9], showgrid=False, zeroline=False,
                     side="top")
    fig.update_yaxes(title_text="rank among the wrong answers (1 = most likely)", range=[worst + 0.7, 0.3],
                     dtick=1 if worst <= 15 else 5, zeroline=False)
    fig.update_layout(margin=dict(l=80, r=30))
    if not n:
        fig.add_annotation(text="No wrong answers among the candidates", xref="paper", yref="paper", x=0.5, y=0.5,
                           showarrow=False, font=dict(size=16, color="#666"))
    return fig
