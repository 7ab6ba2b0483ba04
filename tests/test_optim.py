"""The L-BFGS solvers behind jaxblend.optim, checked against scipy.optimize.minimize."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

from jaxblend.optim import make_solver


def rosenbrock(x, data):
    a, b = data
    return jnp.sum(b * (x[1:] - x[:-1] ** 2) ** 2 + (a - x[:-1]) ** 2)


def np_rosenbrock(x, a, b):
    return np.sum(b * (x[1:] - x[:-1] ** 2) ** 2 + (a - x[:-1]) ** 2)


def run(kind, x0, data, budget):
    solver = make_solver(kind, rosenbrock, history=10)

    def go(x0, data):
        state = solver.init(x0, data)

        def cond(c):
            return (solver.evaluations(c[1]) < budget) & ~solver.stopped(c[1])

        return jax.lax.while_loop(cond, lambda c: solver.step(c[0], c[1], data), (x0, state))

    return jax.jit(go)(x0, data), solver


@pytest.mark.parametrize("kind", ["lbfgs", "jaxopt", "optax"])
def test_reaches_scipy_minimum(kind):
    jax.config.update("jax_enable_x64", True)
    try:
        x0 = jnp.asarray(np.linspace(-1.2, 1.0, 8))
        data = (jnp.asarray(1.0), jnp.asarray(10.0))
        (x, state), solver = run(kind, x0, data, 400)
        ref = minimize(np_rosenbrock, np.asarray(x0), args=(1.0, 10.0), method="L-BFGS-B",
                       options={"ftol": 1e-15, "gtol": 1e-12})  # fmt: skip
        np.testing.assert_allclose(np.asarray(x), ref.x, atol=1e-4)
        assert float(solver.value(state)) <= ref.fun + 1e-8
        assert int(solver.evaluations(state)) <= 400 + 30
    finally:
        jax.config.update("jax_enable_x64", False)


def test_lbfgs_vmap_equals_loop():
    x0 = jnp.asarray(np.stack([np.linspace(-1.2, 1.0, 6), np.linspace(0.5, -0.5, 6)]), jnp.float32)
    data = (jnp.asarray([1.0, 2.0]), jnp.asarray([10.0, 5.0]))
    solver = make_solver("lbfgs", rosenbrock)

    def go(x0, data):
        state = solver.init(x0, data)

        def cond(c):
            return (solver.evaluations(c[1]) < 60) & ~solver.stopped(c[1])

        return jax.lax.while_loop(cond, lambda c: solver.step(c[0], c[1], data), (x0, state))

    xs, states = jax.jit(jax.vmap(go))(x0, data)
    for i in range(2):
        x, st = jax.jit(go)(x0[i], (data[0][i], data[1][i]))
        np.testing.assert_allclose(xs[i], x, rtol=1e-5, atol=1e-6)
        assert int(states.evals[i]) == int(st.evals)


def test_lbfgs_counts_every_evaluation():
    calls = []

    def counted(x, data):
        jax.debug.callback(lambda: calls.append(1))
        return rosenbrock(x, data)

    solver = make_solver("lbfgs", counted)
    x0 = jnp.asarray(np.linspace(-1.2, 1.0, 4), jnp.float32)
    data = (jnp.asarray(1.0), jnp.asarray(10.0))
    state = solver.init(x0, data)
    x = x0
    for _ in range(5):
        x, state = solver.step(x, state, data)
    jax.effects_barrier()
    assert int(state.evals) == len(calls)


def test_gaussian_smoother_is_scipys_blur_and_symmetric(rng):
    from scipy import ndimage

    from jaxblend.optim import gaussian_smoother

    x, y = rng.normal(size=(2, 20, 24, 3))
    g = gaussian_smoother(1.5)
    want = np.stack(
        [ndimage.gaussian_filter(x[..., c], 1.5, mode="constant", truncate=3.0) for c in range(3)],
        -1,
    )
    np.testing.assert_allclose(np.asarray(g(jnp.asarray(x))), want, atol=1e-6)
    lhs = float(jnp.vdot(g(jnp.asarray(x)), y))
    rhs = float(jnp.vdot(x, g(jnp.asarray(y))))
    assert lhs == pytest.approx(rhs, rel=1e-5)


@pytest.mark.parametrize("sigma", [0.0, 0.4, 0.78, 1.5])
def test_gaussian_blur_with_a_traced_sigma_is_scipys_blur(rng, sigma):
    from scipy import ndimage

    from jaxblend.optim import SIGMA_MAX, gaussian_blur

    x = rng.normal(size=(20, 24, 3))
    got = np.asarray(jax.jit(gaussian_blur)(jnp.asarray(x, jnp.float32), jnp.float32(sigma)))
    if sigma == 0.0:
        np.testing.assert_allclose(got, x, atol=1e-6)  # the identity
        return
    r = int(3 * SIGMA_MAX + 0.5)  # the fixed radius: scipy's truncate is in units of sigma
    want = np.stack(
        [ndimage.gaussian_filter(x[..., c], sigma, mode="constant", truncate=r / sigma)
         for c in range(3)], -1,
    )  # fmt: skip
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_a_data_dependent_preconditioner_reads_each_jobs_data(rng):
    from jaxblend.optim import gaussian_blur

    def fun(x, d):
        return jnp.mean((x - d[0]) ** 2)

    seen = []

    def pre(q, d):
        seen.append(d[1])
        return gaussian_blur(q, d[1])

    solver = make_solver("lbfgs", fun, history=3, precondition=pre)
    t = jnp.asarray(rng.normal(size=(8, 8, 3)), jnp.float32)
    data = (t, jnp.float32(0.7))
    x, st = jnp.zeros_like(t), solver.init(jnp.zeros_like(t), data)
    x, st = solver.step(x, st, data)
    assert seen and float(fun(x, data)) < float(fun(jnp.zeros_like(t), data))
    with pytest.raises(ValueError, match="lbfgs"):
        make_solver("optax", fun, precondition=pre)


def test_smoothed_lbfgs_still_minimises_an_image_objective(rng):
    from scipy import ndimage

    # A smooth target: the preconditioner damps pixel-level directions by design.
    t = ndimage.gaussian_filter(rng.normal(size=(16, 16, 3)), (2, 2, 0)) * 10
    target = jnp.asarray(t, jnp.float32)

    def fun(x, t):
        return jnp.mean((x - t) ** 2) + 0.1 * jnp.mean(x**2)

    solver = make_solver("lbfgs", fun, history=5, smooth=1.0)
    x = jnp.zeros_like(target)
    state = solver.init(x, target)
    for _ in range(40):
        x, state = solver.step(x, state, target)
    want = target / 1.1
    assert float(fun(x, target)) == pytest.approx(float(fun(want, target)), rel=1e-3)
    with pytest.raises(ValueError, match="lbfgs"):
        make_solver("jaxopt", fun, smooth=1.0)


def _convex(x, data):
    q, b = data
    return 0.5 * x @ q @ x - b @ x + 0.25 * jnp.sum(x**4)


def test_torch_solver_follows_torch_lbfgs_step_for_step():
    """``solver="torch"`` against ``torch.optim.LBFGS(lr=1, line_search_fn=None)`` itself:
    the same iterates after 25 steps, with the memory full (history 5 < 25, so old pairs
    are dropped) and the steps spread over several ``.step()`` calls (max_iter 5)."""
    torch = pytest.importorskip("torch")
    jax.config.update("jax_enable_x64", True)
    try:
        rng = np.random.default_rng(0)
        u, _ = np.linalg.qr(rng.standard_normal((40, 40)))
        q = u @ np.diag(np.geomspace(0.1, 30.0, 40)) @ u.T  # ill-conditioned: no early end
        b = rng.standard_normal(40) * 3
        x0 = rng.standard_normal(40)

        xt = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
        qt, bt = torch.tensor(q), torch.tensor(b)
        opt = torch.optim.LBFGS([xt], lr=1, max_iter=5, history_size=5, line_search_fn=None)
        calls = []

        def closure():
            opt.zero_grad()
            loss = 0.5 * xt @ qt @ xt - bt @ xt + 0.25 * torch.sum(xt**4)
            loss.backward()
            calls.append(1)
            return loss

        for _ in range(5):  # 5 calls x 5 iterations = 25 steps
            opt.step(closure)

        solver = make_solver("torch", _convex, history=5)
        data = (jnp.asarray(q), jnp.asarray(b))
        x, state = jnp.asarray(x0), solver.init(jnp.asarray(x0), data)
        step = jax.jit(solver.step)
        for _ in range(25):
            x, state = step(x, state, data)
        np.testing.assert_allclose(np.asarray(x), xt.detach().numpy(), rtol=1e-9, atol=1e-10)
        assert int(solver.evaluations(state)) == 26 and len(calls) == 25  # +1: the last step's
        moved = np.abs(np.asarray(x) - x0).max()
        gn = np.abs(np.asarray(state.grad)).max()
        assert moved > 0.1 and gn > 1e-4, (moved, gn)  # still far from converged: a real check
        assert not bool(solver.stopped(state))
        # Not a line-search solver: the first step is torch's min(1, 1/|g|_1) along -g.
        g0 = q @ x0 - b + x0**3
        x1, _ = step(jnp.asarray(x0), solver.init(jnp.asarray(x0), data), data)
        np.testing.assert_allclose(np.asarray(x1), x0 - min(1.0, 1 / np.abs(g0).sum()) * g0)
    finally:
        jax.config.update("jax_enable_x64", False)
