"""Many runs of one config: seeds and hyperparameter sweeps in one compiled program.

``train(config, run_dir, seeds=N, sweep={"optimizer.learning_rate": [1e-3, 3e-4]})``
(``jaxlab train CONFIG --seeds N --sweep optimizer.learning_rate=1e-3,3e-4``) trains
the Cartesian product of the swept values times the seeds ``config.seed, ...,
config.seed + N - 1``: one *member* per combination.

For ``kind: rl`` on ``env.backend: jax`` whose swept keys are all float
hyperparameters of the agent, optimizer or environment (and ``seed``), the
members run as ONE program: the runner states are stacked along a leading member
axis, the trainer is built inside the traced function with each swept value
replaced by a traced scalar, and ``jax.jit(jax.vmap(chunk))`` runs
``train.log_every`` env steps of every member per call. The chunk takes its length
as an argument (a ``lax.cond`` skips the iterations past it), so the shorter last
chunk reuses the one compiled program. Each member's init and eval keys are those
of a separate run with its seed (`rl_experiment._keys`), so its results equal
that run's up to float rounding (vmap batches the matmuls differently).

Anything else (supervised configs, the gymnasium backend, a swept int, list,
string or bool, or a value that fails to trace) runs the members one after
another, each a normal run directory under ``members/<name>/``.

Run directory::

    <run_dir>/
      population.json        the members (name, seed, swept values), mode, results
      config.yaml            the base config (before --sweep/--seeds)
      metrics.jsonl, events.* mean over the members of each metric, and <key>_std
      checkpoints/           vmapped: the whole population state (leading axis M)
      members/<name>/        metrics.jsonl + events.* (+ config.yaml) per member;
                             sequential: a complete run directory per member
      groups/<name>/         sweeps with --seeds > 1: mean/std over each setting's seeds

Member names are ``seed_<s>`` and, for sweeps, ``<field>_<value>-...-seed_<s>``
(``learning_rate_0.001-seed_0``), with characters outside ``[A-Za-z0-9.+-]``
replaced by ``_``; the field is the last part of the key unless that is ambiguous.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import itertools
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab import checkpoint as ckpt_lib
from jaxlab import compile as compile_lib
from jaxlab import config as config_lib
from jaxlab import logger as logger_lib
from jaxlab import rl_experiment
from jaxlab import run_dir as run_dir_lib
from jaxlab.errors import ConfigError, JaxlabError

SPEC_FILE = "population.json"
MEMBERS_DIR = "members"
GROUPS_DIR = "groups"
# Roots of the config fields a vmapped sweep can replace by traced scalars.
_TRACEABLE_ROOTS = ("agent.", "optimizer.", "env.kwargs.")


class Member(NamedTuple):
    """One run of a population.

    Attributes:
      name: filesystem-safe name (``learning_rate_0.001-seed_0``).
      seed: its seed.
      values: swept key -> value (as parsed from YAML).
      config: its validated config.
      group: the name without the seed (the swept setting), '' without sweep.
    """

    name: str
    seed: int
    values: dict[str, Any]
    config: config_lib.AnyExperimentConfig
    group: str


class Population(NamedTuple):
    """The members of ``--seeds``/``--sweep``, in order (seed varies fastest)."""

    members: list[Member]
    seeds: int
    sweep: dict[str, list[str]]


class PopulationResults(NamedTuple):
    """The final results of a population.

    Attributes:
      members: member name -> its final results (RL: ``mean_return``;
        supervised: test metrics).
      mean: mean over the members of each result.
      std: standard deviation (ddof 0) over the members.
      vmapped: True if the members ran as one vmapped program.
      reason: why they ran sequentially (None if vmapped).
    """

    members: dict[str, dict[str, float]]
    mean: dict[str, float]
    std: dict[str, float]
    vmapped: bool
    reason: str | None


# ----------------------------------------------------------------- members


def parse_sweep(items: Sequence[str]) -> dict[str, list[str]]:
    """Parses ``--sweep KEY=V1,V2,...`` flags into ``{key: [value text, ...]}``.

    Values are split at commas outside brackets and quotes (``agent.hidden=[32,
    32],[64,64]`` is two values) and later parsed as YAML, like ``--set``.
    """
    sweep: dict[str, list[str]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or not text.strip():
            raise ConfigError(
                f"--sweep {item!r}: expected KEY=V1,V2,..., e.g. "
                "optimizer.learning_rate=1e-3,3e-4"
            )
        if key in sweep:
            raise ConfigError(f"--sweep {key}: given twice (list all values in one)")
        values = _split_values(text)
        if any(not v.strip() for v in values):
            raise ConfigError(f"--sweep {item!r}: empty value")
        sweep[key] = values
    return sweep


def _split_values(text: str) -> list[str]:
    values, depth, quote, start = [], 0, "", 0
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            values.append(text[start:i].strip())
            start = i + 1
    return [*values, text[start:].strip()]


def make_population(
    config: config_lib.AnyExperimentConfig,
    *,
    seeds: int = 1,
    sweep: Mapping[str, Sequence[Any]] | None = None,
) -> Population:
    """The members of `config` swept over `sweep` times `seeds` seeds.

    Args:
      config: the base config.
      seeds: seeds per setting: ``seed, seed + 1, ..., seed + seeds - 1``.
      sweep: key -> values; a string value is parsed as YAML (like ``--set``),
        any other is used as is.

    Raises:
      ConfigError: naming the flag and the field, for a bad count, key or value.
    """
    from jaxlab import experiment

    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"--seeds: expected a positive int, got {seeds!r}")
    texts = {
        key: [v if isinstance(v, str) else json.dumps(v) for v in values]
        for key, values in (sweep or {}).items()
    }
    base = config_lib.config_to_dict(config)

    def validated(overrides: Sequence[tuple[str, str]]) -> Any:
        flags = " ".join(f"{k}={t}" for k, t in overrides)
        try:
            raw = config_lib.apply_overrides(base, [f"{k}={t}" for k, t in overrides])
            member = config_lib.validate_config(raw)
            experiment.check(member)
        except ConfigError as e:
            raise ConfigError(f"--sweep {flags}: {e}") from None
        return member

    parsed: dict[str, list[Any]] = {}
    for key, values in texts.items():
        if not values:
            raise ConfigError(f"--sweep {key}: no values")
        if key.split(".")[0] in ("name", "kind"):
            raise ConfigError(f"--sweep {key}: cannot be swept")
        parsed[key] = [config_lib.parse_yaml(t, f"--sweep {key}") for t in values]
        seen = [json.dumps(v, sort_keys=True) for v in parsed[key]]
        if len(set(seen)) < len(seen):
            raise ConfigError(f"--sweep {key}: a value is given twice")
        for text in values:
            validated([(key, text)])
    labels = _labels(list(texts))
    members, names = [], set()
    for combo in itertools.product(*(range(len(v)) for v in texts.values())):
        overrides = [(k, texts[k][i]) for k, i in zip(texts, combo, strict=True)]
        values = {k: parsed[k][i] for k, i in zip(texts, combo, strict=True)}
        setting = validated(overrides) if overrides else config
        group = "-".join(
            f"{labels[k]}_{_slug(v)}" for k, v in values.items() if k != "seed"
        )
        for offset in range(seeds):
            seed = setting.seed + offset
            name = f"{group}-seed_{seed}" if group else f"seed_{seed}"
            name = _unique(name, names)
            member_config = dataclasses.replace(setting, seed=seed)
            members.append(Member(name, seed, values, member_config, group))
    seen_configs: dict[str, str] = {}
    for m in members:
        resolved = json.dumps(config_lib.config_to_dict(m.config), sort_keys=True)
        if resolved in seen_configs:
            raise ConfigError(
                f"--seeds/--sweep: members {seen_configs[resolved]} and {m.name} "
                "would be the same run"
            )
        seen_configs[resolved] = m.name
    return Population(members, seeds, texts)


def _labels(keys: Sequence[str]) -> dict[str, str]:
    leaves = [k.rsplit(".", 1)[-1] for k in keys]
    return {
        k: leaf if leaves.count(leaf) == 1 and not leaf.isdigit() else k
        for k, leaf in zip(keys, leaves, strict=True)
    }


def _slug(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"), sort_keys=True)
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "_"


def _unique(name: str, taken: set[str]) -> str:
    candidate, i = name, 1
    while candidate in taken:
        i += 1
        candidate = f"{name}-{i}"
    taken.add(candidate)
    return candidate


def _resolve(config: config_lib.AnyExperimentConfig, key: str) -> Any:
    """The validated value of `key` in `config` (agent fields as validated by
    the agent's config class); None where the path does not exist."""
    root, *rest = key.split(".")
    if root == "agent":
        import agents

        node: Any = agents.agent_config(config.agent)
    else:
        node = getattr(config, root, None)
    for part in rest:
        if isinstance(node, Mapping):
            node = node.get(part)
        elif isinstance(node, list | tuple):
            node = node[int(part)] if part.isdigit() and int(part) < len(node) else None
        else:
            node = getattr(node, part, None)
    return node


def _type_name(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


def why_sequential(population: Population) -> str | None:
    """Why the members cannot share one vmapped program from their configs
    alone, or None (tracing may still fail: see `train`)."""
    config = population.members[0].config
    if config.kind != "rl":
        return "supervised runs are not vmapped"
    if config.env.backend != "jax":
        return "env.backend gymnasium steps its environments on the host"
    for key in population.sweep:
        if key == "seed":
            continue
        kinds = sorted(
            {_type_name(_resolve(m.config, key)) for m in population.members}
        )
        if kinds != ["float"]:
            return f"--sweep {key} is not traceable ({'/'.join(kinds)})"
        if not key.startswith(_TRACEABLE_ROOTS):
            return (
                f"--sweep {key} is not traceable (only agent.*, optimizer.* and "
                "env.kwargs.* floats are)"
            )
    return None


# ----------------------------------------------------------------- vmapped


def _with(node: Any, parts: Sequence[str], value: Any) -> Any:
    """A copy of `node` with the field at `parts` set to `value`, unvalidated:
    the configs are frozen pydantic dataclasses, which reject a tracer."""
    if not parts:
        return value
    head, rest = parts[0], parts[1:]
    if isinstance(node, Mapping):
        return {**node, head: _with(node[head], rest, value)}
    new = copy.copy(node)
    object.__setattr__(new, head, _with(getattr(node, head), rest, value))
    return new


class _Vmapped:
    """The members' trainers as one population: stacked states, one program.

    Building it traces init, chunk and evaluation once (nothing is compiled
    yet), so a hyperparameter that cannot be traced raises here.
    """

    def __init__(self, population: Population):
        import agents

        members = population.members
        self.config = config = members[0].config
        self.entry = agents.AGENTS[config.agent["name"]]
        self.agent_config = agents.agent_config(config.agent)
        paths = [k for k in population.sweep if k != "seed"]
        self.hparams = {
            k: jnp.asarray([_resolve(m.config, k) for m in members], jnp.float32)
            for k in paths
        }
        keys = [rl_experiment._keys(m.seed) for m in members]
        self.init_keys = jnp.stack([k[0] for k in keys])  # [M]
        self.eval_keys = jnp.stack([k[1] for k in keys])  # [M]
        trainer = self._build({})
        self.iterations = (
            getattr(trainer, "num_updates", None) or trainer.num_iterations
        )
        self.steps_per_iteration = (
            getattr(trainer, "steps_per_update", None) or trainer.steps_per_iteration
        )
        self.cadence = rl_experiment.cadence(config.train, self.steps_per_iteration)
        # Members are initialised one by one (one compiled program, M calls):
        # a vmapped init batches the orthogonal initialisers' QR factorisations,
        # and on a 2-thread XLA CPU pool two concurrent batched LAPACK calls
        # (actor and critic) wait on each other forever (jaxlib 0.10).
        self._init_one = jax.jit(self._member_init)
        self._init_shapes = jax.vmap(self._member_init)
        # The training program's compiler options, as a separate run's `run`
        # (`jaxlab.compile.jit_training`: LLVM level 1 on a CPU).
        self.chunk_program = compile_lib.jit_training(self.population_chunk)
        # Compiled as a separate run's `evaluate` is (`jaxlab.compile`), so
        # the members' greedy returns are the separate runs'.
        self._evaluate = compile_lib.jit_rarely_run(
            jax.vmap(self._member_evaluate, in_axes=(0, 0, 0, None)),
            static_argnums=3,
        )
        state = jax.eval_shape(self._init_shapes, self.init_keys, self.hparams)
        n = jax.ShapeDtypeStruct((), jnp.int32)
        jax.eval_shape(self.chunk_program, state, self.hparams, n)
        episodes = config.train.eval_episodes
        jax.eval_shape(
            self._evaluate, state.agent, self.eval_keys, self.hparams, episodes
        )

    def _build(self, hparams: Mapping[str, Any]) -> Any:
        agent, optimizer = self.agent_config, self.config.optimizer
        env = self.config.env
        kwargs = dict(env.kwargs)
        for path, value in hparams.items():
            root, *rest = path.split(".")
            if root == "agent":
                agent = _with(agent, rest, value)
            elif root == "optimizer":
                optimizer = _with(optimizer, rest, value)
            else:  # env.kwargs.<name>...
                kwargs = _with(kwargs, rest[1:], value)
        return self.entry.make_train(
            env.id,
            agent,
            optimizer,
            num_envs=env.num_envs,
            total_env_steps=self.config.train.env_steps,
            **kwargs,
        )

    def _member_init(self, key: jax.Array, hparams: dict) -> Any:
        return self._build(hparams).init(key)

    def _member_evaluate(self, agent: Any, key: jax.Array, hparams: dict, n: int):
        return self._build(hparams).evaluate(agent, key, num_episodes=n)

    def population_chunk(self, states: Any, hparams: dict, n: jax.Array):
        """`n` (<= cadence.log) iterations of every member; metrics [M, log]."""

        def member(state, hparams):
            trainer = self._build(hparams)

            def step(s):
                s, metrics = trainer.run(s, 1)
                return s, jax.tree.map(lambda x: x[0], metrics)

            shapes = jax.eval_shape(step, state)[1]

            def skip(s):
                return s, jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)

            def body(s, i):
                return jax.lax.cond(i < n, step, skip, s)

            return jax.lax.scan(body, state, jnp.arange(self.cadence.log))

        return jax.vmap(member)(states, hparams)

    def init(self) -> Any:
        """The members' initial states (each that of its own run), stacked."""
        states = [
            self._init_one(key, {k: v[i] for k, v in self.hparams.items()})
            for i, key in enumerate(self.init_keys)
        ]
        return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)

    def init_compiling_ahead(self) -> Any:
        """`init`, while the chunk program and the evaluation compile on
        background threads (`jaxlab.compile.run_while_compiling`)."""
        state = jax.eval_shape(self._init_shapes, self.init_keys, self.hparams)
        n = jax.ShapeDtypeStruct((), jnp.int32)
        keys = jax.eval_shape(
            lambda k: jax.vmap(jax.random.fold_in, in_axes=(0, None))(k, 1),
            self.eval_keys,
        )
        episodes = self.config.train.eval_episodes
        return compile_lib.run_while_compiling(
            self.init,
            [
                lambda: self.chunk_program.lower(state, self.hparams, n),
                lambda: self._evaluate.lower(state.agent, keys, self.hparams, episodes),
            ],
        )

    def template(self) -> Any:
        """The population state's structure, a restore target (not compiled)."""

        def leaf(s):
            if jax.dtypes.issubdtype(s.dtype, jax.dtypes.prng_key):
                return jax.random.split(jax.random.key(0), s.shape)
            return s

        shapes = jax.eval_shape(self._init_shapes, self.init_keys, self.hparams)
        return jax.tree.map(leaf, shapes)

    def run(self, state: Any, n: int) -> tuple[Any, dict[str, np.ndarray]]:
        state, metrics = self.chunk_program(state, self.hparams, jnp.int32(n))
        return state, {k: v[:, :n] for k, v in jax.device_get(metrics).items()}

    def evaluate(self, state: Any, iteration: int, episodes: int) -> np.ndarray:
        """Each member's mean return with the key of its own run, [M]."""
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(
            self.eval_keys, iteration
        )
        return np.asarray(self._evaluate(state.agent, keys, self.hparams, episodes))


class _Logs:
    """The population's loggers: one per member, the aggregate, the groups."""

    def __init__(self, run_path, population, *, total_steps, quiet, resume_step):
        members = population.members
        self.root = logger_lib.MetricLogger(
            run_path, total_steps=total_steps, quiet=quiet, resume_step=resume_step
        )
        self.members = [
            logger_lib.MetricLogger(
                _member_dir(run_path, m),
                total_steps=None,
                quiet=True,
                resume_step=resume_step,
            )
            for m in members
        ]
        self.groups = {
            group: (
                logger_lib.MetricLogger(
                    run_path / GROUPS_DIR / group,
                    total_steps=None,
                    quiet=True,
                    resume_step=resume_step,
                ),
                [i for i, m in enumerate(members) if m.group == group],
            )
            for group in _groups(population)
        }

    def log(self, step: int, rows: Sequence[Mapping[str, float]]) -> None:
        for log, row in zip(self.members, rows, strict=True):
            log.log(step, row)
        self.root.log(step, aggregate(rows))
        for log, indices in self.groups.values():
            log.log(step, aggregate([rows[i] for i in indices]))

    def close(self) -> None:
        for log in [*self.members, *(g[0] for g in self.groups.values()), self.root]:
            log.close()


def _groups(population: Population) -> list[str]:
    """The swept settings that have several seeds (each gets an aggregate)."""
    groups = collections.Counter(m.group for m in population.members if m.group)
    return [g for g, count in groups.items() if count > 1]


def _member_dir(run_path: Path, member: Member) -> Path:
    return run_path / MEMBERS_DIR / member.name


def _train_vmapped(
    vm: _Vmapped,
    population: Population,
    run_path: Path,
    checkpointer: ckpt_lib.Checkpointer,
    *,
    quiet: bool,
):
    members = population.members
    tc, spi, cad = vm.config.train, vm.steps_per_iteration, vm.cadence
    done = 0
    if checkpointer.latest_step() is None:
        state = vm.init_compiling_ahead()
    else:
        state, meta = checkpointer.restore(vm.template())
        done = run_dir_lib.meta_count(meta, "iteration", checkpointer)

    def evaluate(iteration: int) -> list[dict[str, float]]:
        returns = vm.evaluate(state, iteration, tc.eval_episodes)
        return [{"mean_return": float(r)} for r in returns]

    if done >= vm.iterations:
        if not quiet:
            print(f"{run_path}: already trained")
        return dict(zip([m.name for m in members], evaluate(done), strict=True))

    for m in members:
        path = _member_dir(run_path, m)
        path.mkdir(parents=True, exist_ok=True)
        resolved = config_lib.config_to_dict(m.config)
        logger_lib.atomic_write_text(
            path / run_dir_lib.CONFIG_FILE, config_lib.dump_yaml(resolved)
        )
    kill_at = rl_experiment.kill_step()
    logs = _Logs(
        run_path,
        population,
        total_steps=vm.iterations * spi,
        quiet=quiet,
        resume_step=done * spi,
    )
    try:
        if done:
            logs.root.message(f"resuming {run_path} from env step {done * spi}")
        results: list[dict[str, float]] = []
        while done < vm.iterations:
            n = min(cad.log, vm.iterations - done)
            state, metrics = vm.run(state, n)
            before, done = done * spi, done + n
            env_steps = done * spi
            rows = [
                {
                    f"train/{k}": v
                    for k, v in rl_experiment.summarize(
                        {name: values[i] for name, values in metrics.items()}
                    ).items()
                }
                for i in range(len(members))
            ]
            logs.log(env_steps, rows)
            if done % cad.eval == 0 or done == vm.iterations:
                results = evaluate(done)
                logs.log(
                    env_steps, [{"eval/mean_return": r["mean_return"]} for r in results]
                )
            if done % cad.checkpoint == 0 or done == vm.iterations:
                meta = {"iteration": done, "step": env_steps, "members": len(members)}
                run_dir_lib.save_checkpoint(checkpointer, env_steps, state, meta)
            rl_experiment.kill_if_due(kill_at, before, env_steps, state)
    finally:
        logs.close()
    return dict(zip([m.name for m in members], results, strict=True))


# ----------------------------------------------------------------- aggregates


def aggregate(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Mean and standard deviation (ddof 0) over members of each metric.

    Args:
      rows: one ``{metric: value}`` per member; a member without a metric (no
        episode finished in the chunk) is left out of that metric.

    Returns:
      ``{metric: mean, metric + "_std": std}`` for each metric, in first-seen order.
    """
    out: dict[str, float] = {}
    for key in dict.fromkeys(k for row in rows for k in row):
        values = np.asarray([row[key] for row in rows if key in row], np.float64)
        out[key] = float(values.mean())
        out[f"{key}_std"] = float(values.std())
    return out


def _rows_by_step(records: Sequence[Mapping[str, Any]]) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    for record in records:
        row = out.setdefault(record["step"], {})
        row.update(
            (k, v) for k, v in record.items() if k not in ("step", "time", "elapsed")
        )
    return out


def _write_aggregates(run_path: Path, population: Population) -> None:
    """Aggregate curves of sequential members, from their metrics files."""
    by_member = [
        _rows_by_step(logger_lib.read_metrics(_member_dir(run_path, m)))
        for m in population.members
    ]
    targets = [(run_path, list(range(len(by_member))))]
    for group in _groups(population):
        indices = [i for i, m in enumerate(population.members) if m.group == group]
        targets.append((run_path / GROUPS_DIR / group, indices))
    for path, indices in targets:
        steps = sorted({s for i in indices for s in by_member[i]})
        with logger_lib.MetricLogger(
            path, total_steps=None, quiet=True, resume_step=-1
        ) as log:
            for step in steps:
                agg = aggregate(
                    [by_member[i][step] for i in indices if step in by_member[i]]
                )
                prefixes = dict.fromkeys(k.split("/", 1)[0] for k in agg)
                for prefix in prefixes:  # one line per prefix, as single runs log
                    log.log(
                        step,
                        {k: v for k, v in agg.items() if k.split("/", 1)[0] == prefix},
                    )


# ----------------------------------------------------------------- the shell


def _spec(population: Population, vmapped: bool | None, reason: str | None) -> dict:
    mode = {True: "vmap", False: "sequential", None: "undecided"}[vmapped]
    return json.loads(
        json.dumps(
            {
                "seeds": population.seeds,
                "sweep": population.sweep,
                "mode": mode,
                "reason": reason,
                "members": [
                    {"name": m.name, "seed": m.seed, "values": m.values}
                    for m in population.members
                ],
            }
        )
    )


def _describe(spec: Mapping[str, Any]) -> str:
    flags = f"--seeds {spec.get('seeds')}"
    for key, values in (spec.get("sweep") or {}).items():
        flags += f" --sweep {key}={','.join(values)}"
    return f"{flags} ({len(spec.get('members', []))} members)"


def load_spec(run_dir: str | Path) -> dict | None:
    """The saved population spec of a run directory, or None for a single run."""
    file = Path(run_dir) / SPEC_FILE
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise JaxlabError(f"{file}: unreadable population spec ({e})") from None


def check_single_run(run_dir: str | Path) -> None:
    """Raises if `run_dir` holds a population (a plain `jaxlab train` on it)."""
    spec = load_spec(run_dir)
    if spec is not None:
        raise ConfigError(
            f"--output-dir {run_dir}: holds a population run ({_describe(spec)}); "
            "pass the same --seeds/--sweep to resume it, or use another --output-dir"
        )


def _check_resumable(run_path: Path, spec: dict) -> bool:
    saved = load_spec(run_path)
    if saved is not None:
        if saved.get("members") != spec["members"]:
            raise ConfigError(
                f"--seeds/--sweep: the population in {run_path} was started with "
                f"{_describe(saved)}, now {_describe(spec)}; resuming would not "
                "reproduce it (use another --output-dir)"
            )
        return True
    if (run_path / run_dir_lib.CONFIG_FILE).is_file():
        raise ConfigError(
            f"--seeds/--sweep: {run_path} holds a single run, not a population; "
            "use another --output-dir"
        )
    return False


def _vmapped_or_why_not(population: Population) -> tuple[_Vmapped | None, str | None]:
    reason = why_sequential(population)
    if reason is not None:
        return None, reason
    try:
        return _Vmapped(population), None
    except Exception as e:  # anything a tracer breaks: run them one by one
        swept = ", ".join(k for k in population.sweep if k != "seed")
        if swept:
            return None, f"--sweep {swept} is not traceable ({type(e).__name__})"
        return None, f"the run cannot be vmapped ({type(e).__name__}: {e})"


def train(
    config: config_lib.AnyExperimentConfig,
    run_dir: str | Path,
    *,
    seeds: int = 1,
    sweep: Mapping[str, Sequence[Any]] | None = None,
    quiet: bool = False,
) -> PopulationResults:
    """Trains (or resumes) a population: `seeds` seeds of each swept setting.

    Args:
      config: the base config.
      run_dir: the population's run directory (see the module docstring).
      seeds: seeds per setting, from ``config.seed`` on.
      sweep: key -> values (strings parsed as YAML, like ``--set``).
      quiet: no progress bar; the summary table is printed anyway.

    Returns:
      Per-member and aggregate final results.
    """
    population = make_population(config, seeds=seeds, sweep=sweep)
    count = len(population.members)
    run_path = run_dir_lib.prepare(run_dir)
    with run_dir_lib.RunLock(run_path):
        spec = _spec(population, None, None)
        resuming = _check_resumable(run_path, spec)
        if not resuming:  # first: a directory with a config.yaml and no spec is
            # a single run (see _check_resumable)
            logger_lib.atomic_write_text(run_path / SPEC_FILE, json.dumps(spec))
        run_dir_lib.save_config(run_path, config, resuming=resuming)
        vm, reason = _vmapped_or_why_not(population)
        if reason is not None:
            print(
                f"jaxlab: {reason}; running {count} runs sequentially", file=sys.stderr
            )
        elif not quiet:
            print(f"jaxlab: training {count} runs as one vmapped program")
        spec = _spec(population, vm is not None, reason)
        logger_lib.atomic_write_text(run_path / SPEC_FILE, json.dumps(spec, indent=2))
        if vm is not None:
            checkpointer = ckpt_lib.Checkpointer(
                run_path / run_dir_lib.CHECKPOINT_DIR,
                keep=config.train.keep_checkpoints,
            )
            try:
                by_member = _train_vmapped(
                    vm, population, run_path, checkpointer, quiet=quiet
                )
            finally:
                checkpointer.close()
        else:
            from jaxlab import experiment

            by_member = {}
            for i, m in enumerate(population.members, 1):
                if not quiet:
                    print(f"jaxlab: [{i}/{count}] {m.name}")
                by_member[m.name] = dict(
                    experiment.train(m.config, _member_dir(run_path, m), quiet=quiet)
                )
            _write_aggregates(run_path, population)
        results = _results(by_member, vm is not None, reason)
        spec["results"] = {
            "members": results.members,
            "mean": results.mean,
            "std": results.std,
        }
        logger_lib.atomic_write_text(run_path / SPEC_FILE, json.dumps(spec, indent=2))
    print(summary_table(results))
    return results


def _results(by_member, vmapped: bool, reason: str | None) -> PopulationResults:
    agg = aggregate(list(by_member.values()))
    keys = dict.fromkeys(k for r in by_member.values() for k in r)
    return PopulationResults(
        members=by_member,
        mean={k: agg[k] for k in keys},
        std={k: agg[f"{k}_std"] for k in keys},
        vmapped=vmapped,
        reason=reason,
    )


def summary_table(results: PopulationResults) -> str:
    """Members as rows, final results as columns, then mean and std."""
    keys = [k for k in results.mean if "/" not in k]
    rows = [
        [name, *(f"{r.get(k, float('nan')):.4g}" for k in keys)]
        for name, r in results.members.items()
    ]
    rows.append(["mean", *(f"{results.mean[k]:.4g}" for k in keys)])
    rows.append(["std", *(f"{results.std[k]:.4g}" for k in keys)])
    header = ["member", *keys]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    return "\n".join(lines)


def evaluate_run(
    run_dir: str | Path, *, episodes: int | None = None
) -> dict[str, float]:
    """Evaluates every member of an RL population (or, given a member's
    directory, that member); with the default number of episodes this
    reproduces the final evaluation.

    Returns:
      ``step``, the mean and ``_std`` of each result, and ``<member>/<result>``.
    """
    run_path = Path(run_dir)
    member = None
    if load_spec(run_path) is None:  # a member directory of a vmapped population
        member, run_path = run_path.name, run_path.parent.parent
    spec = load_spec(run_path)
    if spec is None:
        raise JaxlabError(f"{run_dir}: not a population run")
    config = run_dir_lib.load_run_config(run_path)
    if config.kind != "rl":
        raise JaxlabError(
            f"{run_path}: a population of supervised runs; evaluate a member: "
            f"jaxlab eval {run_path / MEMBERS_DIR}/<member>"
        )
    population = make_population(config, seeds=spec["seeds"], sweep=spec["sweep"])
    by_member: dict[str, dict[str, float]] = {}
    if spec.get("mode") == "vmap":
        vm = _Vmapped(population)
        checkpointer = ckpt_lib.Checkpointer(run_path / run_dir_lib.CHECKPOINT_DIR)
        if checkpointer.latest_step() is None:
            raise JaxlabError(f"{run_path}: no checkpoint to evaluate")
        try:
            state, meta = checkpointer.restore(vm.template())
            iteration = run_dir_lib.meta_count(meta, "iteration", checkpointer)
            step = run_dir_lib.meta_count(meta, "step", checkpointer)
        finally:
            checkpointer.close()
        returns = vm.evaluate(state, iteration, episodes or config.train.eval_episodes)
        for m, r in zip(population.members, returns, strict=True):
            by_member[m.name] = {"mean_return": float(r)}
    else:
        for m in population.members:
            result = rl_experiment.evaluate_run(
                m.config, _member_dir(run_path, m), episodes=episodes
            )
            step = result.pop("step")
            by_member[m.name] = result
    if member is not None:
        if member not in by_member:
            raise JaxlabError(f"{run_dir}: no member {member!r} in {run_path}")
        return {"step": step, **by_member[member]}
    results = _results(by_member, spec.get("mode") == "vmap", spec.get("reason"))
    flat: dict[str, float] = {"step": step}
    for key, mean in results.mean.items():
        flat[key] = mean
        flat[f"{key}_std"] = results.std[key]
    for name, values in by_member.items():
        flat.update((f"{name}/{k}", v) for k, v in values.items())
    return flat


def is_population(run_dir: str | Path) -> bool:
    """True for a population's run directory or a vmapped member's directory."""
    path = Path(run_dir)
    if load_spec(path) is not None:
        return True
    if path.parent.name != MEMBERS_DIR:
        return False
    spec = load_spec(path.parent.parent)
    return spec is not None and spec.get("mode") == "vmap"


__all__ = [
    "Member",
    "Population",
    "PopulationResults",
    "aggregate",
    "check_single_run",
    "evaluate_run",
    "is_population",
    "load_spec",
    "make_population",
    "parse_sweep",
    "summary_table",
    "train",
    "why_sequential",
]
