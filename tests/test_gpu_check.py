"""The GPU check script, run here at tiny scale: the same four steps as on a GPU, one JSON with every figure."""

import json
import os
import subprocess
import sys

from tests.conftest import REPO


def test_gpu_check_runs_every_step_and_writes_one_json(bundled_dir, tmp_path):
    out = tmp_path / "gpu_check.json"
    result = subprocess.run(["bash", "scripts/gpu_check.sh", str(out), "--steps", "2"], cwd=REPO, capture_output=True,
                            text=True, timeout=600, env={**os.environ, "PYTHON": sys.executable})
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["card"] == "cpu" and figures["scale"] == "tiny"
    assert set(figures["wall_s"]) == {"bench", "session", "dark_knowledge", "attention", "similarity", "evaluate"}
    assert figures["bench"]["rows"].keys() >= {"reference", "engine"} and figures["bench"]["speedup"] > 0
    assert figures["session"]["summary"]["steps_done"] == 2 and figures["session"]["median_tokens_per_s"] > 0
    assert set(figures["evaluate"]) == {"teacher", "student (before)", "student (after)"}
    assert figures["attention"]["teacher"][0] == 4  # (layers, heads, t, t) of the tiny teacher
    assert "keeps" in figures["trade"] and json.loads(result.stdout.strip().splitlines()[-1])["card"] == "cpu"
