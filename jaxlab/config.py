"""Experiment configs: one YAML or JSON schema, validated into frozen dataclasses.

`load_config(path, overrides)` reads a file, applies ``--set a.b=c`` overrides and
validates strictly: unknown keys, wrong types and impossible values raise one
`ConfigError` whose message names the field path (``data.batch_size: ...``).
Validation is done by pydantic dataclasses (strict mode, ``extra="forbid"``);
`ConfigError` turns pydantic's report into one line.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import ConfigDict, Field, Strict, field_validator, model_validator
from pydantic.dataclasses import dataclass

from jaxlab.errors import ConfigError

# Strict scalars: "64" is not an int and 1.5 is not an int; an int is a float.
_STRICT = ConfigDict(extra="forbid", frozen=True)
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]
Int = Annotated[int, Strict()]
PosInt = Annotated[int, Strict(), Field(gt=0)]
NonNegInt = Annotated[int, Strict(), Field(ge=0)]
Float = Annotated[float, Strict(), Field(allow_inf_nan=False)]
PosFloat = Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False)]
Fraction = Annotated[float, Strict(), Field(ge=0, lt=1, allow_inf_nan=False)]


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


# ----------------------------------------------------------------- schedules


@dataclass(config=_STRICT)
class ConstantSchedule:
    """Constant learning rate (the default)."""

    name: Literal["constant"] = "constant"


@dataclass(config=_STRICT)
class ExponentialDecaySchedule:
    """``lr * decay_rate ** (step / transition_steps)`` (optax.exponential_decay).

    Attributes:
      transition_steps: steps over which the rate is multiplied by `decay_rate`.
      decay_rate: multiplicative factor per `transition_steps`.
      staircase: decay in discrete jumps.
      transition_begin: steps with a constant rate before decay starts.
      end_value: lower bound of the rate, if set.
    """

    name: Literal["exponential_decay"]
    transition_steps: PosInt
    decay_rate: PosFloat
    staircase: Bool = False
    transition_begin: NonNegInt = 0
    end_value: Float | None = None


@dataclass(config=_STRICT)
class CosineSchedule:
    """Cosine decay from `learning_rate` to ``alpha * learning_rate``."""

    name: Literal["cosine"]
    decay_steps: PosInt
    alpha: Annotated[float, Strict(), Field(ge=0, le=1)] = 0.0


@dataclass(config=_STRICT)
class WarmupCosineSchedule:
    """Linear warmup from `init_value` to `learning_rate`, then cosine decay.

    `decay_steps` counts the warmup steps too (as optax.warmup_cosine_decay_schedule).
    """

    name: Literal["warmup_cosine"]
    warmup_steps: NonNegInt
    decay_steps: PosInt
    init_value: NonNegFloat = 0.0
    end_value: NonNegFloat = 0.0

    @model_validator(mode="after")
    def _check(self) -> WarmupCosineSchedule:
        if self.warmup_steps >= self.decay_steps:
            raise ValueError(
                f"warmup_steps: must be smaller than decay_steps "
                f"({self.warmup_steps} >= {self.decay_steps})"
            )
        return self


@dataclass(config=_STRICT)
class LinearSchedule:
    """Linear from `learning_rate` to `end_value` over `transition_steps`."""

    name: Literal["linear"]
    transition_steps: PosInt
    end_value: NonNegFloat = 0.0


@dataclass(config=_STRICT)
class PiecewiseSchedule:
    """Multiply the rate by ``scales[i]`` once ``step`` passes ``boundaries[i]``."""

    name: Literal["piecewise"]
    boundaries: list[PosInt]
    scales: list[PosFloat]

    @model_validator(mode="after")
    def _check(self) -> PiecewiseSchedule:
        if len(self.boundaries) != len(self.scales):
            raise ValueError("boundaries and scales must have the same length")
        if list(self.boundaries) != sorted(set(self.boundaries)):
            raise ValueError("boundaries must be strictly increasing")
        return self


Schedule = Annotated[
    ConstantSchedule
    | ExponentialDecaySchedule
    | CosineSchedule
    | WarmupCosineSchedule
    | LinearSchedule
    | PiecewiseSchedule,
    Field(discriminator="name"),
]


# ----------------------------------------------------------------- optimizer


@dataclass(config=_STRICT)
class OptimizerConfig:
    """An optax optimizer (see `jaxlab.optim.make_optimizer`).

    Attributes:
      name: adam | adamw | sgd | rmsprop | adagrad (case-insensitive).
      learning_rate: peak learning rate (a schedule multiplies or shapes it).
      schedule: learning-rate schedule; constant if unset.
      clip_norm: clip gradients by global norm before the update.
      momentum: sgd / rmsprop momentum.
      nesterov: sgd Nesterov momentum (needs `momentum`).
      weight_decay: adamw decoupled weight decay.
      b1, b2, eps: Adam-family moments and epsilon.
      decay: rmsprop squared-gradient decay.
    """

    name: Literal["adam", "adamw", "sgd", "rmsprop", "adagrad"] = "adam"
    learning_rate: PosFloat = 1e-3
    schedule: Schedule | None = None
    clip_norm: PosFloat | None = None
    momentum: Fraction | None = None
    nesterov: Bool = False
    weight_decay: NonNegFloat = 0.0
    b1: Fraction = 0.9
    b2: Fraction = 0.999
    eps: PosFloat = 1e-8
    decay: Fraction = 0.9

    _lower_name = field_validator("name", mode="before")(_lower)

    @model_validator(mode="after")
    def _check(self) -> OptimizerConfig:
        if self.nesterov and not self.momentum:
            raise ValueError("nesterov: needs momentum > 0")
        if self.momentum is not None and self.name not in ("sgd", "rmsprop"):
            raise ValueError(f"momentum: not used by optimizer {self.name!r}")
        if self.weight_decay and self.name != "adamw":
            raise ValueError(
                f"weight_decay: only adamw has decoupled weight decay, "
                f"got optimizer {self.name!r}"
            )
        return self


# ----------------------------------------------------------------- data


@dataclass(config=_STRICT)
class DataConfig:
    """Where the data comes from and how it is batched.

    Attributes:
      dataset: digits (scikit-learn's 8x8 digits, needs the `data` extra) |
        npz (arrays `x`, `y`, optionally `x_test`, `y_test`) | mnist (IDX files in
        the directory `path`) | csv (numeric columns, one label column).
      path: file or directory, relative to the config file's folder.
      batch_size: global training batch size (split across local devices).
      eval_batch_size: batch size for evaluation (defaults to `batch_size`).
      shuffle: reshuffle the training split each epoch (deterministic in `seed`).
      validation_split: fraction of the training data held out for validation.
      test_split: fraction held out as the test split, where the dataset has none.
      label_column: csv only: the label column's name or index.
      normalize: scale inputs (digits: /16, mnist: /255).
    """

    dataset: Literal["digits", "npz", "mnist", "csv"] = "digits"
    path: Str | None = None
    batch_size: PosInt = 64
    eval_batch_size: PosInt | None = None
    shuffle: Bool = True
    validation_split: Fraction = 0.0
    test_split: Fraction = 0.2
    label_column: Str | Int = -1
    normalize: Bool = True

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.dataset != "digits" and not self.path:
            raise ValueError(f"path: required for dataset {self.dataset!r}")
        if self.validation_split + self.test_split >= 1:
            raise ValueError("validation_split + test_split must be < 1")
        return self


# ----------------------------------------------------------------- model


@dataclass(config=_STRICT)
class ModelConfig:
    """The network and what it is trained for.

    Attributes:
      network: a layer list (``[[Conv2D, {...}], ...]``), a functional graph
        (``{inputs: [...], nodes: [...], outputs: [...]}``) or a builtin
        module (``{module: LeNet, ...args}``); validated by `nets`.
      loss: a loss name from `jaxlab.losses` (softmax_cross_entropy, ...), or a
        mapping ``{name: huber, delta: 2.0}``.
      metrics: streaming metrics computed at evaluation (accuracy, precision, ...).
      num_classes: number of classes; inferred from the labels if unset.
    """

    network: Any
    loss: Str | dict[Str, Any] = "softmax_cross_entropy"
    metrics: list[Str] = dataclasses.field(default_factory=lambda: ["accuracy"])
    num_classes: PosInt | None = None


# ----------------------------------------------------------------- training


@dataclass(config=_STRICT)
class TrainConfig:
    """How long to train and how often to evaluate, log and checkpoint.

    Attributes:
      steps: number of optimizer steps; or give `num_epochs` instead.
      num_epochs: number of passes over the training split.
      eval_every: evaluate on the validation (or test) split every N steps.
      log_every: write training metrics every N steps.
      checkpoint_every: save a checkpoint every N steps (and at the end).
      keep_checkpoints: how many recent checkpoints to keep.
      log_activations: log per-layer activation statistics at evaluation.
      on_nonfinite: what to do when the loss or gradients become NaN/Inf.
    """

    steps: PosInt | None = None
    num_epochs: PosInt | None = None
    eval_every: PosInt = 100
    log_every: PosInt = 10
    checkpoint_every: PosInt = 500
    keep_checkpoints: PosInt = 3
    log_activations: Bool = False
    on_nonfinite: Literal["halt", "skip_step"] = "halt"

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if (self.steps is None) == (self.num_epochs is None):
            raise ValueError("give exactly one of steps and num_epochs")
        return self


@dataclass(config=_STRICT)
class ParallelConfig:
    """Data-parallel execution over local devices.

    Attributes:
      backend: pmap | shard_map.
      devices: "auto" (all local devices) or a number of local devices.
    """

    backend: Literal["pmap", "shard_map"] = "pmap"
    devices: Literal["auto"] | PosInt = "auto"


@dataclass(config=_STRICT)
class ExperimentConfig:
    """A whole experiment: what to train, on what, for how long.

    Attributes:
      name: run name (the default output directory is ``runs/<name>``).
      kind: supervised | rl.
      seed: the one seed everything is derived from.
    """

    name: Annotated[str, Strict(), Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    model: ModelConfig
    train: TrainConfig
    kind: Literal["supervised"] = "supervised"
    seed: NonNegInt = 0
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    parallel: ParallelConfig = dataclasses.field(default_factory=ParallelConfig)


# ----------------------------------------------------------------- RL


@dataclass(config=_STRICT)
class EnvConfig:
    """The environment of an RL run.

    Attributes:
      id: environment id: a JAX-native one (CartPole-v1, Catch, Pendulum-v1) with
        ``backend: jax``, or any gymnasium id with ``backend: gymnasium``.
      backend: jax (the whole run is one compiled program) | gymnasium (a host
        loop around jitted act/update; gymnasium's vector envs).
      num_envs: parallel environments (vmapped on the jax backend).
      kwargs: extra keyword arguments for the environment's constructor.
    """

    id: Annotated[str, Strict(), Field(min_length=1)]
    backend: Literal["jax", "gymnasium"] = "jax"
    num_envs: PosInt = 1
    kwargs: dict[Str, Any] = dataclasses.field(default_factory=dict)


@dataclass(config=_STRICT)
class RLTrainConfig:
    """How long an RL run lasts and how often it evaluates, logs and checkpoints.

    All counts are environment steps (summed over the parallel environments);
    they are rounded up to whole training iterations of the agent.

    Attributes:
      env_steps: total environment steps.
      eval_every: greedy/deterministic evaluation episodes every N env steps.
      eval_episodes: episodes per evaluation.
      log_every: log training metrics every N env steps.
      checkpoint_every: checkpoint the whole runner state every N env steps.
      keep_checkpoints: how many recent checkpoints to keep.
    """

    env_steps: PosInt
    eval_every: PosInt = 10_000
    eval_episodes: PosInt = 10
    log_every: PosInt = 1_000
    checkpoint_every: PosInt = 50_000
    keep_checkpoints: PosInt = 3


@dataclass(config=_STRICT)
class RLExperimentConfig:
    """An RL experiment (``kind: rl``).

    Attributes:
      name: run name (the default output directory is ``runs/<name>``).
      seed: the one seed everything is derived from.
      env: the environment.
      agent: the agent: ``name`` (dqn, ppo, a2c, ...) and its hyperparameters,
        validated by the agent's own config class (`agents.agent_config`).
      optimizer: the optax optimizer of the agent's learner.
      train: budget and cadences, in environment steps.
    """

    name: Annotated[str, Strict(), Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    env: EnvConfig
    agent: dict[Str, Any]
    train: RLTrainConfig
    kind: Literal["rl"] = "rl"
    seed: NonNegInt = 0
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    parallel: ParallelConfig = dataclasses.field(default_factory=ParallelConfig)

    @field_validator("agent")
    @classmethod
    def _check_agent(cls, value: dict[str, Any]) -> dict[str, Any]:
        if "name" not in value:
            raise ValueError("name: required field is missing")
        return value


AnyExperimentConfig = ExperimentConfig | RLExperimentConfig
_KINDS = {"supervised": ExperimentConfig, "rl": RLExperimentConfig}


# ----------------------------------------------------------------- loading


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` (no dot) as a float, as JSON does, and
    builds only JSON's types: no ``!!binary``, ``!!set``, ``!!omap``, ``!!pairs``
    or ``!!timestamp`` (``2024-01-01`` stays a string)."""


_NOT_JSON = {f"tag:yaml.org,2002:{t}" for t in ("binary", "timestamp", "set", "omap")}
_NOT_JSON.add("tag:yaml.org,2002:pairs")
_Loader.yaml_constructors = {
    tag: fn
    for tag, fn in yaml.SafeLoader.yaml_constructors.items()
    if tag not in _NOT_JSON
}
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _NOT_JSON]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
# YAML aliases can make a document that expands exponentially (or a cycle):
# a config holds at most this many values once aliases are expanded.
MAX_VALUES = 1_000_000


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str, source: str = "<string>") -> Any:
    """Parses YAML safely (no object construction); errors name `source`."""
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{source}: invalid YAML{where}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{source}: invalid YAML: nested too deeply") from None
    _check_size(data, source)
    return data


def _check_size(data: Any, source: str) -> None:
    """Raises if `data`, aliases expanded, holds more than `MAX_VALUES` values."""
    stack, count = [data], 0
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise ConfigError(
                f"{source}: more than {MAX_VALUES} values once YAML aliases are "
                "expanded (or an alias cycle)"
            )
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a YAML (.yaml/.yml) or JSON (.json) config file into a dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config file: {e}") from None
    if path.suffix.lower() == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(
                f"{path}: invalid JSON (line {e.lineno}): {e.msg}"
            ) from None
        except RecursionError:
            raise ConfigError(f"{path}: invalid JSON: nested too deeply") from None
    elif path.suffix.lower() in (".yaml", ".yml"):
        raw = parse_yaml(text, str(path))
    else:
        raise ConfigError(f"{path}: config files must end in .yaml, .yml or .json")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a mapping at the top level")
    return raw


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Applies ``a.b=c`` overrides (values parsed as YAML) to a copy of `raw`.

    A numeric path component indexes a list (``model.network.0.1.output_size=32``).
    """
    raw = json.loads(json.dumps(raw))  # deep copy of plain data
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. seed=1")
        parts = key.strip().split(".")
        value = parse_yaml(text, f"--set {key}") if text.strip() else ""
        node: Any = raw
        for i, part in enumerate(parts):
            where = ".".join(parts[: i + 1])
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"{where}: no list item {part!r} to set")
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, {})
            else:
                raise ConfigError(
                    f"{where}: cannot set a field inside a {type(node).__name__}"
                )
    return raw


def _format_loc(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part.startswith("function-"):
            continue  # pydantic's name for a validator step
        elif isinstance(part, str) and (not part or re.search(r"[\s.]", part)):
            out += f"[{part!r}]"  # a key such as '' or 'a.b' (not a field name)
        else:
            out += f".{part}" if out else str(part)
    return out


def _format_error(err: Mapping[str, Any]) -> str:
    loc = list(err.get("loc", ()))
    # Drop discriminated-union tags (e.g. 'exponential_decay') from the path.
    ctx = err.get("ctx") or {}
    msg = str(err.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    if err.get("type") in ("extra_forbidden", "unexpected_keyword_argument"):
        return f"{_format_loc(loc)}: unknown field"
    if err.get("type") == "missing":
        return f"{_format_loc(loc)}: required field is missing"
    if err.get("type") == "invalid_key" or loc[-1:] == ["[key]"]:
        # loc: (..., key) or (..., key, '[key]'); name the mapping, show the key.
        where = _format_loc(loc[: -2 if loc[-1:] == ["[key]"] else -1])
        return f"{where or '<config>'}: keys must be strings, got {err.get('input')!r}"
    if err.get("type") == "union_tag_invalid":
        expected, tag = ctx.get("expected_tags"), ctx.get("tag")
        return f"{_format_loc(loc)}.name: expected one of {expected}, got {tag!r}"
    if err.get("type") == "union_tag_not_found":
        return f"{_format_loc(loc)}.name: required field is missing"
    path = _format_loc(loc)
    # Model validators say "field: problem"; fold the field into the path.
    m = re.match(r"^([a-z_]+): (.*)$", msg)
    if m and err.get("type", "").startswith("value_error"):
        path, msg = f"{path}.{m.group(1)}" if path else m.group(1), m.group(2)
    value = err.get("input")
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    got = "" if err.get("type", "").startswith("value_error") else f", got {shown}"
    return f"{path or '<config>'}: {msg[0].lower() + msg[1:] if msg else msg}{got}"


# Discriminated-union tags that pydantic puts in error paths.
_UNION_TAGS = {
    "constant",
    "exponential_decay",
    "cosine",
    "warmup_cosine",
    "linear",
    "piecewise",
}


# pydantic's labels of plain union members in error paths ('str', 'dict[str,any]').
_MEMBER_LABEL = re.compile(
    r"str|int|float|bool|(dict|list|literal)\[.*\]|constrained-\w+"
)


def validate(cls: Any, raw: Any, *, prefix: str = "") -> Any:
    """Validates plain data into the config dataclass `cls`, or raises `ConfigError`.

    Args:
      cls: a config dataclass (or any type pydantic validates).
      raw: plain data, e.g. a dict read from YAML.
      prefix: the path of `raw` in the whole config (``"optimizer"``), so the
        error names the full field path.
    """
    try:
        return pydantic.TypeAdapter(cls).validate_python(raw)
    except pydantic.ValidationError as e:
        errors = []
        for err in e.errors(include_url=False):
            err = dict(err)
            # Drop union tags from the path (not an unknown key the user wrote).
            unknown = ("extra_forbidden", "unexpected_keyword_argument")
            last = len(err["loc"]) - 1 if err["type"] in unknown else -1
            loc = tuple(
                p
                for i, p in enumerate(err["loc"])
                if i == last
                or (p not in _UNION_TAGS and not _MEMBER_LABEL.fullmatch(str(p)))
            )
            err["loc"] = (prefix, *loc) if prefix else loc
            errors.append(_format_error(err))
        # One line: the first few distinct errors.
        unique = list(dict.fromkeys(errors))
        more = f" (and {len(unique) - 3} more)" if len(unique) > 3 else ""
        raise ConfigError("; ".join(unique[:3]) + more) from None
    except RecursionError:
        raise ConfigError(f"{prefix or '<config>'}: nested too deeply") from None


def validate_config(raw: Mapping[str, Any]) -> AnyExperimentConfig:
    """Validates a plain dict into an experiment config, or raises `ConfigError`.

    ``kind`` (default supervised) picks the schema: `ExperimentConfig` or
    `RLExperimentConfig`.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError("<config>: a config must be a mapping at the top level")
    kind = raw.get("kind", "supervised")
    if not isinstance(kind, str) or kind not in _KINDS:
        raise ConfigError(f"kind: expected 'supervised' or 'rl', got {kind!r}")
    return validate(_KINDS[kind], dict(raw))


def load_config(
    path: str | os.PathLike, overrides: Sequence[str] = ()
) -> AnyExperimentConfig:
    """Reads, overrides and validates a config file; see the module docstring."""
    raw = read_config_file(path)
    return validate_config(apply_overrides(raw, overrides))


def config_to_dict(config: Any) -> dict[str, Any]:
    """The config as plain data (for saving beside a run; round-trips exactly)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
