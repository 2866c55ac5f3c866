import pytest

from distill_core.config import ASSETS, DistillConfig, field_help
from distill_core.errors import DistillError


def test_quickstart_round_trip(tmp_path):
    config = DistillConfig.from_yaml(ASSETS / "configs" / "quickstart.yaml")
    assert config.teacher == "smollm2-135m"
    path = tmp_path / "c.yaml"
    config.to_yaml(path)
    assert DistillConfig.from_yaml(path) == config


def test_overrides_are_typed():
    config = DistillConfig().with_overrides(["steps=7", "temperature=3", "freeze_embeddings=false", "student=layers:4"])
    assert (config.steps, config.temperature, config.freeze_embeddings, config.student) == (7, 3.0, False, "layers:4")
    assert isinstance(config.temperature, float)


@pytest.mark.parametrize(
    "override, message",
    [
        ("steps=abc", "steps must be an int"),
        ("steps=0", "steps must be a positive integer"),
        ("temperature=0", "temperature must be a positive finite number"),
        ("learning_rate=nan", "learning_rate must be a positive finite number"),
        ("kd_weight=1.5", "kd_weight must be between 0 and 1"),
        ("batch_size=2.5", "batch_size must be an int"),
        ("colour=blue", "unknown config field"),
        ("steps", "not of the form key=value"),
        ("learning_rate=", "learning_rate is empty: enter a number"),
        ("divergence=kl", "divergence must be one of forward_kl, reverse_kl, jsd, skew_kl"),
        ("jsd_beta=0", "jsd_beta must be strictly between 0 and 1"),
        ("skew_alpha=1", "skew_alpha must be in"),
        ("top_k=-1", "top_k must be a non-negative integer"),
    ],
)
def test_bad_values_are_named(override, message):
    with pytest.raises(DistillError, match=message):
        DistillConfig().with_overrides([override])


def test_every_field_is_documented():
    docs = field_help()
    import dataclasses

    assert {f.name for f in dataclasses.fields(DistillConfig)} == set(docs)
    assert "T^2" in docs["temperature"]


def test_bad_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(DistillError, match="mapping"):
        DistillConfig.from_yaml(path)
    with pytest.raises(DistillError, match="not found"):
        DistillConfig.from_yaml(tmp_path / "missing.yaml")


@pytest.mark.parametrize("preset", ["quickstart", "hinton", "dark-knowledge-topk", "attention-transfer", "fitnets", "all-combined"])
def test_presets_load(preset):
    config = DistillConfig.from_yaml(ASSETS / "configs" / f"{preset}.yaml")
    assert config.teacher == "smollm2-135m" and config.kd_weight > 0
    assert {"attention-transfer": config.attention_weight > 0, "fitnets": config.hidden_weight > 0,
            "dark-knowledge-topk": config.top_k > 0}.get(preset, True)
