"""Where things are kept, and the variables that move them."""

from distill_core import paths


def test_cache_and_runs_follow_their_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DISTILL_STUDIO_RUNS", str(tmp_path / "runs"))
    assert paths.cache_dir() == tmp_path / "cache" and (tmp_path / "cache").is_dir()  # made on first use
    assert paths.runs_dir() == tmp_path / "runs"
    monkeypatch.delenv("DISTILL_STUDIO_RUNS")
    assert paths.runs_dir() == paths.ROOT / "runs"


def test_assets_are_the_projects():
    assert (paths.ASSETS / "prompts.txt").is_file() and (paths.CONFIGS / "quickstart.yaml").is_file()


def test_a_project_file_is_named_relative_to_the_root_and_an_empty_field_stays_empty():
    from distill_core.paths import ROOT, relative_to_project

    assert relative_to_project(str(ROOT / "assets" / "prompts.txt")) == "assets/prompts.txt"
    assert relative_to_project("/etc/hostname") == "/etc/hostname"
    assert relative_to_project("") == ""  # "no file": not the project's root


def test_an_atomic_write_replaces_the_file_whole_and_a_failed_one_keeps_the_old(tmp_path, monkeypatch):
    import threading
    from pathlib import Path

    import pytest

    target = tmp_path / "cache" / "entry.json"
    paths.write_text_atomic(target, "first")  # the folder is made
    paths.write_text_atomic(target, "second é")
    assert target.read_text(encoding="utf-8") == "second é"
    assert [p.name for p in target.parent.iterdir()] == ["entry.json"]  # no temporary file left

    def fail(self, other):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "replace", fail)
    with pytest.raises(OSError):
        paths.write_text_atomic(target, "third")
    assert target.read_text(encoding="utf-8") == "second é"
    assert [p.name for p in target.parent.iterdir()] == ["entry.json"]
    monkeypatch.undo()

    # writers in several threads at once: each renames its own whole file, so the last one stands whole
    texts = [f"writer {i} " * 2000 for i in range(8)]
    threads = [threading.Thread(target=paths.write_text_atomic, args=(target, t)) for t in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert target.read_text(encoding="utf-8") in texts
    assert [p.name for p in target.parent.iterdir()] == ["entry.json"]
