import dataclasses

import pytest

from hyperdas.core.config import ConfigError, ModelConfig


def test_round_trip(tmp_path):
    config = ModelConfig(spec="tiny-random-qwen2", dtype="bfloat16", load_in_4bit=True)
    path = config.save(tmp_path / "config.json")
    assert ModelConfig.load(path) == config


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelConfig().spec = "other"


def test_unknown_field_is_named():
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['layr'\]"):
        ModelConfig.from_dict({"spec": "x", "layr": 3})


def test_bad_dtype_is_named():
    with pytest.raises(ConfigError, match="dtype='fp8'"):
        ModelConfig(dtype="fp8")


def test_load_refuses_other_config_class(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"config_class": "TrainConfig", "spec": "x"}')
    with pytest.raises(ConfigError, match="holds a TrainConfig"):
        ModelConfig.load(path)
