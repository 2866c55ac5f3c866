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
