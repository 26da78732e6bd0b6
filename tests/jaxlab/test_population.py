"""`--seeds`/`--sweep` populations: one vmapped program equals separate runs.

Compiling dominates these tests, so the expensive pieces (a population of 3 seeds
and the 3 separate runs it must equal) are module fixtures, and `share_programs`
lets runs of the same program reuse its compiled functions: separate runs that
differ only in the seed share one `rl_experiment._Run`, and a population resumed
in-process shares the `_Vmapped` of the same members. (Every run still goes
through `experiment.train` / `population.train`; a compiled program is a pure
function of the config minus the seed.)
"""

from __future__ import annotations

import collections
import contextlib
import json
import signal
import threading

import jax
import numpy as np
import pytest
import yaml
from conftest import run_cli, small_config
from jax import monitoring

from jaxlab import checkpoint, cli, experiment, logger, population, rl_experiment
from jaxlab import config as config_lib

SEED = 3
CHUNK = "jit(population_chunk)"


def ppo_raw(**train) -> dict:
    # 64 env steps per update, 3 updates per chunk; 1152 steps = 6 whole chunks.
    return {
        "name": "tiny-ppo",
        "kind": "rl",
        "seed": SEED,
        "env": {"id": "CartPole-v1", "backend": "jax", "num_envs": 4},
        "agent": {
            "name": "ppo",
            "num_steps": 16,
            "update_epochs": 2,
            "num_minibatches": 2,
            "hidden": [16, 16],
        },
        "optimizer": {"name": "adam", "learning_rate": 3e-3},
        "train": {
            "env_steps": 1152,
            "eval_every": 576,
            "eval_episodes": 2,
            "log_every": 192,
            "checkpoint_every": 384,
            **train,
        },
    }


def dqn_raw() -> dict:
    return {
        "name": "tiny-dqn",
        "kind": "rl",
        "seed": 1,
        "env": {"id": "Catch", "backend": "jax", "num_envs": 4},
        "agent": {
            "name": "dqn",
            "hidden": [16],
            "target_update_period": 5,
            "exploration": {"start": 1.0, "end": 0.1, "steps": 200},
            "replay": {"capacity": 300, "batch_size": 8, "min_size": 32},
            "train_freq": 2,
        },
        "optimizer": {"name": "adam", "learning_rate": 1e-3},
        # 8 env steps per iteration, 5 per chunk: 11 chunks and a last one of 2.
        "train": {
            "env_steps": 456,
            "eval_every": 240,
            "eval_episodes": 4,
            "log_every": 40,
            "checkpoint_every": 200,
        },
    }


@contextlib.contextmanager
def count_compiles():
    """Counts XLA compilations by function name; "thread:<name>" holds the
    thread of that function's last compilation."""
    counts: collections.Counter = collections.Counter()

    def listener(event, duration, **kwargs):
        del duration
        if event == "/jax/core/compile/backend_compile_duration":
            counts[kwargs.get("fun_name")] += 1
            # Where it compiled: "thread:<fun_name>" -> that thread's name.
            counts[f"thread:{kwargs.get('fun_name')}"] = threading.current_thread().name

    monitoring.register_event_duration_secs_listener(listener)
    try:
        yield counts
    finally:
        monitoring.unregister_event_duration_listener(listener)


def rows(run_dir) -> list[dict]:
    return [
        {k: v for k, v in r.items() if k not in ("time", "elapsed")}
        for r in logger.read_metrics(run_dir)
    ]


def _key_template(shape):
    key = jax.random.key(0)
    return jax.random.split(key, shape) if shape else key


def template(config, members: int | None = None):
    """A restore target for a run's (or a population's) RunnerState, uncompiled."""
    run = rl_experiment._Run(config)
    shapes = jax.eval_shape(run.trainer.init, rl_experiment._keys(config.seed)[0])
    run.close()

    def leaf(s):
        shape = s.shape if members is None else (members, *s.shape)
        if jax.dtypes.issubdtype(s.dtype, jax.dtypes.prng_key):
            return _key_template(shape)
        return jax.ShapeDtypeStruct(shape, s.dtype)

    return jax.tree.map(leaf, shapes)


def final_state(run_dir, config, members=None):
    with checkpoint.Checkpointer(run_dir / "checkpoints") as ckpt:
        return ckpt.restore(template(config, members))


def member_slice(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


def assert_close(a, b, rtol=1e-5, atol=1e-6):
    """Vmapped and single programs batch matmuls differently: equal up to float
    rounding (measured ~1e-7 after these few updates)."""
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def single_run(tmp, raw, seed, name):
    config = config_lib.validate_config({**raw, "seed": seed})
    run_dir = tmp / name
    results = experiment.train(config, run_dir, quiet=True)
    return run_dir, config, results


@pytest.fixture(scope="module", autouse=True)
def share_programs():
    runs, populations = {}, {}
    make_run, make_population = rl_experiment._Run, population._Vmapped

    def shared_run(config):
        key = json.dumps({**config_lib.config_to_dict(config), "seed": None})
        if key not in runs:
            runs[key] = make_run(config)
        return runs[key]

    def shared_population(pop):
        key = json.dumps(
            [[m.seed, config_lib.config_to_dict(m.config)] for m in pop.members]
        )
        if key not in populations:
            populations[key] = make_population(pop)
        return populations[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rl_experiment, "_Run", shared_run)
        patch.setattr(population, "_Vmapped", shared_population)
        yield


@pytest.fixture(scope="module")
def ppo_population(tmp_path_factory):
    """3 seeds of tiny PPO as one program, with its compile counts."""
    tmp = tmp_path_factory.mktemp("ppo_population")
    config = config_lib.validate_config(ppo_raw())
    with count_compiles() as compiles:
        results = population.train(config, tmp / "pop", seeds=3, quiet=True)
    return tmp / "pop", config, results, dict(compiles)


@pytest.fixture(scope="module")
def ppo_singles(tmp_path_factory):
    """The 3 separate runs the population must equal."""
    tmp = tmp_path_factory.mktemp("ppo_singles")
    return [single_run(tmp, ppo_raw(), SEED + i, f"s{i}") for i in range(3)]


def test_seeds_equal_separate_runs(ppo_population, ppo_singles):
    run_dir, config, results, _ = ppo_population
    assert results.vmapped and results.reason is None
    names = [f"seed_{SEED + i}" for i in range(3)]
    assert list(results.members) == names
    state, meta = final_state(run_dir, config, members=3)
    assert meta["step"] == 1152 and meta["members"] == 3
    for i, (single_dir, single_config, single_results) in enumerate(ppo_singles):
        single_state, _ = final_state(single_dir, single_config)
        assert_close(member_slice(state, i), single_state)
        member = results.members[names[i]]
        assert member["mean_return"] == pytest.approx(
            single_results["mean_return"], rel=1e-6
        )
        # The member's curve is the separate run's curve.
        mine, theirs = rows(run_dir / "members" / names[i]), rows(single_dir)
        assert [r["step"] for r in mine] == [r["step"] for r in theirs]
        for a, b in zip(mine, theirs, strict=True):
            assert a.keys() == b.keys()
            for key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    mean = np.mean([r["mean_return"] for r in results.members.values()])
    assert results.mean["mean_return"] == pytest.approx(mean)


def test_aggregate_rows_are_mean_and_std_of_distinct_member_rows(ppo_population):
    run_dir, _, results, _ = ppo_population
    members = [rows(run_dir / "members" / name) for name in results.members]
    curves = [tuple(r["train/loss"] for r in m if "train/loss" in r) for m in members]
    assert len(set(curves)) == 3  # each member its own curve
    root = rows(run_dir)
    assert len(root) == len(members[0])
    for i, row in enumerate(root):
        member_rows = [m[i] for m in members]
        assert all(r["step"] == row["step"] for r in member_rows)
        for key in member_rows[0]:
            if key == "step":
                continue
            values = [r[key] for r in member_rows if key in r]
            assert row[key] == pytest.approx(np.mean(values), rel=1e-12)
            assert row[f"{key}_std"] == pytest.approx(np.std(values), abs=1e-12)
    steps = [r["step"] for r in root if "eval/mean_return" in r]
    assert steps == [576, 1152]
    assert "eval/mean_return_std" in root[-1]
    spec = json.loads((run_dir / "population.json").read_text())
    assert spec["mode"] == "vmap" and spec["results"]["members"] == results.members


def test_one_compile_of_the_chunk_program(ppo_population):
    *_, compiles = ppo_population
    assert compiles[CHUNK] == 1  # 6 chunks
    # Compiled ahead, while the members' states were initialised.
    assert compiles[f"thread:{CHUNK}"].startswith("jaxlab-compile")
    assert compiles["thread:jit(_member_evaluate)"].startswith("jaxlab-compile")


def test_eval_and_show_of_a_population(ppo_population, capsys):
    run_dir, _, results, _ = ppo_population
    capsys.readouterr()
    assert cli.main(["eval", str(run_dir), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["step"] == 1152
    for name, member in results.members.items():
        assert evaluated[f"{name}/mean_return"] == member["mean_return"]
    assert evaluated["mean_return"] == pytest.approx(results.mean["mean_return"])
    member_dir = run_dir / "members" / f"seed_{SEED + 1}"
    assert cli.main(["eval", str(member_dir), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert (
        evaluated["mean_return"] == results.members[f"seed_{SEED + 1}"]["mean_return"]
    )
    assert cli.main(["show", str(member_dir), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["config"]["seed"] == SEED + 1
    assert "eval/mean_return" in shown["latest"]["eval"]


def test_sweep_of_learning_rate_and_entropy_is_vmapped(tmp_path, ppo_singles):
    """A 2x2 sweep in one program; two of its members against separate runs
    with ``--set``."""
    raw = ppo_raw()
    config = config_lib.validate_config(raw)
    sweep = {"optimizer.learning_rate": ["3e-3", "1e-3"], "agent.ent_coef": [0.01, 0.1]}
    with count_compiles() as compiles:
        results = population.train(config, tmp_path / "pop", sweep=sweep, quiet=True)
    assert results.vmapped
    assert compiles[CHUNK] == 1
    names = list(results.members)
    assert names == [
        "learning_rate_0.003-ent_coef_0.01-seed_3",
        "learning_rate_0.003-ent_coef_0.1-seed_3",
        "learning_rate_0.001-ent_coef_0.01-seed_3",
        "learning_rate_0.001-ent_coef_0.1-seed_3",
    ]
    state, _ = final_state(tmp_path / "pop", config, members=4)
    other = {**raw, "optimizer": {"name": "adam", "learning_rate": 1e-3}}
    other["agent"] = {**raw["agent"], "ent_coef": 0.1}
    singles = [ppo_singles[0], single_run(tmp_path, other, SEED, "other")]
    for i, (run_dir, single_config, single) in zip([0, 3], singles, strict=True):
        single_state, _ = final_state(run_dir, single_config)
        assert_close(member_slice(state, i), single_state)
        assert results.members[names[i]]["mean_return"] == pytest.approx(
            single["mean_return"], rel=1e-6
        )
    # Each swept value took effect: the members differ from each other.
    params = [member_slice(state.agent.params, i) for i in range(4)]
    assert not any(
        checkpoint.tree_equal(params[i], params[j])
        for i in range(4)
        for j in range(i + 1, 4)
    )


def test_dqn_seeds_and_discount_sweep(tmp_path):
    raw = dqn_raw()
    config = config_lib.validate_config(raw)
    sweep = {"agent.discount": [0.99, 0.9]}
    with count_compiles() as compiles:
        results = population.train(
            config, tmp_path / "pop", seeds=2, sweep=sweep, quiet=True
        )
    assert results.vmapped
    assert compiles[CHUNK] == 1  # 11 chunks of 5 iterations and one of 2
    assert list(results.members) == [
        "discount_0.99-seed_1",
        "discount_0.99-seed_2",
        "discount_0.9-seed_1",
        "discount_0.9-seed_2",
    ]
    # Sweeps with several seeds also get per-setting aggregates.
    group = rows(tmp_path / "pop" / "groups" / "discount_0.9")
    member_rows = [
        rows(tmp_path / "pop" / "members" / f"discount_0.9-seed_{s}") for s in (1, 2)
    ]
    assert group[-1]["eval/mean_return"] == pytest.approx(
        np.mean([m[-1]["eval/mean_return"] for m in member_rows])
    )
    state, _ = final_state(tmp_path / "pop", config, members=4)
    single_raw = {**raw, "agent": {**raw["agent"], "discount": 0.9}}
    run_dir, single_config, single = single_run(tmp_path, single_raw, 2, "single")
    single_state, _ = final_state(run_dir, single_config)
    assert_close(member_slice(state, 3), single_state)
    assert results.members["discount_0.9-seed_2"]["mean_return"] == pytest.approx(
        single["mean_return"], rel=1e-6
    )


def test_untraceable_sweep_runs_sequentially(tmp_path, capsys, ppo_singles):
    config = config_lib.validate_config(ppo_raw())
    sweep = {"agent.hidden": ["[16, 16]", "[8]"]}
    results = population.train(config, tmp_path / "pop", sweep=sweep, quiet=True)
    err = capsys.readouterr().err
    assert (
        "jaxlab: --sweep agent.hidden is not traceable (list); running 2 runs "
        "sequentially" in err
    )
    assert not results.vmapped and "agent.hidden" in results.reason
    names = list(results.members)
    assert names == ["hidden_16_16-seed_3", "hidden_8-seed_3"]
    # A member is a complete run directory, equal to the separate run.
    member_dir = tmp_path / "pop" / "members" / names[0]
    single_dir, single_config, single = ppo_singles[0]
    assert results.members[names[0]] == single
    a, _ = final_state(member_dir, single_config)
    b, _ = final_state(single_dir, single_config)
    assert checkpoint.tree_equal(a, b)
    assert rows(member_dir) == rows(single_dir)
    root = rows(tmp_path / "pop")
    last = [r for r in root if "eval/mean_return" in r][-1]
    values = [results.members[n]["mean_return"] for n in names]
    assert last["eval/mean_return"] == pytest.approx(np.mean(values))
    assert last["eval/mean_return_std"] == pytest.approx(np.std(values))


def test_a_value_that_fails_to_trace_falls_back(monkeypatch):
    import agents

    entry = agents.AGENTS["ppo"]

    def make_train(env_id, config, optimizer, **kwargs):
        if config.ent_coef > 0.05:  # Python control flow on a hyperparameter
            raise AssertionError("unreachable in these tests")
        return entry.make_train(env_id, config, optimizer, **kwargs)

    monkeypatch.setitem(agents.AGENTS, "ppo", entry._replace(make_train=make_train))
    config = config_lib.validate_config(ppo_raw())
    pop = population.make_population(config, sweep={"agent.ent_coef": [0.01, 0.02]})
    vm, reason = population._vmapped_or_why_not(pop)
    assert vm is None
    assert (
        reason == "--sweep agent.ent_coef is not traceable (TracerBoolConversionError)"
    )


def test_supervised_seeds_run_sequentially(tmp_path, capsys):
    config = config_lib.validate_config(small_config(**{"train.steps": 20}))
    results = population.train(config, tmp_path / "pop", seeds=2, quiet=True)
    out = capsys.readouterr()
    assert "supervised runs are not vmapped; running 2 runs sequentially" in out.err
    assert "mean" in out.out and "accuracy" in out.out  # the summary table
    for seed in (0, 1):
        member = tmp_path / "pop" / "members" / f"seed_{seed}"
        assert (member / "config.yaml").is_file() and (member / "checkpoints").is_dir()
        saved = config_lib.load_config(member / "config.yaml")
        assert saved.seed == seed
    accuracies = [m["accuracy"] for m in results.members.values()]
    assert results.mean["accuracy"] == pytest.approx(np.mean(accuracies))
    spec = json.loads((tmp_path / "pop" / "population.json").read_text())
    assert spec["mode"] == "sequential" and spec["results"]["std"]["accuracy"] >= 0
    test_rows = [r for r in rows(tmp_path / "pop") if "test/accuracy" in r]
    assert test_rows[-1]["test/accuracy"] == pytest.approx(np.mean(accuracies))


def test_why_sequential_names_the_reason():
    def reason(raw, **sweep):
        config = config_lib.validate_config(raw)
        return population.why_sequential(
            population.make_population(config, sweep=sweep)
        )

    assert reason(ppo_raw(), **{"agent.clip_eps": [0.1, 0.2]}) is None
    assert reason(ppo_raw(), seed=[0, 5]) is None
    assert "not traceable (int)" in reason(ppo_raw(), **{"agent.update_epochs": [1, 2]})
    assert "(bool)" in reason(ppo_raw(), **{"agent.anneal_lr": [True, False]})
    assert "(str)" in reason(ppo_raw(), **{"agent.activation": ["tanh", "relu"]})
    assert "(None/float)" in reason(ppo_raw(), **{"agent.max_grad_norm": [None, 0.5]})
    assert "train.env_steps is not traceable" in reason(
        ppo_raw(), **{"train.env_steps": [640, 1280]}
    )
    gym = ppo_raw()
    gym["env"]["backend"] = "gymnasium"
    assert "gymnasium" in reason(gym)
    assert "supervised" in reason(small_config())


def test_member_names_and_order():
    config = config_lib.validate_config(ppo_raw())
    pop = population.make_population(
        config,
        seeds=2,
        sweep=population.parse_sweep(
            ["agent.hidden=[32, 32],[64]", "optimizer.learning_rate=1e-3,3e-4"]
        ),
    )
    assert [m.name for m in pop.members] == [
        "hidden_32_32-learning_rate_0.001-seed_3",
        "hidden_32_32-learning_rate_0.001-seed_4",
        "hidden_32_32-learning_rate_0.0003-seed_3",
        "hidden_32_32-learning_rate_0.0003-seed_4",
        "hidden_64-learning_rate_0.001-seed_3",
        "hidden_64-learning_rate_0.001-seed_4",
        "hidden_64-learning_rate_0.0003-seed_3",
        "hidden_64-learning_rate_0.0003-seed_4",
    ]
    assert pop.members[5].config.optimizer.learning_rate == 1e-3
    assert pop.members[5].config.agent["hidden"] == [64]
    assert pop.members[5].seed == pop.members[5].config.seed == 4
    # Keys with the same last part are named in full.
    pop = population.make_population(
        config, sweep={"agent.gamma": [0.9], "env.kwargs.gamma": [0.5]}
    )
    assert pop.members[0].name == "agent.gamma_0.9-env.kwargs.gamma_0.5-seed_3"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "0"], "argument --seeds: expected a positive int, got '0'"),
        (["--seeds", "two"], "argument --seeds: expected a positive int"),
        (["--sweep", "optimizer.learning_rate"], "--sweep 'optimizer.learning_rate'"),
        (["--sweep", "=1,2"], "expected KEY=V1,V2"),
        (["--sweep", "agent.ent_coef=0.1,"], "empty value"),
        (["--sweep", "optimizer.lr=0.1,0.2"], "optimizer.lr: unknown field"),
        (["--sweep", "agent.gama=0.9"], "agent.gama: unknown field"),
        (["--sweep", "agent.clip_eps=0.2,-1"], "--sweep agent.clip_eps=-1: agent"),
        (["--sweep", "optimizer.learning_rate=[1"], "--sweep optimizer.learning_rate"),
        (["--sweep", "agent.ent_coef=0.1,0.1"], "a value is given twice"),
        (["--sweep", "name=a,b"], "--sweep name: cannot be swept"),
        (
            ["--sweep", "agent.ent_coef=0.1", "--sweep", "agent.ent_coef=0.2"],
            "given twice",
        ),
        (["--seeds", "2", "--sweep", "seed=3,4"], "would be the same run"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(tmp_path, capsys, args, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(ppo_raw()))
    out = tmp_path / "out"
    try:
        code = cli.main(["train", str(path), "--output-dir", str(out), *args])
    except SystemExit as e:  # argparse
        code = e.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_resume_refuses_another_population(ppo_population, tmp_path, capsys):
    run_dir, *_ = ppo_population
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(ppo_raw()))
    train = ["train", str(path), "--output-dir", str(run_dir)]
    assert cli.main([*train, "--seeds", "2"]) == 2
    err = capsys.readouterr().err
    assert "was started with --seeds 3 (3 members), now --seeds 2 (2 members)" in err
    assert cli.main(train) == 2
    assert "holds a population run (--seeds 3 (3 members))" in capsys.readouterr().err
    assert cli.main([*train, "--seeds", "3", "--set", "agent.ent_coef=0.5"]) == 2
    assert "agent.ent_coef" in capsys.readouterr().err
    single_dir = tmp_path / "single"
    (single_dir).mkdir()
    (single_dir / "config.yaml").write_text(yaml.safe_dump(ppo_raw()))
    assert cli.main([*train[:3], str(single_dir), "--seeds", "2"]) == 2
    assert "holds a single run, not a population" in capsys.readouterr().err


def test_sigkill_then_resume_equals_uninterrupted(ppo_population, tmp_path):
    clean_dir, config, clean_results, _ = ppo_population
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(ppo_raw()))
    killed = tmp_path / "killed"
    result = run_cli(
        "train",
        str(path),
        "--seeds",
        "3",
        "--output-dir",
        str(killed),
        "--quiet",
        env={rl_experiment.KILL_AT_STEP_ENV: "500"},
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    with checkpoint.Checkpointer(killed / "checkpoints") as ckpt:
        assert ckpt.latest_step() == 384
    resumed = population.train(config, killed, seeds=3, quiet=True)
    assert resumed.members == clean_results.members
    a, meta_a = final_state(clean_dir, config, members=3)
    b, meta_b = final_state(killed, config, members=3)
    assert meta_a == meta_b
    assert checkpoint.tree_equal(a, b)
    assert rows(killed) == rows(clean_dir)
    for name in clean_results.members:
        assert rows(killed / "members" / name) == rows(clean_dir / "members" / name)
