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
