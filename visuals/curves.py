"""Training curves: loss terms per step and held-out perplexity per evaluation."""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .theme import PALETTE, STUDENT_AFTER, STUDENT_BEFORE, TEACHER, apply_layout


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _loss_terms(steps: list[dict]) -> list[str]:
    """'loss' first, then every other '*_loss' key in order of first appearance."""
    terms: list[str] = []
    for record in steps:
        for key in record:
            if (key == "loss" or key.endswith("_loss")) and key not in terms:
                terms.append(key)
    return sorted(terms, key=lambda key: key != "loss")


def _ppl(record: dict, ppl_key: str, loss_key: str) -> float | None:
    """Perplexity from the record, or exp(mean NLL) when only the loss was logged."""
    if _finite(record.get(ppl_key)):
        return float(record[ppl_key])
    if _finite(record.get(loss_key)):
        return math.exp(min(float(record[loss_key]), 700.0))  # cap avoids overflow
    return None


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Labelled ticks for a log axis spanning [lo, hi]: 1-2-5 steps (powers of ten only past
    3 decades); over a narrow range, five log-spaced values rounded to two significant digits.
    (plotly's own log ticks over < 2 decades are unlabeled minor digits.)"""
    mantissas = (1.0,) if hi / lo > 1e3 else (1.0, 2.0, 5.0)
    ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
             for m in mantissas]
    inside = [t for t in ticks if lo <= t <= hi]
    if len(inside) >= 3 or hi <= lo:
        return inside or [lo]
    step = (math.log10(hi) - math.log10(lo)) / 4
    return sorted({float(f"{10 ** (math.log10(lo) + i * step):.2g}") for i in range(5)})


def loss_curves(history: list[dict], title: str = "") -> go.Figure:
    """Left: every loss term (`loss` as "total", each `*_loss` key) vs step.
    Right: held-out perplexity (and train perplexity, if logged) vs step on a log axis.

    `history` holds the training loop's events; records with kind "step" and "eval" are used,
    others ignored. Perplexity falls back to exp(held_out_loss) / exp(val_loss). A `teacher_ppl`
    in any eval record is drawn as a dotted reference line: the student's target."""
    steps = [r for r in history if r.get("kind") == "step" and _finite(r.get("step"))]
    evals = [r for r in history if r.get("kind") == "eval" and _finite(r.get("step"))]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Training loss terms", "Held-out evaluation"),
                        horizontal_spacing=0.1)

    for i, key in enumerate(_loss_terms(steps)):
        points = sorted((r["step"], r[key]) for r in steps if _finite(r.get(key)))
        name = "total" if key == "loss" else key.removesuffix("_loss")
        fig.add_trace(go.Scatter(
            x=[p[0] for p in points], y=[p[1] for p in points], name=name,
            mode="lines" if len(points) > 1 else "markers",  # one point draws no line
            line=dict(color=PALETTE[i % len(PALETTE)], width=3 if key == "loss" else 1.8),
            hovertemplate=f"{name}<br>step %{{x}}<br>%{{y:.4f}}<extra></extra>"), row=1, col=1)

    for label, ppl_key, loss_key, color, dash in (
            ("held-out text ppl", "held_out_ppl", "held_out_loss", STUDENT_AFTER, "solid"),
            ("corpus validation ppl", "val_ppl", "val_loss", STUDENT_BEFORE, "dash")):
        points = sorted((r["step"], p) for r in evals if (p := _ppl(r, ppl_key, loss_key)) is not None)
        if points:
            fig.add_trace(go.Scatter(
                x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers", name=label,
                line=dict(color=color, width=2, dash=dash), marker=dict(size=8),
                hovertemplate=f"{label}<br>step %{{x}}<br>%{{y:.2f}}<extra></extra>"), row=1, col=2)

    teacher_ppl = next((r["teacher_ppl"] for r in evals if _finite(r.get("teacher_ppl"))), None)
    if teacher_ppl is not None:
        last_step = max(r["step"] for r in steps + evals)
        fig.add_trace(go.Scatter(
            x=[0, max(last_step, 1)], y=[teacher_ppl, teacher_ppl], mode="lines", name="teacher (held-out text)",
            line=dict(color=TEACHER, width=1.5, dash="dot"),
            hovertemplate="teacher<br>%{y:.2f}<extra></extra>"), row=1, col=2)

    fig.update_xaxes(title_text="step", rangemode="tozero")
    fig.update_yaxes(title_text="loss (nats)", row=1, col=1)
    fig.update_yaxes(title_text="perplexity (log scale)", type="log", row=1, col=2)
    ppl_values = [y for trace in fig.data if trace.xaxis == "x2" for y in trace.y]
    if ppl_values and min(ppl_values) > 0:
        ticks = _log_ticks(min(ppl_values), max(ppl_values))
        fig.update_yaxes(tickvals=ticks, ticktext=[f"{t:g}" for t in ticks], row=1, col=2)
    apply_layout(fig, title, height=420)
    if not steps and not evals:
        fig.update_xaxes(range=[0, 10], showticklabels=False, showgrid=False, zeroline=False)
        fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False)
        fig.update_yaxes(range=[0, 1], row=1, col=1)
        fig.update_yaxes(range=[0, 2], row=1, col=2)  # log axis: 10^0 .. 10^2
        fig.add_annotation(text="No steps yet — press Run", xref="paper", yref="paper", x=0.5, y=0.5,
                           showarrow=False, font=dict(size=18, color="#666"))
    elif not ppl_values:  # plotly.js skips drawing a subplot with no traces, so place it in paper coords
        fig.add_annotation(text="No evaluation yet", xref="paper", yref="paper",
                           x=sum(fig.layout.xaxis2.domain) / 2, y=0.5,
                           showarrow=False, font=dict(size=14, color="#888"))
    return fig


def recipe_curves(curves: dict[str, list[tuple[float, float]]], teacher_ppl: float | None = None,
                  title: str = "Held-out perplexity, recipe by recipe") -> go.Figure:
    """Several recipes' held-out perplexity against step on one set of axes (log scale), one labelled line
    each, in the order given; the teacher's perplexity a dotted reference line.

    `curves` maps a recipe's name to its (step, perplexity) points: a live comparison's evaluations, or an
    earlier one's rows read back (before at step 0, after at its last step). A recipe with no finite point yet
    keeps its legend entry (no line), so every picked recipe is named from the start."""
    fig = go.Figure()
    values: list[float] = []
    last_step = 0.0
    ends: list[tuple[float, float, str, str]] = []  # (step, log10 perplexity, name, colour) at each line's end
    for i, (name, points) in enumerate(curves.items()):
        points = sorted((s, p) for s, p in points if _finite(s) and _finite(p) and p > 0)
        values += [p for _, p in points]
        last_step = max([last_step, *(s for s, _ in points)])
        color = PALETTE[(i + 1) % len(PALETTE)]
        fig.add_trace(go.Scatter(
            x=[s for s, _ in points], y=[p for _, p in points], name=name, mode="lines+markers",
            line=dict(color=color, width=2.5), marker=dict(size=8),
            hovertemplate=f"{name}<br>step %{{x}}<br>perplexity %{{y:.2f}}<extra></extra>"))
        if points:  # the name at the line's end: the legend is not the only way to tell lines apart
            ends.append((points[-1][0], math.log10(points[-1][1]), name, color))
    shown = values + ([teacher_ppl] if _finite(teacher_ppl) and teacher_ppl > 0 else [])  # the y axis's extent
    span = math.log10(max(shown) / min(shown)) if shown else 1.0
    for step, y, name, color in _spread_labels(ends, gap=max(span, 0.1) * 0.06):
        fig.add_annotation(x=step, y=y, text=name, showarrow=False, xanchor="left", xshift=8,
                           font=dict(size=12, color=color))
    if _finite(teacher_ppl) and teacher_ppl > 0:
        values.append(teacher_ppl)
        fig.add_trace(go.Scatter(x=[0, max(last_step, 1)], y=[teacher_ppl, teacher_ppl], mode="lines",
                                 name="teacher", line=dict(color=TEACHER, width=1.5, dash="dot"),
                                 hovertemplate="teacher<br>%{y:.2f}<extra></extra>"))
    apply_layout(fig, title, height=440)
    fig.update_xaxes(title_text="step", rangemode="tozero")
    fig.update_yaxes(title_text="held-out perplexity ↓ (log scale)", type="log")
    if values:
        ticks = _log_ticks(min(values), max(values))
        fig.update_yaxes(tickvals=ticks, ticktext=[f"{t:g}" for t in ticks])
        fig.update_xaxes(range=[0, max(last_step, 1) * 1.18])  # room for the names at the lines' ends
    else:
        fig.update_xaxes(range=[0, 10], showticklabels=False, showgrid=False, zeroline=False)
        fig.update_yaxes(range=[0, 2], showticklabels=False, showgrid=False, zeroline=False)
        fig.add_annotation(text="No evaluation yet — pick recipes and press Compare", xref="paper", yref="paper",
                           x=0.5, y=0.5, showarrow=False, font=dict(size=18, color="#666"))
    return fig


def _spread_labels(ends: list[tuple[float, float, str, str]], gap: float) -> list[tuple[float, float, str, str]]:
    """The end labels, moved apart (upwards, in log10 units) so that no two are closer than `gap`: lines that end
    together (recipes that learnt the same) keep readable names."""
    placed: list[tuple[float, float, str, str]] = []
    for step, y, name, color in sorted(ends, key=lambda end: end[1]):
        if placed and y - placed[-1][1] < gap:
            y = placed[-1][1] + gap
        placed.append((step, y, name, color))
    return placed


def rows_to_curves(rows: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """An earlier comparison's rows (ablation.json) as `recipe_curves` points: held-out perplexity before (step 0)
    and after (its last step), the only two its file keeps."""
    return {str(row.get("name", "?")): [(0, row.get("ppl_before")), (row.get("steps") or 0, row.get("ppl"))]
            for row in rows}
