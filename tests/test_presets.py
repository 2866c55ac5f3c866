"""The preset recipes in assets/configs/."""

import pytest

from distill_core.errors import DistillError
from distill_core.paths import CONFIGS
from distill_core.presets import QUICKSTART, preset_config, preset_description, preset_names


def test_presets_are_the_config_files_quickstart_first():
    names = preset_names()
    assert names[0] == QUICKSTART
    assert sorted(names) == sorted(path.stem for path in CONFIGS.glob("*.yaml"))


def test_each_preset_is_valid_and_described():
    for name in preset_names():
        config = preset_config(name)
        assert config.steps >= 1
        description = preset_description(name)
        assert description.endswith(".") and not description.startswith("#")
    assert preset_config(None) == preset_config(QUICKSTART)


def test_unknown_preset():
    with pytest.raises(DistillError, match="unknown preset 'nope'"):
        preset_config("nope")


def test_the_gpu_preset_loads_validates_and_says_how_it_was_sized():
    config = preset_config("gpu-10min")
    config.validate()
    assert (config.teacher, config.student, config.device) == ("smollm2-135m", "layers:20", "auto")
    assert config.steps * config.batch_size * config.seq_len > 100 * 22 * 8 * 64  # far beyond the CPU quickstart
    text = (CONFIGS / "gpu-10min.yaml").read_text(encoding="utf-8")
    assert "How it was sized" in text and "GFLOP" in text
