"""The engine's public API: every name it promises is there, and a run folder per session."""

from distill_core import api


def test_every_promised_name_is_there():
    missing = [name for name in api.__all__ if not hasattr(api, name)]
    assert missing == []


def test_a_fresh_run_folder_per_session(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_RUNS", str(tmp_path))
    first, second = api.new_run_dir(), api.new_run_dir()
    assert first != second and first.parent == tmp_path and first.is_dir()
    assert [p.name for p in first.iterdir()] == ["access.json"]  # only the digest of the run's token
