"""`jaxlab.compile.run_while_compiling`: programs compiled on background
threads land in their jitted function's cache; errors reach the caller."""

from __future__ import annotations

import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.compile import compile_in_background, run_while_compiling


def test_programs_compiled_ahead_are_reused_by_the_later_calls(compiles):
    def compiled_ahead_a(x, n):
        return jnp.sin(x) * n

    def compiled_ahead_b(x):
        return jnp.cumsum(x) + 1.0

    f = jax.jit(compiled_ahead_a, static_argnames="n")
    g = jax.jit(compiled_ahead_b)
    x = jnp.arange(5.0)
    spec = jax.ShapeDtypeStruct(x.shape, x.dtype)
    out = run_while_compiling(
        lambda: "main's result", [lambda: f.lower(spec, n=3), lambda: g.lower(spec)]
    )
    assert out == "main's result"
    y, z = f(x, n=3), g(x)
    f(x, n=4)  # other static arguments: compiled when called, as usual
    np.testing.assert_allclose(y, np.sin(np.arange(5.0)) * 3, rtol=1e-6)
    np.testing.assert_allclose(z, np.cumsum(np.arange(5.0)) + 1.0)
    threads = compiles.of("compiled_ahead_a")
    assert len(threads) == 2 and threads[0].startswith("jaxlab-compile"), threads
    assert threads[1] == threading.current_thread().name
    (thread,) = compiles.of("compiled_ahead_b")  # compiled once, ahead
    assert thread.startswith("jaxlab-compile")


def test_no_lowerings_just_runs_main():
    assert run_while_compiling(lambda: 7, []) == 7


def test_a_failing_lowering_raises_its_error():
    def bad(x):
        return x @ x  # a [3] @ [3] is fine; a [2, 3] @ [2, 3] is not

    spec = jax.ShapeDtypeStruct((2, 3), jnp.float32)
    with pytest.raises(TypeError, match="dot_general"):
        run_while_compiling(lambda: 1, [lambda: jax.jit(bad).lower(spec)])


def test_main_s_error_wins():
    def main():
        raise KeyError("main")

    spec = jax.ShapeDtypeStruct((3,), jnp.float32)
    with pytest.raises(KeyError, match="main"):
        run_while_compiling(main, [lambda: jax.jit(jnp.sin).lower(spec)])


def test_a_program_compiled_in_the_background_is_reused(compiles):
    def compiled_later(x):
        return jnp.tanh(x) * 2.0

    f = jax.jit(compiled_later)
    x = jnp.arange(4.0)
    future = compile_in_background(lambda: f.lower(jax.ShapeDtypeStruct((4,), x.dtype)))
    assert future.exception() is None
    np.testing.assert_allclose(f(x), np.tanh(np.arange(4.0)) * 2.0, rtol=1e-6)
    (thread,) = compiles.of("compiled_later")  # once, in the background
    assert thread.startswith("jaxlab-compile")


def test_a_background_compilation_s_error_is_in_its_future():
    spec = jax.ShapeDtypeStruct((2, 3), jnp.float32)
    future = compile_in_background(lambda: jax.jit(lambda x: x @ x).lower(spec))
    assert isinstance(future.exception(), TypeError)
