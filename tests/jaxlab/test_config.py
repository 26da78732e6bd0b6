"""Config loading: YAML and JSON, typed overrides, one-line errors naming fields."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest
from conftest import REPO, small_config

from jaxlab import config as config_lib
from jaxlab import experiment
from jaxlab.errors import ConfigError


def test_yaml_and_json_give_the_same_config(write_config):
    raw = small_config()
    a = config_lib.load_config(write_config(raw, "c.yaml"))
    b = config_lib.load_config(write_config(raw, "c.json"))
    assert a == b
    assert dataclasses.is_dataclass(a)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.seed = 3


def test_saved_config_round_trips(write_config):
    config = config_lib.load_config(write_config(small_config()))
    text = config_lib.dump_yaml(config_lib.config_to_dict(config))
    again = config_lib.validate_config(config_lib.parse_yaml(text))
    assert again == config


def test_yaml_reads_exponent_floats_without_a_dot():
    assert config_lib.parse_yaml("lr: 3e-4\nn: 5\ns: '1e3'") == {
        "lr": 3e-4,
        "n": 5,
        "s": "1e3",
    }


def test_overrides_are_typed(write_config):
    path = write_config(small_config())
    config = config_lib.load_config(
        path,
        [
            "optimizer.learning_rate=3e-4",
            "train.steps=7",
            "data.shuffle=false",
            "model.network.1.1.output_size=16",
            "optimizer.schedule={name: cosine, decay_steps: 100}",
        ],
    )
    assert config.optimizer.learning_rate == 3e-4
    assert config.train.steps == 7
    assert config.data.shuffle is False
    assert config.model.network[1][1]["output_size"] == 16
    assert config.optimizer.schedule.decay_steps == 100


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "train.steps=ten",
            r"^train\.steps: input should be a valid integer, got 'ten'$",
        ),
        ("train.stepz=3", r"^train\.stepz: unknown field$"),
        ("seed", r"expected KEY=VALUE"),
        ("model.network.9.1.output_size=3", r"model\.network\.9: no list item"),
        ("data.batch_size=true", r"^data\.batch_size: input should be a valid integer"),
        ("optimizer.nesterov=true", r"^optimizer\.nesterov: needs momentum"),
        (
            "optimizer.schedule={name: warmup_cosine, warmup_steps: 9, decay_steps: 5}",
            r"^optimizer\.schedule\.warmup_steps: must be smaller",
        ),
        (
            "optimizer.schedule={name: piecewise, boundaries: [1], scales: []}",
            "same length",
        ),
        ("data.validation_split=0.9", r"validation_split \+ test_split must be < 1"),
    ],
)
def test_bad_overrides_name_the_field(write_config, override, message):
    with pytest.raises(ConfigError, match=message):
        config_lib.load_config(write_config(small_config()), [override])


@pytest.mark.parametrize(
    "text", ["[1, 2]", "just a string", "a: [", "{a: 1", "!!python/object:os.system {}"]
)
def test_not_a_config(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"c\.yaml: "):
        config_lib.load_config(path)


def test_wrong_suffix(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("x = 1")
    with pytest.raises(ConfigError, match="must end in .yaml, .yml or .json"):
        config_lib.load_config(path)


def test_shipped_yaml_and_json_twin_are_the_same_experiment():
    """configs/lenet_digits.json spells the network the polyaxon-lib way."""
    yaml_cfg = config_lib.load_config(REPO / "configs/lenet_digits.yaml")
    json_cfg = config_lib.load_config(REPO / "configs/lenet_digits.json")
    strip = {"model": {"network": None, "metrics": None}, "optimizer": {"name": None}}

    def without_spelling(cfg):
        d = config_lib.config_to_dict(cfg)
        for section, keys in strip.items():
            for key in keys:
                d[section].pop(key)
        return d

    assert without_spelling(yaml_cfg) == without_spelling(json_cfg)
    assert yaml_cfg.optimizer.name == json_cfg.optimizer.name == "adam"
    exp_y, exp_j = experiment.build(yaml_cfg), experiment.build(json_cfg)
    assert exp_y.network.regularizers == exp_j.network.regularizers
    assert exp_y.metric_set.names == exp_j.metric_set.names
    state_y, state_j = experiment.initial_state(exp_y), experiment.initial_state(exp_j)
    jax.tree.map(np.testing.assert_array_equal, state_y.params, state_j.params)
    x = exp_y.splits.test.x[:4]
    out_y, _ = exp_y.network.transformed.apply(
        state_y.params, state_y.net_state, None, x, is_training=False
    )
    out_j, _ = exp_j.network.transformed.apply(
        state_j.params, state_j.net_state, None, x, is_training=False
    )
    np.testing.assert_array_equal(out_y, out_j)


def test_every_shipped_supervised_config_validates():
    for path in sorted(REPO.glob("configs/*")):
        raw = json.loads(path.read_text()) if path.suffix == ".json" else None
        if raw is None:
            raw = config_lib.read_config_file(path)
        if raw.get("kind", "supervised") == "supervised":
            config_lib.validate_config(raw)
