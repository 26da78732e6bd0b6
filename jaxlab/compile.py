"""Compiling programs ahead, on background threads, while the caller works.

A training run on a CPU starts by compiling several programs one after the
other: the initial state, the training chunk, the evaluation. XLA compiles
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
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


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
