"""Reliability: hostile data files, no unsafe loading, incompatible checkpoints,
resources (unwritable directory, full disk, run lock), the NaN guard and
determinism. Config fuzzing is in test_reliability_fuzz.py, kill-anywhere fault
injection in test_faults.py; docs/reliability.md maps each guarantee to its test.
"""

from __future__ import annotations

import ast
import errno
import gzip
import hashlib
import io
import json
import os
import pickle
import re
import shutil
import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from conftest import REPO, exploding_config, run_cli, small_config

from jaxlab import checkpoint, cli, experiment, run_dir
from jaxlab import config as config_lib
from jaxlab.checkpoint import Checkpointer, CheckpointWarning, tree_equal
from jaxlab.data import load_csv, load_npz, read_idx, write_idx
from jaxlab.errors import CheckpointError, DataError


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_error_line(err: str) -> str:
    """The CLI's error output must be exactly one 'jaxlab: error: ...' line."""
    assert err.count("\n") == 1 and err.startswith("jaxlab: error: "), err
    assert "Traceback" not in err
    return err.removeprefix("jaxlab: error: ").rstrip("\n")


def _write(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def _rows(run: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock fields."""
    return [
        {k: v for k, v in json.loads(line).items() if k not in ("time", "elapsed")}
        for line in (run / "metrics.jsonl").read_text().splitlines()
    ]


def _restore(run: Path, config: dict, step: int | None = None):
    exp = experiment.build(config_lib.validate_config(config))
    with Checkpointer(run / run_dir.CHECKPOINT_DIR) as ckpt:
        return ckpt.restore(experiment.initial_state(exp), step=step)


def _file_hashes(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


# ----------------------------------------------------------------- data files
# (test_data.py covers missing keys, pickled objects, bad magic numbers, files
# truncated at one point, CSV cell errors; here: the rest, and the CLI.)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.arange(4.0), "y": np.arange(4)}, r"x must be \[N, features"),
        ({"x": np.ones((1, 2)), "y": np.float64(1)}, r"y must be \[N, \.\.\.\]"),
        ({"x": np.zeros((0, 3)), "y": np.zeros(0)}, "the dataset is empty"),
        ({"x": np.array([["a", "b"]]), "y": [0]}, "real numeric array, got dtype"),
        ({"x": np.ones((2, 2), complex), "y": [0, 1]}, "real numeric array"),
        ({"x": np.ones((2, 2)), "y": np.array(["0", "1"])}, "y must be a real"),
        ({"x": np.full((2, 2), np.inf), "y": [0, 1]}, "x contains NaN or Inf"),
        pytest.param(
            {"x": np.full((2, 2), 1e300), "y": [0, 1]},
            "x contains NaN or Inf",  # beyond float32: Inf after the cast
            marks=pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning"),
        ),
        ({"x": np.ones((2, 2)), "y": [0.5, np.nan]}, "y contains NaN or Inf"),
        ({"x": np.ones((2, 2)), "y": np.array([0, 2**40])}, "do not fit in int32"),
        (
            {"x": np.ones((4, 3)), "y": np.zeros(4), "x_test": np.ones((2, 5))}
            | {"y_test": np.zeros(2)},
            r"test examples have shapes x \(5,\)",
        ),
    ],
)
def test_hostile_npz_arrays_name_the_file(tmp_path, arrays, message):
    path = tmp_path / "hostile.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}.*{message}"):
        load_npz(path)


@pytest.mark.parametrize("name", ["hostile.npz", "images.idx", "images.idx.gz"])
def test_empty_files_name_the_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    load = load_npz if name.endswith(".npz") else read_idx
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: "):
        load(path)


def _valid_files(directory: Path) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, x=rng.normal(size=(6, 3)), y=np.arange(6) % 3, x_test=np.ones((2, 3))
    )
    files = {"d.npz": buffer.getvalue()}
    write_idx(directory / "i.idx", rng.integers(0, 256, (3, 4, 4), dtype=np.uint8))
    files["i.idx"] = (directory / "i.idx").read_bytes()
    files["i.idx.gz"] = gzip.compress(files["i.idx"], mtime=0)
    files["d.csv"] = b"a,b,label\n0.5,1,0\n2,3.25,1\n-1,1e3,2\n4,5,1\n"
    return files


@pytest.mark.parametrize("name", ["d.npz", "i.idx", "i.idx.gz", "d.csv"])
def test_files_truncated_at_every_byte(tmp_path, name):
    """Cut anywhere, a file either loads as a valid dataset or raises DataError
    naming it: never another exception."""
    data = _valid_files(tmp_path)[name]
    path = tmp_path / f"cut-{name}"
    loaders = {
        "d.npz": load_npz,
        "i.idx": read_idx,
        "i.idx.gz": read_idx,
        "d.csv": lambda p: load_csv(p, label_column="label"),
    }
    outcomes = set()
    for size in range(len(data)):
        path.write_bytes(data[:size])
        try:
            loaders[name](path)
            outcomes.add("loaded")
        except DataError as e:
            assert str(e).startswith(str(path)), e
            outcomes.add("error")
    assert "error" in outcomes


def _npz(path: Path, x, y, **test) -> Path:
    np.savez(path, x=np.asarray(x, np.float32), y=np.asarray(y), **test)
    return path


def _mnist_dir(directory: Path, label: int) -> Path:
    directory.mkdir()
    write_idx(directory / "train-images-idx3-ubyte", np.zeros((6, 4, 4), np.uint8))
    labels = np.array([0, 1, 2, 0, 1, label], np.uint8)
    write_idx(directory / "train-labels-idx1-ubyte", labels)
    return directory


_X = np.random.default_rng(0).normal(size=(10, 3))


def _csv(name: str, text: str):
    def make(directory: Path) -> Path:
        (directory / name).write_text(text)
        return directory / name

    return make


def _empty_labels(directory: Path) -> Path:
    mnist = _mnist_dir(directory / "empty-idx", label=0)
    (mnist / "train-labels-idx1-ubyte").write_bytes(b"")
    return mnist


def _truncated_npz(directory: Path) -> Path:
    path = _npz(directory / "cut.npz", _X, np.arange(10) % 2)
    path.write_bytes(path.read_bytes()[:300])
    return path


@pytest.mark.parametrize(
    ("make", "num_classes", "message"),
    [
        (
            lambda d: _npz(d / "neg.npz", _X, [0, 1, -1, 0, 1, 0, 1, 0, 1, 0]),
            None,
            r"neg\.npz \(\w+ split\): class labels must be >= 0, found -1",
        ),
        (
            lambda d: _npz(d / "float.npz", _X, np.linspace(0, 1, 10)),
            None,
            r"float\.npz \(\w+ split\): labels must be integer class ids",
        ),
        (
            lambda d: _npz(d / "range.npz", _X, np.arange(10) % 3),
            2,
            r"range\.npz: class label 2 is out of range for model\.num_classes 2",
        ),
        (
            lambda d: _mnist_dir(d / "mnist", label=200),
            10,
            r"mnist: class label 200 is out of range for model\.num_classes 10",
        ),
        (_truncated_npz, None, r"cut\.npz: cannot read as an \.npz archive"),
        (
            _csv("rows.csv", "a,b,y\n1,2,0\n3,x,1\n"),
            None,
            r"rows\.csv: line 3, column 2 \('b'\): 'x' is not a number",
        ),
        (
            _csv("lab.csv", "a,y\n1,0.5\n2,1.5\n3,0\n"),
            None,
            r"lab\.csv \(\w+ split\): labels must be integer class ids",
        ),
        (
            _empty_labels,
            None,
            r"train-labels-idx1-ubyte: truncated IDX header \(0 bytes\)",
        ),
        (lambda d: d / "missing.npz", None, r"missing\.npz: file not found"),
    ],
)
def test_cli_train_on_a_hostile_data_file_is_one_line_exit_2(
    capsys, tmp_path, make, num_classes, message
):
    data = make(tmp_path)
    dataset = {".npz": "npz", ".csv": "csv", "": "mnist"}[data.suffix]
    config = small_config(
        **{
            "data": {"dataset": dataset, "path": data.name, "batch_size": 4},
            "model.metrics": ["accuracy"],
        }
    )
    if num_classes is not None:
        config["model"]["num_classes"] = num_classes
    path = _write(tmp_path / "config.yaml", config)
    code, _, err = _cli(
        capsys, "train", str(path), "--output-dir", str(tmp_path / "r"), "--quiet"
    )
    assert code == 2
    line = _one_error_line(err)
    assert line.startswith(str(tmp_path)), line  # the absolute path of the file
    assert re.search(message, line), line


# ----------------------------------------------------------------- unsafe loading

SCANNED = ("jaxlab", "nets", "agents")
_UNSAFE_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill"}
_UNSAFE_MODULES |= {"marshal", "shelve", "joblib"}
_UNSAFE_CALLS = {"eval", "exec", "compile", "__import__"}
_UNSAFE_ATTRS = {"unsafe_load", "full_load", "read_pickle", "load_all"}
_UNSAFE_LOADERS = {"Loader", "UnsafeLoader", "FullLoader", "CLoader", "CFullLoader"}
_SAFE_LOADER_BASES = {"SafeLoader", "CSafeLoader"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _safe_loader_classes(tree: ast.Module) -> set[str]:
    """Classes defined in the module that subclass yaml's SafeLoader."""
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        and any(
            _dotted(base).rsplit(".", 1)[-1] in _SAFE_LOADER_BASES
            for base in node.bases
        )
    }


def unsafe_loading(source: str, filename: str = "<src>") -> list[str]:
    """Each unsafe deserialisation or dynamic-code construct in `source`."""
    tree = ast.parse(source, filename)
    safe_loaders = _safe_loader_classes(tree)
    found = []

    def report(node: ast.AST, what: str) -> None:
        found.append(f"{filename}:{node.lineno}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names]
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                if name.split(".")[0] in _UNSAFE_MODULES:
                    report(node, f"imports {name}")
            if isinstance(node, ast.ImportFrom) and node.module == "yaml":
                for alias in node.names:
                    if alias.name in _UNSAFE_LOADERS | _UNSAFE_ATTRS | {"load"}:
                        report(node, f"imports yaml.{alias.name}")
        elif isinstance(node, ast.Attribute) and _dotted(node) in {
            f"yaml.{n}" for n in _UNSAFE_LOADERS
        }:
            report(node, f"uses {_dotted(node)}")
        if not isinstance(node, ast.Call):
            continue
        func = _dotted(node.func)
        last = func.rsplit(".", 1)[-1]
        keywords = {k.arg: k.value for k in node.keywords}
        if func in _UNSAFE_CALLS or last in _UNSAFE_ATTRS:
            report(node, f"calls {func}()")
        elif func == "importlib.import_module" or last == "import_module":
            if not (node.args and isinstance(node.args[0], ast.Constant)):
                report(node, f"calls {func}() on a computed name")
        elif func == "yaml.load":
            loader = keywords.get("Loader")
            if loader is None and len(node.args) > 1:
                loader = node.args[1]
            name = _dotted(loader) if loader is not None else ""
            if name.rsplit(".", 1)[-1] not in _SAFE_LOADER_BASES | safe_loaders:
                report(node, f"calls yaml.load with Loader={name or 'default'}")
        elif last == "load" and func.split(".")[0] in ("np", "numpy", "jnp"):
            allow = keywords.get("allow_pickle")
            if not (isinstance(allow, ast.Constant) and allow.value is False):
                report(node, f"calls {func}() without allow_pickle=False")
        elif func in ("torch.load", "jax.numpy.load"):
            report(node, f"calls {func}()")
    return found


def test_the_scanner_finds_unsafe_loading():
    bad = """
import pickle
import dill as d
from cloudpickle import loads
from marshal import loads as m
import shelve, yaml, numpy as np, importlib
from yaml import FullLoader
eval("1")
exec("x = 1")
__import__(name)
importlib.import_module(user_string)
yaml.load(text)
yaml.load(text, Loader=yaml.Loader)
yaml.load(text, yaml.UnsafeLoader)
yaml.unsafe_load(text)
yaml.full_load(text)
np.load(path)
np.load(path, allow_pickle=True)
"""
    assert len(unsafe_loading(bad)) >= 18, unsafe_loading(bad)
    good = """
import yaml, numpy as np, importlib
class _L(yaml.SafeLoader):
    pass
yaml.load(text, Loader=_L)
yaml.load(text, Loader=yaml.SafeLoader)
yaml.safe_load(text)
np.load(path, allow_pickle=False)
importlib.import_module("orbax.checkpoint")
"""
    assert unsafe_loading(good) == []


def test_no_unsafe_loading_in_the_packages():
    files = [p for package in SCANNED for p in sorted((REPO / package).rglob("*.py"))]
    assert len(files) > 20
    found = [
        problem
        for path in files
        for problem in unsafe_loading(path.read_text(), str(path.relative_to(REPO)))
    ]
    assert found == []


def test_the_one_yaml_load_uses_a_safe_loader_subclass():
    """Whitelisted precisely: jaxlab/config.py's yaml.load, with Loader=_Loader,
    a yaml.SafeLoader subclass that constructs no Python objects."""
    calls = []
    for package in SCANNED:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and _dotted(node.func) == "yaml.load":
                    loader = {k.arg: _dotted(k.value) for k in node.keywords}
                    calls.append((str(path.relative_to(REPO)), loader.get("Loader")))
    assert calls == [("jaxlab/config.py", "_Loader")]
    assert issubclass(config_lib._Loader, yaml.SafeLoader)
    constructors = set(config_lib._Loader.yaml_constructors)
    assert not {t for t in constructors if t and "python" in t}
    # Only JSON's types: no bytes, dates or sets.
    assert not {t for t in constructors if t and t.split(":")[-1] in ("binary", "set")}


# ----------------------------------------------------------------- hostile checkpoints

CLEAN = small_config(
    **{"train.steps": 30, "train.checkpoint_every": 10, "train.eval_every": 10}
)


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory) -> Path:
    """An uninterrupted supervised run of `CLEAN` (in this process)."""
    run = tmp_path_factory.mktemp("clean") / "run"
    experiment.train(config_lib.validate_config(CLEAN), run, quiet=True)
    return run


class _Payload:
    """Unpickling this creates `marker`: proof that something unpickled it."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _state(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "params": {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)},
        "step": np.int64(seed),
    }


def _all_files_pickled(step_dir: Path, payload: bytes) -> None:
    for path in step_dir.rglob("*"):
        if path.is_file() and path.name != "commit_success.txt":
            path.write_bytes(payload)


def _extra_pickles(step_dir: Path, payload: bytes) -> None:
    for name in ("checkpoint", "state/checkpoint", "state.pkl", "meta/metadata.pkl"):
        (step_dir / name).write_bytes(payload)


def _forged_step(step_dir: Path, payload: bytes) -> None:
    """A step directory built by hand: orbax's file names, pickles inside."""
    shutil.rmtree(step_dir)
    for name in (
        "_CHECKPOINT_METADATA",
        "state/_METADATA",
        "state/manifest.ocdbt",
        "state/checkpoint",
        "meta/metadata",
        "manifest/metadata",
    ):
        (step_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (step_dir / name).write_bytes(payload)
    for item in ("", "state", "meta", "manifest"):
        (step_dir / item / "commit_success.txt").write_text("ok")


def _weird_meta(step_dir: Path, payload: bytes) -> None:
    (step_dir / "meta" / "metadata").write_text(
        json.dumps(
            {
                "py/reduce": [{"py/function": "os.system"}, ["touch marker"]],
                "__class__": "os.system",
                "!!python/object/apply:os.system": ["touch marker"],
                "step": "__import__('os').system('touch marker')",
            }
        )
    )


def _meta_not_a_dict(step_dir: Path, payload: bytes) -> None:
    (step_dir / "meta" / "metadata").write_text('["__import__", "os"]')


def _deep_meta(step_dir: Path, payload: bytes) -> None:
    (step_dir / "meta" / "metadata").write_text("[" * 100_000 + "]" * 100_000)


def _manifest_lies(step_dir: Path, payload: bytes) -> None:
    path = step_dir / "manifest" / "metadata"
    manifest = json.loads(path.read_text())
    for entry in manifest["leaves"]:
        entry.update(dtype="object", key="../../../etc/passwd")
    path.write_text(json.dumps(manifest))


def _handler_import(step_dir: Path, payload: bytes) -> None:
    """orbax's metadata names handler classes: point them at a module whose
    import would create the marker."""
    path = step_dir / "_CHECKPOINT_METADATA"
    meta = json.loads(path.read_text())
    meta["item_handlers"] = {
        k: "jaxlab_evil_probe.Handler" for k in meta["item_handlers"]
    }
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "craft",
    [
        _all_files_pickled,
        _extra_pickles,
        _forged_step,
        _weird_meta,
        _meta_not_a_dict,
        _deep_meta,
        _manifest_lies,
        _handler_import,
    ],
)
def test_a_malicious_checkpoint_never_runs_code(tmp_path, monkeypatch, craft):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Payload(marker))
    probe = tmp_path / "modules"
    probe.mkdir()
    (probe / "jaxlab_evil_probe.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nclass Handler:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(probe))
    directory = tmp_path / "checkpoints"
    with Checkpointer(directory) as ckpt:
        ckpt.save(1, _state(1), meta={"step": 1})
        ckpt.save(2, _state(2), meta={"step": 2})
    craft(directory / "2", payload)

    with Checkpointer(directory) as ckpt, warnings.catch_warnings():
        warnings.simplefilter("ignore", CheckpointWarning)
        try:
            state, meta = ckpt.restore(_state())
        except CheckpointError as e:
            assert str(e).startswith(str(directory)), e
        else:
            assert ckpt.restored_step in (1, 2)
            assert tree_equal(state, _state(ckpt.restored_step))
            assert isinstance(meta, dict)
    assert not marker.exists(), "restoring a checkpoint ran code"


@pytest.mark.parametrize("command", ["train", "eval"])
def test_a_tampered_meta_is_one_line_through_the_cli(
    capsys, tmp_path, clean_run, command
):
    """Valid JSON that is not our meta: restored as data, refused by the shell."""
    run = tmp_path / "run"
    shutil.copytree(clean_run, run)
    (run / "checkpoints" / "30" / "meta" / "metadata").write_text(
        json.dumps({"step": f"__import__('os').system('touch {tmp_path}/pwned')"})
    )
    path = _write(tmp_path / "c.yaml", CLEAN)
    args = ["train", str(path), "--output-dir"] if command == "train" else ["eval"]
    code, _, err = _cli(capsys, *args, str(run))
    assert code == 2
    assert re.fullmatch(
        rf"{re.escape(str(run / 'checkpoints'))}: checkpoint at step 30: meta 'step' "
        r"must be an int >= 0, got .*",
        _one_error_line(err),
    )
    assert not (tmp_path / "pwned").exists()


# ----------------------------------------------------------------- incompatible


def test_incompatible_checkpoint_through_the_cli(capsys, tmp_path):
    config = small_config(**{"train.steps": 10, "train.checkpoint_every": 10})
    path, run = _write(tmp_path / "c.yaml", config), tmp_path / "run"
    assert _cli(capsys, "train", str(path), "--output-dir", str(run), "--quiet")[0] == 0
    narrower = ("--set", "model.network.1.1.output_size=16")

    # 1. The run directory's saved config refuses the change first.
    code, _, err = _cli(
        capsys, "train", str(path), "--output-dir", str(run), "--quiet", *narrower
    )
    assert code == 2
    line = _one_error_line(err)
    assert line.startswith("model.network: the run in"), line
    assert "resuming would not reproduce it" in line

    # 2. Without the saved config, the checkpoint's own check refuses it, naming
    # the parameter and both shapes.
    (run / run_dir.CONFIG_FILE).unlink()
    code, _, err = _cli(
        capsys, "train", str(path), "--output-dir", str(run), "--quiet", *narrower
    )
    assert code == 2
    line = _one_error_line(err)
    assert re.search(
        r"params/linear_1/w has shape \(64, 32\) in the checkpoint but \(64, 16\) "
        r"in the target",
        line,
    ), line

    # 3. The same through the Python API.
    changed = small_config(**{"train.steps": 10})
    changed["model"]["network"][1][1]["output_size"] = 16
    with pytest.raises(CheckpointError) as info:
        _restore(run, changed)
    message = str(info.value)
    assert message.startswith(str(run / run_dir.CHECKPOINT_DIR))
    assert "params/linear_1/b has shape (32,) in the checkpoint but (16,)" in message
    assert "params/linear_2/w has shape (32, 10) in the checkpoint but (16, 10)" in (
        message
    )
    with Checkpointer(run / run_dir.CHECKPOINT_DIR) as ckpt:
        assert ckpt.all_steps() == [10]  # nothing was written by the refusals


# ----------------------------------------------------------------- resources


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="root ignores file permissions",
)
def test_read_only_run_dir_fails_before_training(capsys, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(0o555)
    try:
        path = _write(tmp_path / "c.yaml", small_config())
        code, _, err = _cli(capsys, "train", str(path), "--output-dir", str(run))
    finally:
        run.chmod(0o755)
    assert code == 2
    assert re.search(r"output directory .*run: not writable", _one_error_line(err))
    assert list(run.iterdir()) == []


def _failing_second_save(monkeypatch, error: Exception) -> list[int]:
    """Makes the 2nd checkpoint save write part of its files, then fail."""
    original = Checkpointer.save
    calls: list[int] = []

    def save(self, step, state, **kwargs):
        calls.append(step)
        if len(calls) == 2:
            partial = self.directory / f"{step}.orbax-checkpoint-tmp" / "state"
            partial.mkdir(parents=True)
            (partial / "half-written").write_bytes(b"\0" * 100)
            raise error
        return original(self, step, state, **kwargs)

    monkeypatch.setattr(Checkpointer, "save", save)
    return calls


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
        # What orbax's tensorstore writer raises on a real full disk.
        ValueError(
            'RESOURCE_EXHAUSTED: Error writing "l0/0" in OCDBT database: Failed '
            "to write 644197 bytes to file 12: No space left on device "
            "[os_error_code='28']"
        ),
    ],
    ids=["OSError", "tensorstore"],
)
def test_disk_full_during_a_save(capsys, monkeypatch, tmp_path, clean_run, error):
    path, run = _write(tmp_path / "c.yaml", CLEAN), tmp_path / "run"
    calls = _failing_second_save(monkeypatch, error)
    code, _, err = _cli(capsys, "train", str(path), "--output-dir", str(run), "--quiet")
    assert calls == [10, 20]
    assert code == 2
    assert _one_error_line(err) == (
        f"{run / 'checkpoints'}: cannot save the checkpoint at step 20 (No space "
        "left on device); the last good checkpoint is step 10"
    )
    # The last good checkpoint is intact and is the clean run's step 10.
    state, meta = _restore(run, CLEAN)
    assert meta["step"] == 10
    assert tree_equal(state, _restore(clean_run, CLEAN, step=10)[0])

    # Space freed: the rerun resumes from step 10 and ends as the clean run.
    monkeypatch.undo()
    code, _, err = _cli(capsys, "train", str(path), "--output-dir", str(run), "--quiet")
    assert code == 0, err
    with Checkpointer(run / "checkpoints") as ckpt:
        assert ckpt.all_steps() == [10, 20, 30]
    assert not list((run / "checkpoints").glob("*.orbax-checkpoint-tmp"))
    assert tree_equal(_restore(run, CLEAN)[0], _restore(clean_run, CLEAN)[0])
    assert _rows(run) == _rows(clean_run)


def test_a_locked_run_dir_is_refused(tmp_path):
    """A second process training into a directory that another one holds gets
    one clear line and exit code 2, and writes nothing there."""
    path = _write(tmp_path / "c.yaml", small_config())
    run = run_dir.prepare(tmp_path / "run")
    with run_dir.RunLock(run):
        result = run_cli("train", str(path), "--output-dir", str(run), "--quiet")
    assert result.returncode == 2, result.stderr
    line = _one_error_line(result.stderr)
    assert line == f"output directory {run}: another jaxlab process is training into it"
    assert sorted(p.name for p in run.iterdir()) == [".lock"]


# ----------------------------------------------------------------- NaN guard


def test_halt_keeps_the_last_good_checkpoint_bit_identical(capsys, tmp_path):
    """The learning rate explodes after step 12 (piecewise schedule): a run
    halts there, and its step-10 checkpoint is untouched and equal to a clean run
    stopped at step 10."""
    config = exploding_config(**{"train.steps": 10, "train.checkpoint_every": 10})
    path = _write(tmp_path / "c.yaml", config)
    clean, fresh = tmp_path / "clean", tmp_path / "fresh"
    assert (
        _cli(capsys, "train", str(path), "--output-dir", str(clean), "--quiet")[0] == 0
    )
    before = _file_hashes(clean / "checkpoints")
    longer = ("--set", "train.steps=20")

    # Resumed to 20 steps: halts after the boundary, writes no checkpoint.
    code, _, err = _cli(
        capsys, "train", str(path), "--output-dir", str(clean), "--quiet", *longer
    )
    assert code == 2
    line = _one_error_line(err)
    assert re.fullmatch(
        r"step 1[3-5]: the loss or gradients are not finite; halted \(last good "
        r"checkpoint: step 10; .*\)",
        line,
    ), line
    assert _file_hashes(clean / "checkpoints") == before

    # From scratch: the same halt, and the same step-10 checkpoint.
    code, _, err = _cli(
        capsys, "train", str(path), "--output-dir", str(fresh), "--quiet", *longer
    )
    assert code == 2 and "halted (last good checkpoint: step 10" in err
    with Checkpointer(fresh / "checkpoints") as ckpt:
        assert ckpt.all_steps() == [10]
    a, meta_a = _restore(clean, config)
    b, meta_b = _restore(fresh, config)
    assert meta_a == meta_b and tree_equal(a, b)


# ----------------------------------------------------------------- determinism


def test_supervised_runs_are_deterministic(tmp_path, clean_run):
    """Another process (other hash seed), same config and seed: the same
    metrics.jsonl (but wall-clock time) and the same final state. A stale lock
    file (its process is gone) does not block the run."""
    path, run = _write(tmp_path / "c.yaml", CLEAN), tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text("999999")
    result = run_cli(
        "train",
        str(path),
        "--output-dir",
        str(run),
        "--quiet",
        env={"PYTHONHASHSEED": "12345"},
    )
    assert result.returncode == 0, result.stderr
    assert _rows(run) == _rows(clean_run)
    assert tree_equal(_restore(run, CLEAN)[0], _restore(clean_run, CLEAN)[0])


TINY_PPO = {
    "name": "tiny-ppo",
    "kind": "rl",
    "seed": 5,
    "env": {"id": "CartPole-v1", "backend": "jax", "num_envs": 2},
    "agent": {
        "name": "ppo",
        "num_steps": 16,
        "update_epochs": 2,
        "num_minibatches": 2,
        "hidden": [8],
    },
    "optimizer": {"name": "adam", "learning_rate": 3e-3},
    "train": {
        "env_steps": 320,
        "eval_every": 160,
        "eval_episodes": 2,
        "log_every": 32,
        "checkpoint_every": 160,
    },
}


def test_ppo_runs_are_deterministic(tmp_path):
    results = []
    for name in ("a", "b"):
        config = config_lib.validate_config(TINY_PPO)
        results.append(experiment.train(config, tmp_path / name, quiet=True))
    assert results[0] == results[1]
    rows = _rows(tmp_path / "a")
    assert len(rows) > 10 and any("eval/mean_return" in r for r in rows)
    assert rows == _rows(tmp_path / "b")
    with (
        checkpoint.Checkpointer(tmp_path / "a" / "checkpoints") as a,
        checkpoint.Checkpointer(tmp_path / "b" / "checkpoints") as b,
    ):
        assert a.all_steps() == b.all_steps() == [160, 320]
        for step in a.all_steps():
            # The manifest holds every leaf's path, shape, dtype and CRC32.
            manifest = Path(str(step), "manifest", "metadata")
            assert (a.directory / manifest).read_text() == (
                b.directory / manifest
            ).read_text()
