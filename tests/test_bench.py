"""The bench command: both loops run on the same batch, the engine's loop is the session's own step, and
the last line is the JSON contract."""

import json

from distill_core import bench
from distill_core.__main__ import main
from distill_core.models import count_parameters, load_teacher
from distill_core.step import DistillStep
from distill_core.students import load_student


def test_bench_prints_both_loops_and_the_json_line(tiny_config, tmp_path, capsys):
    config = tmp_path / "bench.yaml"
    tiny_config.with_overrides({"batch_size": 2, "seq_len": 16}).to_yaml(config)
    assert main(["bench", "--config", str(config), "--repeats", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert set(result) == {"device", "engine_tokens_per_s", "reference_tokens_per_s", "speedup", "engine_peak_mb",
                           "reference_peak_mb", "memory_ratio"}
    assert result["engine_tokens_per_s"] > 0 and result["reference_tokens_per_s"] > 0
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
    assert peak_flops("Tesla T4", "fp16") == 65e12 and peak_flops("Tesla T4", "bf16") is None  # no bf16 cores
    assert main(["bench", "--config", str(config), "--shapes", "nope"]) == 2


def test_the_engine_loop_times_the_sessions_step(tiny_config, monkeypatch):
    """Each loop runs one warm-up step and `repeats` timed ones; the engine's are `DistillStep` calls (the
    session's step, not a copy), and the model FLOPs per token come from the two models' parameter counts."""
    calls = {"engine": 0, "reference": 0}
    real_step, real_reference = DistillStep.__call__, bench.reference_step

    def counted_step(self, *args, **kwargs):
        calls["engine"] += 1
        return real_step(self, *args, **kwargs)

    def counted_reference(*args, **kwargs):
        calls["reference"] += 1
        return real_reference(*args, **kwargs)

    monkeypatch.setattr(DistillStep, "__call__", counted_step)
    monkeypatch.setattr(bench, "reference_step", counted_reference)
    config = tiny_config.with_overrides({"batch_size": 2, "seq_len": 16})
    result = bench.run_bench(config, repeats=3)
    assert calls == {"engine": 4, "reference": 4}
    teacher = load_teacher(config.teacher)
    student = load_student(config.student, teacher)
    params = (count_parameters(teacher.model), count_parameters(student.model))
    assert (result["teacher_params"], result["student_params"]) == params
    assert result["flops_per_token"]["reference"] == 2 * params[0] + 6 * params[1]
    cached = bench.run_bench(config.with_overrides({"teacher_cache": True, "top_k": 8}), repeats=1)
    assert cached["flops_per_token"]["engine"] == 6 * params[1]  # the cache: no teacher forward in the engine
    assert cached["flops_per_token"]["reference"] == 2 * params[0] + 6 * params[1]


def test_the_reference_batch_shrinks_to_what_fits(tiny_config, monkeypatch):
    """On a device too small for the reference loop's full logits both loops run the largest batch that fits."""
    from distill_core import memory

    teacher = load_teacher(tiny_config.teacher)
    student = load_student(tiny_config.student, teacher)
    config = tiny_config.with_overrides({"batch_size": 64, "seq_len": 256})
    cpu = bench.torch.device("cpu")
    monkeypatch.setattr(memory, "device_memory", lambda device: (24 * 2**30, "24 GB of RAM"))
    assert bench.reference_batch(config, teacher, student, cpu) == 64  # it fits
    need = memory.session_fit(config.with_overrides({"batch_size": 8, "loss_chunk_tokens": 0, "freeze_embeddings": False}),
                              teacher.model.config, student.model.config, count_parameters(teacher.model),
                              count_parameters(student.model), count_parameters(student.model), cpu)
    room = need["estimate_gb"]["total"] * 2**30 / memory.HEADROOM * 1.01  # just enough for batch 8, not for 16
    monkeypatch.setattr(memory, "device_memory", lambda device: (room, "a small device"))
    assert bench.reference_batch(config, teacher, student, cpu) == 8
    result = bench.run_bench(config.with_overrides({"seq_len": 256}), repeats=1)
    assert result["batch"] == [8, 256] and "batch 64 does not fit" in result["batch_note"]


def test_the_engine_reads_captured_targets_where_the_session_would(tiny_config, tmp_path, capsys):
    """On the teacher-written corpus at T=1 the session trains on the targets captured while the teacher wrote
    (no teacher forward per step): the bench's engine row does the same, the reference still runs the teacher."""
    assert bench.precomputed_targets(tiny_config) == ""  # pasted text: the teacher runs at every step
    generated = tiny_config.with_overrides({"corpus_text": "", "corpus": "teacher-generated", "temperature": 1.0})
    assert bench.precomputed_targets(generated) == "captured while the teacher wrote the corpus"
    assert bench.precomputed_targets(generated.with_overrides({"temperature": 2.0})) == ""
    assert bench.precomputed_targets(generated.with_overrides({"teacher_cache": True, "top_k": 8})) == "teacher cache"
    config = tmp_path / "bench.yaml"
    generated.with_overrides({"batch_size": 2, "seq_len": 16}).to_yaml(config)
    assert main(["bench", "--config", str(config), "--repeats", "1"]) == 0
    assert "'soft_targets': 'captured while the teacher wrote the corpus'" in capsys.readouterr().out


def test_compile_pays_after_its_cost_over_the_steps_it_saves():
    rows = {"engine": {"step_s": 2.0, "warmup_s": 3.0}, "engine+compile": {"step_s": 1.5, "warmup_s": 43.0}}
    payoff = bench.compile_payoff(rows, steps=22)
    assert payoff["compile_s"] == 40.0 and payoff["break_even_steps"] == 80 and not payoff["pays_within_session"]
    assert bench.compile_payoff(rows, steps=300)["pays_within_session"]
    rows["engine+compile"]["step_s"] = 2.5  # slower when compiled: it never pays
    assert bench.compile_payoff(rows, steps=10_000)["break_even_steps"] is None
    assert bench.compile_payoff({"engine": rows["engine"]}, steps=22) is None


def test_the_compiled_variant_on_request(tiny_config, tmp_path, capsys, monkeypatch):
    """The plumbing (torch.compile itself is left out: on CPU it costs tens of seconds)."""
    from distill_core import step as step_module

    compiled = []
    monkeypatch.setattr(bench, "compile_layers", compiled.append)
    monkeypatch.setattr(step_module, "compile_layers", compiled.append)
    config = tmp_path / "bench.yaml"
    tiny_config.with_overrides({"batch_size": 2, "seq_len": 16}).to_yaml(config)
    assert main(["bench", "--config", str(config), "--repeats", "1", "--compile-variant"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("engine+compile") for line in lines)
    assert any(line.startswith("compile: ") and "pays after" in line for line in lines)
    assert json.loads(lines[-1])["compile"]["session_steps"] == 12 and compiled  # the compiled row compiled
