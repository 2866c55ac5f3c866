"""Distill Studio: the Gradio app. This file assembles the page from one module per tab (ui/) and serves it;
the engine is distill_core (through distill_core.api), the figures are visuals.

    python app.py     # serves on 127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT override)

API names (gradio_client): compatibility, preset, layer_map, run_session, stop, size_sweep, size_plot, compare,
compare_plot, lesson, save_recipe, dark_knowledge, attention, similarity, evaluate, generate, grade, export,
augment_preview (README, App API).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

import gradio as gr

from distill_core import api
from ui.attention import build_attention
from ui.compare import build_compare
from ui.common import DISTILLATION_QUEUE, PRIVATE, SESSION_GPU_S, Inputs, UserSession, prose, public_note
from ui.dark import build_dark
from ui.distill import DistillTab, build_distill
from ui.evaluate import build_evaluate
from ui.grading import build_grading
from ui.runs import browser_memory, restore
from ui.setup import Pair, build_setup
from ui.similarity import build_similarity
from ui.sizes import build_sizes

__all__ = ["DISTILLATION_QUEUE", "SESSION_GPU_S", "Tabs", "build_app", "build_tabs", "free_port", "launch_options",
           "serve"]


@dataclass
class Tabs:
    """The page's parts that other code drives: the per-browser state, the pair picked in Setup, and the
    dict inputs (by name) of the handlers that take one dict."""

    user: gr.State
    pair: Pair
    distill: DistillTab
    sizes: Inputs
    compare: Inputs
    attention: Inputs


def build_tabs() -> Tabs:
    """The page, in order, inside an open gr.Blocks: the header, then one tab each."""
    user = gr.State(UserSession())  # one per browser session (gr.State deep-copies it)
    memory = browser_memory()  # the browser's runs, across reloads
    gr.Markdown(prose("studio", "header"))
    gr.Markdown(public_note(), visible=api.public_mode(), elem_id="public-note")
    with gr.Tab("Setup", id="setup"):
        pair = build_setup()
    with gr.Tab("Distill", id="distill"):
        distill = build_distill(pair, user, memory)
    with gr.Tab("Student size", id="sizes"):
        sizes = build_sizes(distill.recipe)
    with gr.Tab("Compare recipes", id="compare"):
        compare = build_compare(distill.recipe)
    with gr.Tab("Dark knowledge", id="dark"):
        build_dark(pair, user)
    with gr.Tab("Attention", id="attention"):
        attention = build_attention(pair, user)
    with gr.Tab("Similarity", id="similarity"):
        build_similarity(pair, user)
    with gr.Tab("Evaluate", id="evaluate"):
        build_evaluate(pair, user)
    with gr.Tab("Teacher grades", id="grading"):
        build_grading(pair, user)
    return Tabs(user, pair, distill, sizes, compare, attention)


def build_app() -> gr.Blocks:
    with gr.Blocks(title="Distill Studio") as demo:
        tabs = build_tabs()
        earlier = tabs.distill.earlier  # a reload reopens the browser's last run
        demo.load(restore, [earlier.memory, tabs.user], earlier.outputs, show_progress="hidden", **PRIVATE)
    return demo


def launch_options() -> dict[str, Any]:
    """Extra `launch` arguments: in public mode the upload size cap, which Gradio enforces before a file
    reaches a handler."""
    options: dict[str, Any] = {}
    if api.public_mode():
        options["max_file_size"] = api.public_limits().upload_mb * 2**20
    return options


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def serve(host: str = "127.0.0.1", port: int | None = None, block: bool = True, quiet: bool = False
          ) -> tuple[gr.Blocks, str]:
    """Build the app, queue it and serve it on host:port (None: a free port). With `block` this returns when
    the server stops; without, at once (tests, scripts/load_test.py: `demo.close()` stops it). Returns the
    Blocks and the app's URL."""
    port = free_port(host) if port is None else port
    demo = build_app().queue()
    demo.launch(server_name=host, server_port=port, prevent_thread_lock=not block, quiet=quiet, **launch_options())
    return demo, f"http://{host}:{port}/"


if __name__ == "__main__":
    serve(os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
