"""`distill` under `accelerate launch` with two CPU processes (DDP over gloo): both ranks end with the
same student, only the main process writes and prints, and the data-parallel run trains on the same
batches as a single process (each rank takes half of every batch; gradients are averaged)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from distill_core.distributed import state_checksum
from tests.conftest import REPO


def accelerate_launch(*args, processes=2, timeout=240):
    command = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch", "--multi_gpu",
               "--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "--main_process_port", "0", "-m", "distill_core", *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


def test_two_cpu_processes_agree_and_only_the_main_one_writes(tiny_config, tmp_path):
    from distill_core.session import run_session

    # FitNets on too: its projection sits outside the DDP wrapper and is averaged apart
    config = tiny_config.with_overrides({"steps": 3, "batch_size": 4, "eval_every": 0, "probe_every": 0,
                                         "eval_max_tokens": 64, "hidden_weight": 0.5, "hidden_loss": "cosine",
                                         "checkpoint_every": 2})
    config_path = tmp_path / "tiny.yaml"
    config.to_yaml(config_path)
    out = tmp_path / "ddp"
    result = accelerate_launch("distill", "--config", str(config_path), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)  # printed once: rank 1 prints nothing
    assert summary == json.loads((out / "summary.json").read_text())
    dist = summary["distributed"]
    assert dist["processes"] == 2 and dist["backend"] == "gloo"
    assert len(dist["student_sha256"]) == 2 and dist["ranks_agree"]
    assert dist["student_sha256"][0] == dist["student_sha256"][1]
    assert result.stderr.count("step    3/3") == 1 and "over 2 processes (gloo)" in result.stderr
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if m["kind"] == "step"] == [1, 2, 3]
    assert not (out / "checkpoint").exists() and (out / "student" / "model.safetensors").is_file()

    # the saved student is the one both ranks hold
    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(out / "student")
    assert state_checksum(saved) == dist["student_sha256"][0].split("+")[0]

    # and it is the single-process run's student up to float summation order
    single = list(run_session(config, tmp_path / "single"))[-1]["summary"]
    assert summary["final_loss"] == pytest.approx(single["final_loss"], rel=1e-4)
    assert summary["after"]["kl_to_teacher"] == pytest.approx(single["after"]["kl_to_teacher"], rel=1e-4)
    a, b = load_file(out / "student" / "model.safetensors"), load_file(tmp_path / "single" / "student" / "model.safetensors")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4


def test_batch_size_must_split_over_the_processes():
    from distill_core.distributed import Processes
    from distill_core.errors import DistillError

    Processes().check_batch_size(3)  # one process: anything goes
    with pytest.raises(DistillError, match="batch_size 3 does not split evenly over 2 processes"):
        Processes(world=2).check_batch_size(3)
    assert Processes(world=2, rank=1).shard(torch.arange(6)).tolist() == [1, 3, 5]
