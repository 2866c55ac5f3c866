"""Exporting a finished run: the student as a zip that loads, the config that reruns it, safe names."""

import zipfile

import pytest
from transformers import AutoModelForCausalLM

from distill_core.errors import DistillError
from distill_core.export import export_config, export_run, export_student, safe_filename
from distill_core.session import run_session


def test_export_zip_loads_and_names_are_safe(tiny_config, tmp_path):
    run = tmp_path / "run"
    list(run_session(tiny_config.with_overrides({"steps": 2}), run))
    archive = export_student(run, tmp_path / "out", name="../../etc/passwd")
    assert archive.parent == tmp_path / "out" and archive.name == "passwd.zip"
    with zipfile.ZipFile(archive) as z:
        z.extractall(tmp_path / "unzipped")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "unzipped" / "passwd")
    assert model.config.num_hidden_layers == 2
    assert export_config(run).read_text().startswith("teacher:")
    assert safe_filename("a b/../c?.zip") == "c-.zip"
    with pytest.raises(DistillError, match="no saved student"):
        export_student(tmp_path / "nothing", tmp_path)


def test_export_run_gives_the_zip_and_the_config_side_by_side(tiny_config, tmp_path):
    run = tmp_path / "20260101-run"
    list(run_session(tiny_config.with_overrides({"steps": 1, "eval_every": 0, "probe_every": 0}), run))
    archive, config = export_run(run, tmp_path / "dest")
    assert (archive.name, config.name) == ("20260101-run-student.zip", "20260101-run-config.yaml")
    assert config.read_text() == (run / "config.yaml").read_text()


def test_the_exported_config_reruns_from_another_copy_of_the_project(tiny_config, tmp_path):
    """config.yaml names the project's own files relative to its root, so the run's command works from a copy
    of the project in another folder (here: started from its root and from elsewhere)."""
    import shutil
    import subprocess
    import sys

    from tests.conftest import REPO

    run = tmp_path / "run"
    list(run_session(tiny_config.with_overrides({"steps": 1, "eval_every": 0, "probe_every": 0}), run))
    config_text = (run / "config.yaml").read_text()
    assert "eval_text: assets/texts/heldout.txt" in config_text and str(REPO) not in config_text
    copy = tmp_path / "elsewhere" / "distill-studio"
    for part in ("distill_core", "assets"):
        shutil.copytree(REPO / part, copy / part)
    result = subprocess.run([sys.executable, "-m", "distill_core", "distill", "--config", str(run / "config.yaml"),
                             "--out", str(tmp_path / "again")], cwd=copy, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "again" / "student" / "README.md").is_file()
