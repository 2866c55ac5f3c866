"""The bench command: both loops run on the same batch and the last line is the JSON contract."""

import json

from distill_core.__main__ import main


def test_bench_prints_both_loops_and_the_json_line(tiny_config, tmp_path, capsys):
    config = tmp_path / "bench.yaml"
    tiny_config.with_overrides({"batch_size": 2, "seq_len": 16}).to_yaml(config)
    assert main(["bench", "--config", str(config), "--repeats", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert set(result) == {"device", "engine_tokens_per_s", "reference_tokens_per_s", "speedup", "engine_peak_mb",
                           "reference_peak_mb", "memory_ratio"}
    assert result["engine_tokens_per_s"] > 0 and result["reference_tokens_per_s"] > 0
    assert result["speedup"] == result["engine_tokens_per_s"] / result["reference_tokens_per_s"] or \
        abs(result["speedup"] - result["engine_tokens_per_s"] / result["reference_tokens_per_s"]) < 1e-9
    assert any(line.startswith("reference") for line in lines) and any(line.startswith("engine") for line in lines)


def test_bench_with_the_teacher_cache_targets(tiny_config, tmp_path, capsys):
    config = tmp_path / "bench.yaml"
    tiny_config.with_overrides({"batch_size": 2, "seq_len": 16, "teacher_cache": True, "top_k": 8}).to_yaml(config)
    assert main(["bench", "--config", str(config), "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "'teacher_cache': True" in out
    assert main(["bench", "--config", str(config), "--repeats", "0"]) == 2


def test_bench_on_random_weight_shapes(tiny_config, tmp_path, capsys):
    """--shapes builds the models from configs (the GPU comparison's path, here with tiny shapes)."""
    from distill_core.bench import SHAPES, peak_flops

    config = tmp_path / "bench.yaml"
    tiny_config.with_overrides({"batch_size": 2, "seq_len": 16, "freeze_embeddings": False}).to_yaml(config)
    assert main(["bench", "--config", str(config), "--shapes", "tiny", "--repeats", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "shapes tiny" in lines[0] and json.loads(lines[-1])["speedup"] > 0
    rows = [line.split()[0] for line in lines[2:-2]]
    assert rows == ["reference", "engine"]  # on CPU: no compiled variant, no MFU
    assert lines[2].split()[-1] == "-"
    t, s = SHAPES["tiny"]
    assert t["hidden_size"] == 64 and s["hidden_size"] == 32
    assert peak_flops("NVIDIA H100 PCIe") == 756e12 and peak_flops("NVIDIA H200") == 989.4e12
    assert peak_flops("Some other card") is None
    assert main(["bench", "--config", str(config), "--shapes", "nope"]) == 2
