"""How jaxlab compiles its programs: per-program XLA options, and compiling
ahead on background threads while the caller works.

Options. On a CPU, programs that run once or a few times (a trainer's `init`,
its greedy `evaluate`) compile at LLVM level 0 (`jit_rarely_run`) and the
training program at level 1 (`jit_training`); elsewhere, or when
``XLA_FLAGS`` sets the level, XLA's defaults. Called at the top level such a
function compiles with its options; traced inside another transformation it
is a plain nested ``jax.jit`` (XLA takes no per-function options there).

Ahead compilation: a training run on a CPU starts by compiling several
programs one after the other: the initial state, the training chunk, the
evaluation. XLA compiles
outside Python's global interpreter lock and mostly on one core, so on a
machine with two or more cores the programs a run will need next can compile
while the main thread traces, compiles and runs the first one:

```python
abstract = jax.eval_shape(init, key)
state = run_while_compiling(
    lambda: init(key),
    [lambda: run.lower(abstract, 16), lambda: evaluate.lower(abstract.agent, key)],
)
state, metrics = run(state, 16)      # compiled already: no compilation here
```

Each program lands in its jitted function's own cache (`jax.jit(f).lower(...)`
``.compile()`` and a later ``f(...)`` with the same argument shapes, static
arguments and placement share it), so the later call is unchanged: same
program, same results, only sooner. A call whose arguments differ from the
lowered ones compiles as usual. JAX traces on several threads by design (its
trace state is thread-local); configuration set by a context manager on the
calling thread (``with jax.default_device(...)``) is not seen by the
background threads, whose programs then miss the cache and cost only their
compile time.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import jax

T = TypeVar("T")

# XLA options of the programs that run once (`init`) or a few times (`evaluate`).
# On a CPU, LLVM's optimisation passes are about half of their compile time; a
# notebook user waits for compilation once per process, but for these programs'
# run time only briefly (CartPole, PureJaxRL's config, cold start: init compile
# 1.0 -> 0.6 s CPU, evaluate 1.5 -> 0.8 s, a 20-episode greedy evaluation 10 ->
# 27 ms).
_RARELY_RUN_CPU = {"xla_backend_optimization_level": 0}
# The training program (`run`): LLVM's level 1 instead of XLA's default 3. XLA:CPU
# emits its loops already vectorised and hands the products to YNNPACK/Eigen,
# so the higher levels' extra passes buy no speed here (level 2 compiles as long
# as level 1: 2.81 vs 2.82 s, in 10 alternating runs). Level 1 kept the floats bit for
# bit on the PPO configs (A2C's differ in the last bit from the first update:
# an FMA contracted differently; level 0 changes more and runs 4x slower).
# PureJaxRL's CartPole config: compile 3.1 -> 2.6 s, ms per update 3.03 vs
# 2.96 (noise).
_TRAINING_CPU = {"xla_backend_optimization_level": 1}


def _cpu_options(options: dict[str, Any]) -> dict[str, Any] | None:
    """`options` on a CPU backend, unless ``XLA_FLAGS`` sets one of them (the
    user's setting wins); None (XLA's defaults) elsewhere."""
    if jax.default_backend() != "cpu":
        return None
    flags = os.environ.get("XLA_FLAGS", "")
    if any(f"--{name}" in flags for name in options):
        return None
    return dict(options)


def rarely_run_options() -> dict[str, Any] | None:
    """``compiler_options`` for programs run once or rarely: less LLVM
    optimisation on a CPU backend (faster to compile), the defaults elsewhere
    or when ``XLA_FLAGS`` sets the level."""
    return _cpu_options(_RARELY_RUN_CPU)


def training_options() -> dict[str, Any] | None:
    """``compiler_options`` for the training program: LLVM's level 1 on a CPU
    backend (same speed, shorter compile), the defaults elsewhere or when
    ``XLA_FLAGS`` sets the level."""
    return _cpu_options(_TRAINING_CPU)


def is_staged(args: Any) -> bool:
    """Whether a call is being traced into an enclosing transformation."""
    if any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(args)):
        return True
    try:  # A jit nested in a trace with constant arguments.
        from jax._src.core import trace_state_clean
    except ImportError:  # pragma: no cover - older/newer JAX internals
        return False
    return not trace_state_clean()


def jit_with_options(
    fun: Callable[..., Any], options: dict[str, Any] | None, **jit_kwargs: Any
) -> Callable[..., Any]:
    """``jax.jit(fun)`` compiled with ``compiler_options=options`` when called
    at the top level (and for ``.lower``); traced inside another
    transformation (``jax.jit(jax.vmap(trainer.train))``), where XLA takes no
    per-function options, it is a plain nested ``jax.jit``."""
    nested = jax.jit(fun, **jit_kwargs)
    if options is None:
        return nested
    top = jax.jit(fun, compiler_options=options, **jit_kwargs)

    @functools.wraps(fun)
    def call(*args: Any, **kwargs: Any) -> Any:
        return (nested if is_staged((args, kwargs)) else top)(*args, **kwargs)

    call.lower = top.lower  # type: ignore[attr-defined]
    call.trace = top.trace  # type: ignore[attr-defined]
    call.eval_shape = top.eval_shape  # type: ignore[attr-defined]
    return call


def jit_rarely_run(fun: Callable[..., Any], **jit_kwargs: Any) -> Callable[..., Any]:
    """`jit_with_options` with `rarely_run_options`."""
    return jit_with_options(fun, rarely_run_options(), **jit_kwargs)


def jit_training(fun: Callable[..., Any], **jit_kwargs: Any) -> Callable[..., Any]:
    """`jit_with_options` with `training_options`."""
    return jit_with_options(fun, training_options(), **jit_kwargs)


def run_while_compiling(
    main: Callable[[], T], lowerings: Sequence[Callable[[], Any]]
) -> T:
    """``main()``, while each of `lowerings` is lowered and compiled.

    Args:
      main: the work of the calling thread (e.g. ``lambda: init(key)``).
      lowerings: callables returning a ``jax.stages.Lowered`` (e.g. ``lambda:
        run.lower(abstract_state, 16)``); each is called, then compiled, on a
        thread of its own.

    Returns:
      ``main()``'s result, once every compilation has finished.

    Raises:
      Whatever `main` raises, or else the first error of a lowering or
      compilation (the same error the later call would raise).
    """
    if not lowerings:
        return main()
    with concurrent.futures.ThreadPoolExecutor(
        max_workers=len(lowerings), thread_name_prefix="jaxlab-compile"
    ) as pool:
        futures = [pool.submit(lambda f=f: f().compile()) for f in lowerings]
        try:
            result = main()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        for future in futures:
            future.result()
    return result


def init_compiling_ahead(
    init: Callable[[Any], T],
    key: Any,
    *,
    run: Any = None,
    num_iterations: int | None = None,
    evaluate: Any = None,
    eval_key: Any = None,
    eval_episodes: int | None = None,
) -> T:
    """``init(key)``, while a trainer's next programs compile on background
    threads (`run_while_compiling`): ``run(state, num_iterations)`` unless
    `num_iterations` is None, and ``evaluate(state.agent, <a key like
    fold_in(eval_key, i)>, num_episodes=eval_episodes)`` unless
    `eval_episodes` is None. A function that cannot ``.lower`` (a plain one)
    is skipped: it compiles when called, as before."""
    run_lower = None if num_iterations is None else getattr(run, "lower", None)
    eval_lower = None if eval_episodes is None else getattr(evaluate, "lower", None)
    if run_lower is None and eval_lower is None:
        return init(key)
    abstract = jax.eval_shape(init, key)
    ahead = []
    if run_lower is not None:
        ahead.append(lambda: run_lower(abstract, num_iterations))
    if eval_lower is not None:
        key_like = jax.eval_shape(lambda k: jax.random.fold_in(k, 1), eval_key)
        ahead.append(
            lambda: eval_lower(abstract.agent, key_like, num_episodes=eval_episodes)
        )
    return run_while_compiling(lambda: init(key), ahead)


def compile_in_background(
    lowering: Callable[[], Any],
) -> concurrent.futures.Future[Any]:
    """Starts ``lowering().compile()`` on a background thread, for a program
    needed later (a run's shorter last chunk); returns its future.

    As with `run_while_compiling`, the program lands in its jitted function's
    cache, so the later call runs it without compiling. The caller waits for
    the future before that call (``future.exception()``: an error of the
    lowering is raised by the call itself, which lowers the same program);
    otherwise the call only compiles it a second time.
    """
    pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="jaxlab-compile"
    )
    future = pool.submit(lambda: lowering().compile())
    pool.shutdown(wait=False)  # the thread ends with its one compilation
    return future
