"""Sharing a run: its owner makes a read-only token for it, and whoever has the link opens the run's views
(dark knowledge, attention, similarity, evaluate, the curves) with their own texts, and nothing more: a shared
run is never started, stopped, deleted or exported through its link, unless its owner allowed export.

    runs/<id>/share.json   {"share_sha256": ..., "allow_export": false, "shared_at": <unix time>}

The run folder keeps only the share token's sha256, as it keeps only its owner token's (runs.py); sharing
again makes a new token (the old link stops working), and unsharing removes the file. A link is the app's
address with `?run=<id>&share=<token>` (`link_query`).
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from distill_core.errors import DistillError
from distill_core.paths import write_text_atomic
from distill_core.runs import token_digest, digest_matches, open_run, owner_token_opens, read_json, run_path

SHARE_FILE = "share.json"
OWNER, VIEWER = "owner", "viewer"
"""Who opened a run: the token it was started with, or a share token."""


def _check_owner(run_id: str, owner_token: str | None, doing: str) -> Path:
    path = run_path(run_id)
    if not owner_token_opens(path, owner_token):
        raise DistillError(f"only the owner of run {path.name} can {doing} (its own token, not a share link)")
    return path


def share_run(run_id: str, owner_token: str | None, allow_export: bool = False) -> str:
    """Share a finished run read-only: a new share token (the run's earlier link stops working). Only its
    owner's token may; `allow_export` lets visitors export its student too."""
    path = _check_owner(run_id, owner_token, "share it")
    open_run(path.name, owner_token)  # a finished run with a saved student, or a message saying why not
    token = secrets.token_urlsafe(16)
    record = {"share_sha256": token_digest(token), "allow_export": bool(allow_export), "shared_at": time.time()}
    write_text_atomic(path / SHARE_FILE, json.dumps(record))
    return token


def unshare_run(run_id: str, owner_token: str | None) -> None:
    """Stop sharing a run: its link no longer opens it. Only its owner's token may."""
    path = _check_owner(run_id, owner_token, "stop sharing it")
    (path / SHARE_FILE).unlink(missing_ok=True)


def sharing(path: Path) -> dict[str, Any] | None:
    """A run folder's share record (`allow_export`, `shared_at`), or None when it is not shared."""
    record = read_json(Path(path) / SHARE_FILE)
    return record if "share_sha256" in record else None


def open_for(run_id: str, token: str | None) -> dict[str, Any]:
    """Open a finished run with its owner's token or its share token: what `runs.open_run` gives, plus `role`
    (OWNER or VIEWER) and `allow_export` (always for its owner; for a visitor, as its owner chose)."""
    path = run_path(run_id)
    if owner_token_opens(path, token):
        return {**open_run(path.name, token), "role": OWNER, "allow_export": True}
    record = sharing(path)
    if record is None or not digest_matches(record.get("share_sha256"), token):
        open_run(path.name, None, need_token=False)  # no such finished run: that message first
        raise DistillError(f"the token does not open run {path.name}: it is neither the run's own token nor its "
                           "current share link (an owner who shares again makes a new link)")
    return {**open_run(path.name, None, need_token=False), "role": VIEWER,
            "allow_export": bool(record.get("allow_export"))}


def link_query(run_id: str, share_token: str) -> str:
    """The query string of a run's share link (appended to the app's address)."""
    return urlencode({"run": run_id, "share": share_token})
