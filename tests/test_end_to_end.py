"""The first result's wall time, cold then warm, each a `distill` process of its own: the cold run writes the
corpus into the empty cache, the warm one reads it and trains the same student; both split into phases."""

import pytest

from distill_core.end_to_end import end_to_end
from distill_core.errors import DistillError


def test_cold_then_warm_sessions_split_into_phases(tiny_config, tmp_path):
    config = tmp_path / "session.yaml"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The river\nIn the market\nMy bicycle\nOn a cold morning\n", encoding="utf-8")
    tiny_config.with_overrides({"corpus_text": "", "corpus": "teacher-generated", "prompts_file": str(prompts),
                                "generation_tokens": 12, "steps": 2, "batch_size": 2, "eval_every": 0,
                                "probe_every": 0}).to_yaml(config)
    cache = tmp_path / "cache"
    result = end_to_end(config, ["seed=1"], cache=cache)
    cold, warm = result["cold"], result["warm"]
    assert result["set"] == ["seed=1"] and list(cache.joinpath("corpora").glob("*.safetensors"))
    for run in (cold, warm):
        assert set(run["split_s"]) == {"conversion", "corpus", "training", "evaluation", "other"}
        assert run["wall_s"] >= sum(v for k, v in run["split_s"].items() if k != "other")
        assert {"corpus", "training", "evaluation"} <= set(run["phases_s"])
    assert cold["split_s"]["conversion"] == 0  # a safetensors teacher: nothing to convert
    assert warm["after"] == cold["after"]  # the cached corpus and targets train the very same student


def test_a_cold_start_needs_an_empty_cache(tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "something").write_text("x")
    with pytest.raises(DistillError, match="not empty"):
        end_to_end(tmp_path / "any.yaml", cache=tmp_path / "cache")
