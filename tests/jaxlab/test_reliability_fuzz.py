"""Config fuzzing: hostile configs fail with one `ConfigError` line, nothing else.

Hypothesis mutates valid configs (every shipped ``configs/*`` file, the small
supervised config of ``conftest.py`` and a tiny PPO config) and raw YAML/JSON
text, and checks the property the CLI relies on: `load_config` followed by
`experiment.check` either succeeds or raises a `JaxlabError` (`ConfigError`)
whose message is one line starting with a field path (``data.batch_size: ...``)
or the config file's name. No TypeError, KeyError, RecursionError or pydantic
error may escape, and no YAML tag may ever construct a Python object.

All tests use ``derandomize=True`` (the same examples on every run) and
``deadline=None``. They run ``FUZZ_EXAMPLES`` >= 1000 examples in total;
`test_fuzz_example_count` (last in this module) checks the count.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, small_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agents
import nets
from jaxlab import config as config_lib
from jaxlab import experiment
from jaxlab.errors import ConfigError, JaxlabError

CONFIG_DIR = REPO / "configs"
SHIPPED = sorted(
    p for p in CONFIG_DIR.iterdir() if p.suffix in (".yaml", ".yml", ".json")
)

# Examples per test; the sum is the module's total (>= 1000).
EXAMPLES = {
    "test_mutated_configs_fail_cleanly": 400,
    "test_random_network_specs_fail_cleanly": 200,
    "test_random_graphs_fail_cleanly": 150,
    "test_random_agent_sections_fail_cleanly": 120,
    "test_mutated_config_text_fails_cleanly": 150,
    "test_yaml_python_tags_never_execute": 60,
    "test_random_overrides_fail_cleanly": 80,
}
FUZZ_EXAMPLES = sum(EXAMPLES.values())
_ran: dict[str, int] = {}


def _fuzz(name: str):
    """Hypothesis settings for one fuzz test (deterministic, no deadline)."""
    return settings(
        max_examples=EXAMPLES[name],
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,
        ],
    )


def _count(name: str) -> None:
    _ran[name] = _ran.get(name, 0) + 1


def tiny_ppo() -> dict:
    return {
        "name": "tiny-ppo",
        "kind": "rl",
        "seed": 3,
        "env": {"id": "CartPole-v1", "backend": "jax", "num_envs": 2},
        "agent": {
            "name": "ppo",
            "num_steps": 16,
            "update_epochs": 2,
            "num_minibatches": 2,
            "hidden": [16, 16],
        },
        "optimizer": {"name": "adam", "learning_rate": 3e-3},
        "train": {"env_steps": 640, "eval_every": 320, "log_every": 64},
    }


def _bases() -> list[tuple[str, dict]]:
    bases = [(p.name, config_lib.read_config_file(p)) for p in SHIPPED]
    bases.append(("small_config", small_config()))
    bases.append(("tiny_ppo", tiny_ppo()))
    graph = small_config()
    graph["model"]["network"] = {
        "inputs": ["x"],
        "nodes": [
            {"name": "f", "layer": "Flatten", "inputs": ["x"]},
            {"name": "h", "layer": "Linear", "args": {"output_size": 8}, "inputs": "f"},
            {
                "name": "o",
                "layer": "Linear",
                "args": {"output_size": 10},
                "inputs": "h",
            },
        ],
        "outputs": ["o"],
    }
    bases.append(("graph_config", graph))
    bases.append(
        ("module_config", small_config(**{"model.network": {"module": "LeNet"}}))
    )
    return bases


BASES = _bases()
# Every field name of the two schemas' top level: an error path starts with one
# of them, with a top-level key of the (mutated) config, or with "<config>".
_TOP_FIELDS = {
    f.name
    for cls in (config_lib.ExperimentConfig, config_lib.RLExperimentConfig)
    for f in dataclasses.fields(cls)
}


def test_every_base_config_is_valid():
    """The fuzzers mutate valid configs: check that they are."""
    for _, raw in BASES:
        experiment.check(config_lib.validate_config(raw))


# ----------------------------------------------------------------- checking


def _head(message: str) -> str:
    """The path a message starts with: up to its first ': '."""
    return message.split(": ", 1)[0] if ": " in message else ""


def assert_clean_error(
    err: BaseException,
    raw: Any = None,
    source: str | Path | None = None,
    overrides: tuple[str, ...] = (),
) -> None:
    """`err` is one of the project's errors, one line, starting with a path."""
    assert isinstance(err, JaxlabError), f"{type(err).__name__}: {err}"
    message = str(err)
    assert message and "\n" not in message, repr(message)
    assert "Traceback" not in message and "pydantic" not in message.lower(), message
    if source is not None and message.startswith(str(source)):
        return
    if message.startswith("--set "):
        return
    head = _head(message)
    assert head, f"no 'path: problem' in {message!r}"
    first = re.match(r"<config>|\[[^\]]*\]|[^.\[ (]+", head)
    assert first, message
    allowed = set(_TOP_FIELDS) | {"<config>"}
    if isinstance(raw, dict):
        allowed |= {str(k) for k in raw}
        allowed |= {f"[{k!r}]" for k in raw} | {f"[{k}]" for k in raw}
    for item in overrides:  # a --set may add a top-level key
        key = item.partition("=")[0].strip().split(".")[0]
        allowed |= {key, f"[{key!r}]"}
    assert first.group(0) in allowed, f"{message!r} does not start with a field path"


def check_config(raw: Any) -> None:
    """validate_config + experiment.check: ok, or a clean ConfigError."""
    try:
        experiment.check(config_lib.validate_config(raw))
    except Exception as err:  # noqa: BLE001 - the property under test
        assert_clean_error(err, raw)


def check_file(path: Path, overrides: tuple[str, ...] = ()) -> None:
    """load_config + experiment.check: ok, or a clean ConfigError."""
    try:
        experiment.check(config_lib.load_config(path, overrides))
    except Exception as err:  # noqa: BLE001 - the property under test
        try:  # the keys as validated (the deep copy turns a null key into "null")
            raw = config_lib.apply_overrides(config_lib.read_config_file(path), ())
        except ConfigError:
            raw = None
        assert_clean_error(err, raw, source=path, overrides=overrides)


# ----------------------------------------------------------------- strategies

HOSTILE_NUMBERS = [
    0,
    -1,
    1,
    -(2**63),
    2**63,
    10**30,
    0.0,
    -0.0,
    1e-320,
    1e308,
    -1e308,
    math.inf,
    -math.inf,
    math.nan,
    0.5,
    1.5,
]
scalars = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", "64x", "adam", "relu", "SAME", "nan", "inf", "1e3", "ppo"]),
    st.integers(),
    st.sampled_from(HOSTILE_NUMBERS),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
)
keys = st.one_of(
    st.text(max_size=10),
    st.sampled_from(["name", "steps", "output_size", "__class__", "kind", "x"]),
    st.integers(-3, 3),
    st.booleans(),
    st.none(),
)


def _nest(depth: int, kind: str, leaf: Any) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


deeply_nested = st.builds(
    _nest, st.integers(100, 250), st.sampled_from(["list", "dict"]), scalars
)
values = st.one_of(
    scalars,
    st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4)
        ),
        max_leaves=8,
    ),
    st.sampled_from([[], {}, [[]], {"": {}}, [None], [{}]]),
    deeply_nested,
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path into `node` (dict keys and list indices), the root included."""
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _get(node: Any, path: tuple) -> Any:
    for part in path:
        node = node[part]
    return node


def _copy(raw: Any) -> Any:
    if isinstance(raw, dict):
        return {k: _copy(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_copy(v) for v in raw]
    return raw


MUTATIONS = ["replace", "delete", "add_key", "nest", "empty", "number", "retype"]


@st.composite
def mutated_configs(draw) -> tuple[str, dict]:
    name, base = draw(st.sampled_from(BASES))
    raw = _copy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(raw)
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(MUTATIONS))
        parent = _get(raw, path[:-1]) if path else None
        here = _get(raw, path)
        if op == "add_key" or not path:
            target = here if isinstance(here, dict) else parent
            if isinstance(target, dict):
                target[draw(keys)] = draw(values)
            elif isinstance(target, list):
                target.append(draw(values))
            continue
        last = path[-1]
        if op == "delete":
            del parent[last]
        elif op == "replace":
            parent[last] = draw(values)
        elif op == "nest":
            parent[last] = draw(deeply_nested)
        elif op == "empty":
            parent[last] = draw(st.sampled_from([[], {}, "", None]))
        elif op == "number":
            parent[last] = draw(st.sampled_from(HOSTILE_NUMBERS))
        else:  # retype the leaf: str <-> number, scalar -> [scalar] / {k: scalar}
            parent[last] = draw(
                st.sampled_from(
                    [str(here), [here], {"value": here}, not here, repr(here)]
                )
            )
    return name, raw


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _dump(raw: Any, fmt: str) -> str | None:
    """`raw` as YAML or JSON text, or None when the format cannot hold it."""
    try:
        if fmt == "json":
            return json.dumps(raw)
        return yaml.safe_dump(raw, sort_keys=False)
    except (TypeError, ValueError, RecursionError, yaml.YAMLError):
        return None


# ----------------------------------------------------------------- fuzz tests


@_fuzz("test_mutated_configs_fail_cleanly")
@given(case=mutated_configs(), fmt=st.sampled_from(["yaml", "json"]))
def test_mutated_configs_fail_cleanly(fuzz_dir, case, fmt):
    _count("test_mutated_configs_fail_cleanly")
    _, raw = case
    check_config(raw)
    text = _dump(raw, fmt)
    if text is not None:
        path = fuzz_dir / f"mutated.{fmt}"
        path.write_text(text)
        check_file(path)


_LAYER_NAMES = nets.LAYERS.all_names()
layer_names = st.one_of(
    st.sampled_from(_LAYER_NAMES), st.sampled_from(["Conv3x", "", "linear"]), scalars
)
# Plausible argument values (most are valid for some argument), and hostile ones.
near_values = st.one_of(
    st.sampled_from(
        [1, 2, 3, 4, 8, 0.1, 0.5, True, False, "relu", "tanh", "SAME", "VALID", "l2"]
        + [[2, 2], [4, 8], None, -1, 0, "nope", 1e308, math.nan]
    ),
    values,
)


def _arg_names(schema: dict) -> list[str]:
    return sorted({*schema, *(a for arg in schema.values() for a in arg.aliases)})


@st.composite
def layer_args(draw, layer: Any) -> Any:
    """Arguments for `layer`: mostly its own argument names, some unknown ones."""
    if not (isinstance(layer, str) and layer in _LAYER_NAMES) or not draw(
        st.integers(0, 7)
    ):
        return draw(st.dictionaries(keys, values, max_size=3) | values)
    names = _arg_names(nets.LAYERS[layer].args)
    args = {
        name: draw(near_values)
        for name in draw(st.lists(st.sampled_from(names), max_size=4, unique=True))
    }
    if not draw(st.integers(0, 9)):
        args[draw(keys)] = draw(values)
    return args


# A valid entry for each layer kind: lists of these are mutated a little, so
# the fuzzer gets past the first entry.
VALID_LAYERS = {
    "Linear": {"output_size": 4, "activation": "relu"},
    "Conv1D": {"output_channels": 4, "kernel_shape": 3},
    "Conv2D": {"output_channels": 4, "kernel_shape": [3, 3], "regularizer": "l2"},
    "MaxPool": {"window_shape": 2, "strides": 2},
    "AvgPool1d": {"window_shape": 2, "padding": "VALID"},
    "Flatten": {},
    "Dropout": {"rate": 0.1},
    "BatchNorm": {"decay_rate": 0.9},
    "LayerNorm": {"axis": -1},
    "Activation": {"activation": "tanh"},
    "Reshape": {"output_shape": [-1]},
    "LSTM": {"hidden_size": 4},
    "GRU": {"hidden_size": 4, "return_sequences": False},
    "Embed": {"vocab_size": 10, "embed_dim": 4},
}


@st.composite
def near_valid_layer_lists(draw) -> list:
    """A valid layer list with a few entries or arguments changed."""
    names = draw(
        st.lists(st.sampled_from(sorted(VALID_LAYERS)), min_size=1, max_size=6)
    )
    entries = [[name, dict(VALID_LAYERS[name])] for name in names]
    intact = list(range(len(entries)))  # entries not replaced wholesale
    for _ in range(draw(st.integers(0, 2))):
        if not intact:
            break
        i = draw(st.sampled_from(intact))
        name, args = names[i], entries[i][1]
        op = draw(st.sampled_from(["set", "drop", "unknown", "rename", "entry"]))
        if op == "set":
            arg = draw(st.sampled_from(_arg_names(nets.LAYERS[name].args)))
            args[arg] = draw(near_values)
        elif op == "drop" and args:
            del args[draw(st.sampled_from(sorted(args, key=repr)))]
        elif op == "unknown":
            args[draw(keys)] = draw(near_values)
        elif op == "rename":
            args["name"] = draw(st.sampled_from(["linear_0", "dup", "dup", "1x", ""]))
        elif op == "entry":
            entries[i] = draw(layer_entries())
            intact.remove(i)
    return entries


@st.composite
def layer_entries(draw) -> Any:
    """One entry of a layer list, in any of its forms (or not one at all)."""
    name = draw(
        st.sampled_from(_LAYER_NAMES) if draw(st.integers(0, 9)) else layer_names
    )
    args = draw(layer_args(name))
    form = draw(st.integers(0, 11))
    if form <= 7:
        return [name, args]
    if form == 8:
        return [name]
    if form == 9:
        return name
    if form == 10 and _hashable(name):
        return {name: args}
    return draw(values)


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


_MODULE_ARGS = sorted(
    {"output_sizes", "channels", "num_classes", "blocks_per_stage", "activation"}
    | {"bn_decay", "regularizer", "regularizer_scale", "name", "kernel_shape"}
    | {"pool", "dropout_rate", "activate_final", "cross_replica_axis", "bogus"}
)


@st.composite
def module_specs(draw) -> dict:
    module = draw(
        st.sampled_from(["MLP", "ConvNet", "LeNet", "ResNet", "lenet", "Nope"])
        | scalars
    )
    args = {
        name: draw(near_values)
        for name in draw(st.lists(st.sampled_from(_MODULE_ARGS), max_size=4))
    }
    return {"module": module, **args}


@_fuzz("test_random_network_specs_fail_cleanly")
@given(
    network=st.one_of(
        near_valid_layer_lists(),
        near_valid_layer_lists(),
        st.lists(layer_entries(), min_size=1, max_size=6),
        module_specs(),
        values,
    ),
    num_classes=st.sampled_from([None, None, None, None, 2, 10, 0, 1.5]),
)
def test_random_network_specs_fail_cleanly(network, num_classes):
    _count("test_random_network_specs_fail_cleanly")
    raw = small_config(**{"model.network": network})
    if num_classes is not None:
        raw["model"]["num_classes"] = num_classes
    check_config(raw)


def _rarely(draw) -> bool:
    """True for about one example in ten (hypothesis favours small integers, so
    a middle value rather than 0 is drawn)."""
    return draw(st.integers(0, 9)) == 5


bad_names = st.sampled_from(["", "1a", "a b", "<input>", "x"]) | st.text(max_size=3)
GRAPH_LAYERS = {
    "Linear": {"output_size": 4},
    "Add": {},
    "Concat": {"axis": -1},
    "Flatten": {},
    "Dropout": {"rate": 0.1},
    "LayerNorm": {},
}


@st.composite
def graphs(draw) -> dict:
    """Graph specs with random edges: cycles, dangling and unused nodes, merge
    layers with one input; now and then a bad name, key or value."""
    names = draw(
        st.lists(st.sampled_from("abcdef"), min_size=1, max_size=5, unique=True)
        if not _rarely(draw)
        else st.lists(st.sampled_from("abcdef"), min_size=1, max_size=5)
    )
    known = ["x", *names]
    nodes = []
    for name in names:
        layer = draw(st.sampled_from(sorted(GRAPH_LAYERS)))
        node = {
            "name": name if not _rarely(draw) else draw(bad_names),
            "layer": layer if not _rarely(draw) else draw(layer_names),
            "inputs": draw(
                st.lists(
                    st.sampled_from(known),
                    min_size=2 if layer in ("Add", "Concat") else 1,
                    max_size=3 if layer in ("Add", "Concat") else 1,
                    unique=True,
                )
                if not _rarely(draw)
                else st.lists(st.sampled_from(known), max_size=3)
            ),
        }
        if len(node["inputs"]) == 1 and draw(st.booleans()):
            node["inputs"] = node["inputs"][0]  # a single name may be a string
        if GRAPH_LAYERS[layer] or draw(st.booleans()):
            node["args"] = dict(GRAPH_LAYERS[layer])
        if _rarely(draw):
            node["args"] = draw(layer_args(layer))
        if _rarely(draw):
            del node[draw(st.sampled_from(["name", "layer", "inputs"]))]
        if _rarely(draw):
            node[draw(keys)] = draw(values)
        nodes.append(node)
    spec = {
        "inputs": ["x"] if not _rarely(draw) else draw(st.lists(bad_names) | values),
        "nodes": nodes,
        "outputs": draw(st.lists(st.sampled_from(known), min_size=1, max_size=2)),
    }
    if _rarely(draw):
        spec[draw(keys)] = draw(values)
    if _rarely(draw):
        spec[draw(st.sampled_from(["inputs", "nodes", "outputs"]))] = draw(values)
    return spec


@_fuzz("test_random_graphs_fail_cleanly")
@given(spec=graphs())
def test_random_graphs_fail_cleanly(spec):
    _count("test_random_graphs_fail_cleanly")
    check_config(small_config(**{"model.network": spec}))


def test_a_graph_cycle_is_named():
    spec = {
        "inputs": ["x"],
        "nodes": [
            {"name": "a", "layer": "Add", "inputs": ["x", "c"]},
            {"name": "b", "layer": "Linear", "args": {"output_size": 2}, "inputs": "a"},
            {"name": "c", "layer": "Linear", "args": {"output_size": 2}, "inputs": "b"},
        ],
        "outputs": ["c"],
    }
    with pytest.raises(ConfigError, match=r"^model\.network.*cycle.*'a'.*'b'.*'c'"):
        experiment.check(
            config_lib.validate_config(small_config(**{"model.network": spec}))
        )


agent_values = st.one_of(
    st.sampled_from(
        [0.99, 0.5, 0.0, 1.0, 16, 2, 4, 1, [16, 16], "tanh", "relu", True, False]
        + ["linear", "constant", "huber", None, 0, -1, 1e308, math.nan, "nope"]
        + [{"schedule": "linear", "start": 1.0, "end": 0.1, "steps": 10}]
        + [{"capacity": 100, "batch_size": 8, "min_size": 16}]
    ),
    values,
)


@st.composite
def agent_sections(draw) -> dict:
    """An agent section: a known agent's own fields with near-valid values."""
    name = draw(st.sampled_from(sorted(agents.AGENTS)))
    fields = sorted(f.name for f in dataclasses.fields(agents.AGENTS[name].config_cls))
    section = {"name": name}
    for field in draw(st.lists(st.sampled_from(fields), max_size=5, unique=True)):
        section[field] = draw(agent_values)
    if _rarely(draw):
        section["name"] = draw(values)
    if _rarely(draw):
        del section["name"]
    if _rarely(draw):
        section[draw(keys)] = draw(values)
    return section


ENV_IDS = ["CartPole-v1", "Catch", "Pendulum-v1", "Nope-v0", "ALE/Nope-v5", ""]


@st.composite
def env_sections(draw) -> dict:
    env = {"id": draw(st.sampled_from(ENV_IDS)), "num_envs": draw(st.integers(1, 4))}
    env["backend"] = draw(st.sampled_from(["jax", "gymnasium"]))
    if _rarely(draw):
        env[draw(st.sampled_from(["id", "backend", "num_envs", "kwargs"]))] = draw(
            values
        )
    return env


@_fuzz("test_random_agent_sections_fail_cleanly")
@given(agent=agent_sections(), env=env_sections())
def test_random_agent_sections_fail_cleanly(agent, env):
    _count("test_random_agent_sections_fail_cleanly")
    raw = tiny_ppo()
    raw["agent"] = agent
    raw["env"] = env
    check_config(raw)


# ----------------------------------------------------------------- raw text

DANGEROUS_TAGS = [
    '!!python/object/apply:os.system ["touch {marker}"]',
    "!!python/object/apply:subprocess.check_call [[touch, {marker}]]",
    '!!python/object/new:os.system ["touch {marker}"]',
    "!!python/name:os.system",
    "!!python/module:os",
    '!!python/object:builtins.open {{file: "{marker}", mode: w}}',
    "!!python/tuple [1, 2]",
    "!!binary aGVsbG8=",
    "!!set {{a, b}}",
    '!<tag:yaml.org,2002:python/object/apply:os.system> ["touch {marker}"]',
]


@st.composite
def text_mutations(draw, marker: Path) -> tuple[str, str]:
    """(suffix, text): a shipped config's text, damaged."""
    path = draw(st.sampled_from(SHIPPED))
    data = path.read_bytes()
    for _ in range(draw(st.integers(1, 3))):
        op = draw(
            st.sampled_from(["truncate", "insert", "delete", "flip", "tag", "replace"])
        )
        at = draw(st.integers(0, len(data)))
        if op == "truncate":
            data = data[:at]
        elif op == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
        elif op == "delete":
            data = data[:at] + data[at + draw(st.integers(1, 40)) :]
        elif op == "flip" and data:
            i = min(at, len(data) - 1)
            data = (
                data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1 :]
            )
        elif op == "tag":
            tag = draw(st.sampled_from(DANGEROUS_TAGS)).format(marker=marker)
            data = data[:at] + b" " + tag.encode() + b"\n" + data[at:]
        elif op == "replace":
            chars = draw(
                st.sampled_from(
                    [
                        b"[",
                        b"{",
                        b"]",
                        b":",
                        b"- ",
                        b"\t",
                        b"*a",
                        b"&a",
                        b"\x00",
                        b"\xff",
                        b"'",
                        b'"',
                    ]
                )
            )
            data = data[:at] + chars + data[at + 1 :]
    return path.suffix, data


@_fuzz("test_mutated_config_text_fails_cleanly")
@given(data=st.data())
def test_mutated_config_text_fails_cleanly(fuzz_dir, data):
    _count("test_mutated_config_text_fails_cleanly")
    marker = fuzz_dir / "pwned-text"
    suffix, text = data.draw(text_mutations(marker))
    path = fuzz_dir / f"damaged{suffix}"
    path.write_bytes(text)
    check_file(path)
    assert not marker.exists(), "a YAML tag ran code"


@_fuzz("test_yaml_python_tags_never_execute")
@given(
    tag=st.sampled_from(DANGEROUS_TAGS),
    where=st.sampled_from(
        ["name", "seed", "model", "model.network", "optimizer.learning_rate", "top"]
    ),
    via=st.sampled_from(["file", "override", "parse"]),
)
def test_yaml_python_tags_never_execute(fuzz_dir, tag, where, via):
    _count("test_yaml_python_tags_never_execute")
    marker = fuzz_dir / "pwned-tag"
    payload = tag.format(marker=marker)
    raw = small_config()
    if via == "override":
        path = fuzz_dir / "tag-base.yaml"
        path.write_text(yaml.safe_dump(raw))
        key = "name" if where == "top" else where
        check_file(path, overrides=(f"{key}={payload}",))
    elif via == "parse":
        try:
            config_lib.parse_yaml(payload, "payload")
        except Exception as err:  # noqa: BLE001 - the property under test
            assert isinstance(err, ConfigError) and str(err).startswith("payload: ")
    else:
        text = yaml.safe_dump(raw)
        if where == "top":
            text = f"--- {payload}\n" if "tuple" not in tag else payload
        else:
            # Replace the field's value with the tagged node.
            key = where.split(".")[-1]
            text = re.sub(
                rf"^(\s*){key}:.*$",
                rf"\g<1>{key}: {payload}",
                text,
                count=1,
                flags=re.M,
            )
        path = fuzz_dir / "tagged.yaml"
        path.write_text(text)
        check_file(path)
    assert not marker.exists(), "a YAML tag ran code"


override_keys = st.one_of(
    st.sampled_from(
        [
            "seed",
            "name",
            "model.network.0",
            "model.network.1.1.output_size",
            "model.network.9.1",
            "model.network.x",
            "optimizer",
            "optimizer.schedule.name",
            "train.steps.deep",
            "data..path",
            "",
            " ",
            ".",
            "kind",
        ]
    ),
    st.lists(
        st.sampled_from(["model", "network", "0", "1", "a", "-1", ""]),
        min_size=1,
        max_size=5,
    ).map(".".join),
)
override_values = st.one_of(
    st.sampled_from(
        [
            "",
            "[",
            "{a: 1",
            "null",
            ".nan",
            "-.inf",
            "1e308",
            "[[[[]]]]",
            "!!int x",
            "*alias",
            "rl",
            "'x'",
            "{}",
            "[]",
        ]
    ),
    st.text(max_size=12),
)


@_fuzz("test_random_overrides_fail_cleanly")
@given(
    items=st.lists(
        st.one_of(
            st.builds(lambda k, v: f"{k}={v}", override_keys, override_values),
            st.text(max_size=10),
        ),
        min_size=1,
        max_size=3,
    ),
    base=st.sampled_from(["small_config", "tiny_ppo"]),
)
def test_random_overrides_fail_cleanly(fuzz_dir, items, base):
    _count("test_random_overrides_fail_cleanly")
    raw = dict(BASES)[base]
    path = fuzz_dir / f"{base}.yaml"
    if not path.exists():
        path.write_text(yaml.safe_dump(raw))
    check_file(path, overrides=tuple(items))


# ----------------------------------------------------------------- targeted


@pytest.mark.parametrize("depth", [200, 2000, 20000])
@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_deeply_nested_text_is_a_config_error(tmp_path, depth, fmt):
    """Nesting deeper than the parser's recursion limit is a ConfigError too."""
    inner = "[" * depth + "]" * depth
    path = tmp_path / f"deep.{fmt}"
    if fmt == "json":
        path.write_text(
            '{"name": "x", "model": {"network": ' + inner + '}, "train": {"steps": 1}}'
        )
    else:
        path.write_text(f"name: x\nmodel: {{network: {inner}}}\ntrain: {{steps: 1}}\n")
    check_file(path)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (field, value)
        for field in ("optimizer.learning_rate", "optimizer.eps")
        for value in (math.nan, math.inf, -math.inf, -1e308, 0.0)
    ]
    + [("optimizer.b1", v) for v in (math.nan, math.inf, -math.inf, -1e308, 1.0)]
    + [
        (field, value)
        for field in ("optimizer.b1", "data.test_split", "train.steps", "seed")
        for value in (1e308, math.nan, 2.5)
    ]
    + [("train.steps", -(2**63)), ("data.batch_size", 0), ("seed", -1)],
)
def test_non_finite_and_huge_numbers_name_the_field(field, value):
    raw = small_config(**{field: value})
    with pytest.raises(ConfigError, match=rf"^{re.escape(field)}: "):
        experiment.check(config_lib.validate_config(raw))


def test_fuzz_example_count():
    """Runs last: the fuzz tests above ran >= 1000 examples in all."""
    assert FUZZ_EXAMPLES >= 1000
    if set(_ran) != set(EXAMPLES):
        pytest.skip("only some fuzz tests ran in this process")
    total = sum(_ran.values())
    assert total >= 1000, _ran
