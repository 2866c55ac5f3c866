"""The hub as this machine sees it: offline mode answers at once, and the bundled GGUF is found."""

import socket

from distill_core import hub


def test_offline_mode_answers_without_a_connection(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("a connection was attempted while offline")

    monkeypatch.setattr(socket, "create_connection", no_network)
    assert hub.hub_offline() and not hub.hub_reachable() and not hub.hub_reachable_within()


def test_an_unanswered_check_is_false(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def refused(*args, **kwargs):
        raise OSError("connection refused")

    monkeypatch.setattr(socket, "create_connection", refused)
    assert hub.hub_reachable_within() is False


def test_the_bundled_gguf_comes_from_its_package():
    path = hub.bundled_gguf_path()
    assert path is not None and path.name == hub.BUNDLED_GGUF and path.stat().st_size > 50_000_000
