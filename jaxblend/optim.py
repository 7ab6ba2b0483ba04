"""L-BFGS behind one small interface: ``jaxopt.LBFGS`` or ``optax.lbfgs``.

Both are driven the same way: ``init(x, data) -> state`` evaluates the objective once;
``step(x, state, data) -> (x, state)`` is one L-BFGS iteration with its line search;
``evaluations(state)`` counts objective evaluations (value and gradient) so far and
``value(state)`` is the objective at ``x``. The data are passed as arguments, never closed
over, so one compiled program serves every job of a shape and ``vmap`` batches jobs.

jaxopt is in maintenance mode (its L-BFGS lives on as ``optax.lbfgs``); keeping the two
behind this module lets either serve.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

Objective = Callable[[jax.Array, Any], jax.Array]


class Solver(NamedTuple):
    init: Callable[[jax.Array, Any], Any]
    step: Callable[[jax.Array, Any, Any], tuple[jax.Array, Any]]
    evaluations: Callable[[Any], jax.Array]
    value: Callable[[Any], jax.Array]


def _jaxopt(fun: Objective, history: int) -> Solver:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import jaxopt

    lbfgs = jaxopt.LBFGS(
        fun=jax.value_and_grad(fun),
        value_and_grad=True,
        maxiter=1 << 30,
        tol=0.0,
        history_size=history,
        linesearch="zoom",
        maxls=20,
        max_stepsize=1e3,
        implicit_diff=False,
    )

    def init(x, data):
        return lbfgs.init_state(x, data)

    def step(x, state, data):
        out = lbfgs.update(x, state, data)
        return out.params, out.state

    return Solver(
        init,
        step,
        lambda s: jnp.asarray(s.num_fun_eval, jnp.int32),
        lambda s: s.value,
    )


class _OptaxState(NamedTuple):
    opt: Any
    value: jax.Array
    grad: jax.Array
    evals: jax.Array


def _optax(fun: Objective, history: int) -> Solver:
    opt = optax.lbfgs(memory_size=history)
    vg = jax.value_and_grad(fun)

    def init(x, data):
        v, g = vg(x, data)
        return _OptaxState(opt.init(x), v, g, jnp.int32(1))

    def step(x, state, data):
        updates, ost = opt.update(
            state.grad,
            state.opt,
            x,
            value=state.value,
            grad=state.grad,
            value_fn=lambda p: fun(p, data),
        )
        x = optax.apply_updates(x, updates)
        info = optax.tree_utils.tree_get(ost, "info")
        # The zoom line search has evaluated value and gradient at the accepted point and
        # keeps them in its state; reuse them instead of evaluating again.
        v = optax.tree_utils.tree_get(ost, "value")
        g = optax.tree_utils.tree_get(ost, "grad")
        n = jnp.asarray(info.num_linesearch_steps, jnp.int32)
        return x, _OptaxState(ost, v, g, state.evals + jnp.maximum(n, 1))

    return Solver(init, step, lambda s: s.evals, lambda s: s.value)


def make_solver(kind: str, fun: Objective, *, history: int = 10) -> Solver:
    """L-BFGS over ``fun(x, data)``: ``kind`` is ``"jaxopt"`` or ``"optax"``."""
    if kind == "jaxopt":
        return _jaxopt(fun, history)
    if kind == "optax":
        return _optax(fun, history)
    raise ValueError(f"solver must be 'jaxopt' or 'optax', got {kind!r}")
