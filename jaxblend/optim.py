"""L-BFGS behind one small interface: ours, ``jaxopt.LBFGS``, ``optax.lbfgs``, or torch's.

All are driven the same way: ``init(x, data) -> state`` evaluates the objective once;
``step(x, state, data) -> (x, state)`` is one L-BFGS iteration with its line search (none
for ``"torch"``); ``evaluations(state)`` counts objective evaluations (value and gradient)
so far and ``value(state)`` is the objective at ``x``. The data are passed as arguments,
never closed over, so one compiled program serves every job of a shape and ``vmap``
batches jobs.

jaxopt is in maintenance mode (its L-BFGS lives on as ``optax.lbfgs``); keeping the
solvers behind this module lets any serve.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

Objective = Callable[[jax.Array, Any], jax.Array]


class Solver(NamedTuple):
    init: Callable[[jax.Array, Any], Any]
    step: Callable[[jax.Array, Any, Any], tuple[jax.Array, Any]]
    evaluations: Callable[[Any], jax.Array]
    value: Callable[[Any], jax.Array]
    stopped: Callable[[Any], jax.Array] = lambda s: jnp.bool_(False)


def _jaxopt(fun: Objective, history: int, linesearch: str = "zoom") -> Solver:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import jaxopt

    lbfgs = jaxopt.LBFGS(
        fun=jax.value_and_grad(fun),
        value_and_grad=True,
        maxiter=1 << 30,
        tol=0.0,
        history_size=history,
        linesearch=linesearch,
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


class _LbfgsState(NamedTuple):
    value: jax.Array
    grad: jax.Array
    s: jax.Array  # m x n: steps
    y: jax.Array  # m x n: gradient changes
    rho: jax.Array  # m: 1 / (s·y), 0 for an empty slot
    head: jax.Array  # next slot to write
    gamma: jax.Array  # initial inverse-Hessian scale s·y / y·y
    evals: jax.Array
    failed: jax.Array


def _two_loop(
    st: _LbfgsState, history: int, precondition: Callable[[jax.Array], jax.Array] | None = None
) -> jax.Array:
    """``-H ∇f``: the L-BFGS two-loop recursion over the circular memory of ``st`` (empty
    slots have ``rho = 0`` and drop out), initial inverse Hessian ``γ I`` (or ``γ P``)."""
    q = st.grad.reshape(-1)
    order = (st.head - 1 - jnp.arange(history)) % history  # newest first

    def first(i, carry):
        q, alpha = carry
        j = order[i]
        a = st.rho[j] * jnp.dot(st.s[j], q)
        return q - a * st.y[j], alpha.at[j].set(a)

    q, alpha = jax.lax.fori_loop(0, history, first, (q, jnp.zeros((history,), q.dtype)))
    if precondition is None:
        r = st.gamma * q
    else:
        r = st.gamma * precondition(q.reshape(st.grad.shape)).reshape(-1)

    def second(i, r):
        j = order[history - 1 - i]
        b = st.rho[j] * jnp.dot(st.y[j], r)
        return r + st.s[j] * (alpha[j] - b)

    r = jax.lax.fori_loop(0, history, second, r)
    return -r.reshape(st.grad.shape)


def _empty_state(v: jax.Array, g: jax.Array, history: int) -> _LbfgsState:
    n = g.size
    z = jnp.zeros((history, n), g.dtype)
    return _LbfgsState(
        v, g, z, z, jnp.zeros((history,), g.dtype), jnp.int32(0),
        jnp.asarray(1.0, g.dtype), jnp.int32(1), jnp.bool_(False),
    )  # fmt: skip


def _remember(st: _LbfgsState, s: jax.Array, y: jax.Array, keep: jax.Array) -> dict:
    """The memory fields of ``st`` with the pair ``(s, y)`` written when ``keep``."""
    sy = jnp.dot(s, y)
    j = st.head
    return dict(
        s=jnp.where(keep, st.s.at[j].set(s), st.s),
        y=jnp.where(keep, st.y.at[j].set(y), st.y),
        rho=jnp.where(keep, st.rho.at[j].set(1.0 / jnp.where(keep, sy, 1.0)), st.rho),
        head=jnp.where(keep, (j + 1) % st.s.shape[0], j),
        gamma=jnp.where(keep, sy / jnp.dot(y, y), st.gamma),
    )


def _lbfgs(
    fun: Objective,
    history: int,
    *,
    c1: float = 1e-4,
    max_trials: int = 20,
    precondition: Callable[[jax.Array, Any], jax.Array] | None = None,
) -> Solver:
    """L-BFGS written for ``vmap``: every loop body is exactly one objective evaluation.

    Two-loop recursion over a circular memory (empty slots have ``rho = 0`` and drop
    out), then a backtracking line search on the Armijo condition starting from the unit
    step (halving). A pair is stored only when ``s·y > 0``, which keeps the inverse-Hessian
    estimate positive definite without a Wolfe search. jaxopt's and optax's zoom searches
    nest ``lax.cond`` around objective evaluations; under ``vmap`` a ``cond`` evaluates
    both branches, which makes stacked jobs many times slower than single ones. Here a
    stack of jobs costs what its slowest job's line search costs, one batched VGG pass per
    trial.
    """
    vg = jax.value_and_grad(fun)

    def init(x, data):
        v, g = vg(x, data)
        return _empty_state(v, g, history)

    def direction(st: _LbfgsState, data) -> jax.Array:
        if precondition is None:
            return _two_loop(st, history)
        return _two_loop(st, history, lambda q: precondition(q, data))

    def step(x, st: _LbfgsState, data):
        d = direction(st, data)
        gd = jnp.vdot(st.grad, d)
        # The very first step: at most one grey level per pixel.
        t0 = jnp.where(st.evals <= 1, 1.0 / jnp.maximum(jnp.max(jnp.abs(d)), 1e-12), 1.0)
        descent = gd < 0
        d = jnp.where(descent, d, -st.grad)
        gd = jnp.where(descent, gd, -jnp.vdot(st.grad, st.grad))

        def cond(c):
            t, v, g, n, ok = c
            return (~ok) & (n < max_trials)

        def body(c):
            t, _, _, n, _ = c
            t = jnp.where(n == 0, t, 0.5 * t)
            v, g = vg(x + t * d, data)
            ok = jnp.isfinite(v) & (v <= st.value + c1 * t * gd)
            return t, v, g, n + 1, ok

        t, v, g, n, ok = jax.lax.while_loop(
            cond, body, (t0.astype(x.dtype), st.value, st.grad, jnp.int32(0), jnp.bool_(False))
        )
        s = (t * d).reshape(-1)
        y = (g - st.grad).reshape(-1)
        keep = ok & (jnp.dot(s, y) > 1e-10 * jnp.dot(y, y))
        new = _LbfgsState(
            value=jnp.where(ok, v, st.value),
            grad=jnp.where(ok, g, st.grad),
            **_remember(st, s, y, keep),
            evals=st.evals + n,
            failed=~ok,
        )
        return jnp.where(ok, x + t * d, x), new

    return Solver(init, step, lambda s: s.evals, lambda s: s.value, lambda s: s.failed)


def _torch_lbfgs(fun: Objective, history: int) -> Solver:
    """``torch.optim.LBFGS(lr=1, line_search_fn=None)`` step for step, as the authors' code
    runs it (``history_size=100`` there): the two-loop direction, then the fixed step
    ``t = 1`` with no line search (``t = min(1, 1/‖∇f‖₁)`` on the very first step), one
    objective evaluation per step. A pair is remembered when ``s·y > 1e-10``; the initial
    inverse Hessian is ``γ = s·y / y·y`` of the newest pair (1 before any). Like torch, the
    step is taken even when the objective rises; the solver stops (``stopped``) when the
    direction is no descent direction (``∇f·d > -1e-9``, where torch's step breaks off and
    makes no further progress). torch's ``max_iter`` only groups steps into ``.step()``
    calls and does not change the sequence of iterates.
    """
    vg = jax.value_and_grad(fun)

    def init(x, data):
        v, g = vg(x, data)
        return _empty_state(v, g, history)

    def step(x, st: _LbfgsState, data):
        d = _two_loop(st, history)
        first = jnp.minimum(1.0, 1.0 / jnp.sum(jnp.abs(st.grad)))
        t = jnp.where(st.evals <= 1, first, 1.0).astype(x.dtype)
        ok = jnp.vdot(st.grad, d) <= -1e-9
        x_new = x + t * d
        v, g = vg(x_new, data)
        s = (t * d).reshape(-1)
        y = (g - st.grad).reshape(-1)
        keep = ok & (jnp.dot(s, y) > 1e-10)
        new = _LbfgsState(
            value=jnp.where(ok, v, st.value),
            grad=jnp.where(ok, g, st.grad),
            **_remember(st, s, y, keep),
            evals=st.evals + 1,
            failed=~ok,
        )
        return jnp.where(ok, x_new, x), new

    return Solver(init, step, lambda s: s.evals, lambda s: s.value, lambda s: s.failed)


def gaussian_smoother(sigma: float) -> Callable[[jax.Array], jax.Array]:
    """``x ↦ G_σ * x`` over the two leading (image) axes of an ``H x W x C`` array: a
    separable Gaussian blur with zero padding, a symmetric positive semi-definite operator
    (usable as the initial inverse Hessian of L-BFGS)."""
    r = max(1, int(3 * sigma + 0.5))  # as scipy.ndimage.gaussian_filter(truncate=3)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = [float(v) for v in k / k.sum()]  # Python floats: nothing traced is captured
    return functools.partial(_separable, k)


#: The largest per-job ``σ`` of :func:`gaussian_blur` (its taps reach ``3 · SIGMA_MAX``).
SIGMA_MAX = 1.5


def gaussian_blur(x: jax.Array, sigma: jax.Array) -> jax.Array:
    """:func:`gaussian_smoother` with a traced ``σ`` (a per-job array, clipped to
    ``[0, SIGMA_MAX]``): the taps are computed in the program, over a fixed radius of
    ``3 · SIGMA_MAX`` px; ``σ = 0`` is the identity (to float32 round-off)."""
    r = int(3 * SIGMA_MAX + 0.5)
    s = jnp.clip(jnp.asarray(sigma, jnp.float32), 0.05, SIGMA_MAX)
    k = jnp.exp(-0.5 * (jnp.arange(-r, r + 1, dtype=jnp.float32) / s) ** 2)
    k = k / jnp.sum(k)
    return _separable([k[i] for i in range(2 * r + 1)], x)


def _separable(k, x: jax.Array) -> jax.Array:
    """Separable convolution of ``x``'s two leading axes with the taps ``k`` (zero pad)."""
    r = (len(k) - 1) // 2
    h, w = x.shape[:2]
    out = jnp.zeros_like(x)
    p = jnp.pad(x, ((r, r), (0, 0), (0, 0)))
    for i in range(2 * r + 1):
        out = out + k[i] * p[i : i + h]
    p = jnp.pad(out, ((0, 0), (r, r), (0, 0)))
    out = jnp.zeros_like(x)
    for i in range(2 * r + 1):
        out = out + k[i] * p[:, i : i + w]
    return out


def make_solver(
    kind: str,
    fun: Objective,
    *,
    history: int = 10,
    smooth: float = 0.0,
    precondition: Callable[[jax.Array, Any], jax.Array] | None = None,
) -> Solver:
    """L-BFGS over ``fun(x, data)``: ``kind`` is ``"jaxopt"``, ``"optax"``, ``"lbfgs"`` or
    ``"torch"`` (``torch.optim.LBFGS`` without a line search, as the authors run it).

    ``smooth > 0`` (``"lbfgs"`` only) preconditions the search: the two-loop recursion's
    initial inverse Hessian becomes ``γ G_σ`` (a Gaussian blur of ``σ = smooth`` px) instead
    of ``γ I``, so that each step changes the image smoothly: pixel-level speckle, which
    fits VGG's Gram statistics at no visual benefit, is not a search direction.
    ``precondition(q, data)`` (``"lbfgs"`` only) is any such symmetric positive
    semi-definite operator that may read the job's data (a per-job ``σ``:
    :func:`gaussian_blur`); it replaces ``smooth``.
    """
    if (smooth or precondition is not None) and kind != "lbfgs":
        raise ValueError(f"a smoothing preconditioner needs the 'lbfgs' solver, not {kind!r}")
    if kind == "jaxopt":
        return _jaxopt(fun, history)
    if kind == "optax":
        return _optax(fun, history)
    if kind == "lbfgs":
        if precondition is None and smooth:
            blur = gaussian_smoother(smooth)
            precondition = lambda q, data: blur(q)  # noqa: E731
        return _lbfgs(fun, history, precondition=precondition)
    if kind == "torch":
        return _torch_lbfgs(fun, history)
    raise ValueError(f"solver must be 'jaxopt', 'optax', 'lbfgs' or 'torch', got {kind!r}")
