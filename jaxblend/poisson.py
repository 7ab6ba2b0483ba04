"""Classical Poisson image editing (Pérez, Gangnet & Blake 2003), solved exactly.

Inside the mask :math:`\\Omega` the blend :math:`f` solves, per colour channel, the discrete
Poisson equation of the paper (Eq. 7) on the 4-connected pixel grid:

.. math::

    |N_p| f_p - \\sum_{q \\in N_p \\cap \\Omega} f_q
      = \\sum_{q \\in N_p \\cap \\partial\\Omega} f^*_q + \\sum_{q \\in N_p} v_{pq},
    \\qquad p \\in \\Omega,

where :math:`N_p` are the in-canvas neighbours of :math:`p` (fewer than 4 at the canvas
border, i.e. a zero-flux condition there), :math:`f^*` is the target (the Dirichlet
boundary) and the guidance :math:`v_{pq}` is, for the source :math:`g`,

* ``mode="normal"`` (seamless cloning, Eq. 11): :math:`v_{pq} = g_p - g_q`;
* ``mode="mixed"`` (mixed gradients, Eq. 13): :math:`v_{pq} = f^*_p - f^*_q` if
  :math:`|f^*_p - f^*_q| > |g_p - g_q|`, else :math:`g_p - g_q` (chosen per pair).

Outside the mask the result is the target, bit for bit.

Solver: conjugate gradients on the masked operator (unknowns = the mask pixels, the operator
is symmetric positive definite as long as some canvas pixel lies outside the mask),
preconditioned by one symmetric geometric-multigrid V-cycle (red-black Gauss-Seidel
smoothing, bilinear cell-centred prolongation, restriction = its transpose, coarse masks
= cells whose four children are all unknowns, dense solve on the coarsest grid), started
from the pasted source shifted per channel by the mean target - source step across the
mask's boundary. It stops on a relative residual, so the result is the exact discrete
solution up to ``tol``; about 7-10 iterations suffice for any mask. Everything runs in
one ``lax.while_loop`` with static shapes, so :func:`poisson_solve` is jit-able and
vmap-able over jobs of one canvas shape.
:func:`poisson_blend` crops the canvas to the mask's bounding box (plus a 1-pixel ring,
rounded up to a multiple of 32 pixels to bound recompiles) before solving.

References:
  P. Pérez, M. Gangnet, A. Blake, "Poisson Image Editing", ACM SIGGRAPH 2003.
  A. McAdams, E. Sifakis, J. Teran, "A parallel multigrid Poisson solver for fluids
  simulation on large grids", SCA 2010 (multigrid-preconditioned CG on masked domains).
"""

from __future__ import annotations

from functools import partial
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxblend import io
from jaxblend.errors import InputError

Mode = Literal["normal", "mixed"]
MODES: tuple[str, ...] = ("normal", "mixed")

DEFAULT_TOL = 1e-4
DEFAULT_MAXITER = 100
_COARSEST = 4  # the V-cycle stops coarsening once both sides are at most this
_BUCKET = 32  # poisson_blend rounds the solve window up to a multiple of this


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise InputError(f"mode must be 'normal' or 'mixed', got {mode!r}")
    return mode


# --------------------------------------------------------------------------- stencils
# Internal layout: channels first, ``(..., H, W)``; pixels outside the grid count as absent.


def _neighbour_sum(u: jax.Array) -> jax.Array:
    """Sum of the 4 neighbours of every pixel, absent (zero) beyond the grid."""
    pad = [(0, 0)] * (u.ndim - 2) + [(1, 1), (1, 1)]
    p = jnp.pad(u, pad)
    return p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]


def _pair_diffs(g: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Forward differences ``g_p - g_q`` for q the right (x) and lower (y) neighbour."""
    return g[..., :, :-1] - g[..., :, 1:], g[..., :-1, :] - g[..., 1:, :]


def _divergence(vx: jax.Array, vy: jax.Array) -> jax.Array:
    """``sum_{q in N_p} v_pq`` from the pair fields of :func:`_pair_diffs` (v_qp = -v_pq)."""
    nx = [(0, 0)] * (vx.ndim - 1)
    div = jnp.pad(vx, nx + [(0, 1)]) - jnp.pad(vx, nx + [(1, 0)])
    ny = [(0, 0)] * (vy.ndim - 2)
    return div + jnp.pad(vy, ny + [(0, 1), (0, 0)]) - jnp.pad(vy, ny + [(1, 0), (0, 0)])


def _guidance_divergence(target: jax.Array, source: jax.Array, mode: str) -> jax.Array:
    """``sum_{q in N_p} v_pq`` for every pixel (channels-first arrays)."""
    gx, gy = _pair_diffs(source)
    if mode == "mixed":
        fx, fy = _pair_diffs(target)
        gx = jnp.where(jnp.abs(fx) > jnp.abs(gx), fx, gx)
        gy = jnp.where(jnp.abs(fy) > jnp.abs(gy), fy, gy)
    return _divergence(gx, gy)


# --------------------------------------------------------------------------- multigrid


class _Level(NamedTuple):
    mask: jax.Array  # (1, H, W) 1.0 on unknowns
    deg: jax.Array  # (1, H, W) number of in-grid neighbours (>= 1 on unknowns)
    inv_deg: jax.Array  # (1, H, W) 1 / deg
    red: jax.Array  # (1, H, W) bool, unknowns with (i + j) even
    black: jax.Array  # (1, H, W) bool, unknowns with (i + j) odd


def _np_neighbour_sum(v: np.ndarray) -> np.ndarray:
    p = np.pad(v, 1)
    return p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]


def _make_level(mask: jax.Array, valid: np.ndarray) -> _Level:
    # ``valid`` depends on the shape only: NumPy, so XLA gets literals, not work to fold.
    deg = np.maximum(_np_neighbour_sum(valid) * valid, 1.0).astype(np.float32)
    h, w = mask.shape
    parity = (np.add.outer(np.arange(h), np.arange(w)) % 2).astype(np.float32)
    m = mask[None]
    on = m > 0
    red, black = on & (parity[None] == 0), on & (parity[None] == 1)
    return _Level(m, jnp.asarray(deg[None]), jnp.asarray(1.0 / deg[None]), red, black)


def _coarsen(mask: jax.Array, valid: np.ndarray) -> tuple[jax.Array, np.ndarray]:
    """Coarse unknowns: all 4 children unknown; coarse grid cells: any child in the grid."""
    h, w = mask.shape
    ph, pw = h % 2, w % 2
    m = jnp.pad(mask, ((0, ph), (0, pw)))
    v = np.pad(valid, ((0, ph), (0, pw)))
    hc, wc = (h + 1) // 2, (w + 1) // 2
    mc = m.reshape(hc, 2, wc, 2).min(axis=(1, 3))
    vc = v.reshape(hc, 2, wc, 2).max(axis=(1, 3))
    return mc, vc


def _prolong_axis(c: jax.Array, n: int, axis: int) -> jax.Array:
    """Cell-centred linear interpolation along ``axis`` to ``n`` cells (edge replicated)."""
    nc = c.shape[axis]
    first = jax.lax.slice_in_dim(c, 0, 1, axis=axis)
    last = jax.lax.slice_in_dim(c, nc - 1, nc, axis=axis)
    prev = jnp.concatenate([first, jax.lax.slice_in_dim(c, 0, nc - 1, axis=axis)], axis=axis)
    nxt = jnp.concatenate([jax.lax.slice_in_dim(c, 1, nc, axis=axis), last], axis=axis)
    even = 0.75 * c + 0.25 * prev
    odd = 0.75 * c + 0.25 * nxt
    f = jnp.stack([even, odd], axis=axis + 1)
    shape = list(c.shape)
    shape[axis] = 2 * nc
    return jax.lax.slice_in_dim(f.reshape(shape), 0, n, axis=axis)


def _prolong(c: jax.Array, shape: tuple[int, int]) -> jax.Array:
    return _prolong_axis(_prolong_axis(c, shape[0], c.ndim - 2), shape[1], c.ndim - 1)


def _restrict_axis(f: jax.Array, nc: int, axis: int) -> jax.Array:
    """Exact transpose of :func:`_prolong_axis`, written out (as the transposes of XLA's
    autodiff, or without the moveaxis copies, XLA CPU fuses it into a 3x slower V-cycle)."""
    f = jnp.moveaxis(f, axis, -1)
    n = f.shape[-1]
    f = jnp.pad(f, [(0, 0)] * (f.ndim - 1) + [(0, 2 * nc - n)])
    pairs = f.reshape(f.shape[:-1] + (nc, 2))
    fe, fo = pairs[..., 0], pairs[..., 1]
    zero = jnp.zeros_like(fe[..., :1])
    c = 0.75 * (fe + fo)
    c = c + 0.25 * jnp.concatenate([fe[..., 1:], zero], axis=-1)  # f[2i+2]: prev of i+1
    c = c + 0.25 * jnp.concatenate([zero, fo[..., :-1]], axis=-1)  # f[2i-1]: next of i-1
    c = c.at[..., 0].add(0.25 * fe[..., 0])  # replicated edges
    c = c.at[..., -1].add(0.25 * fo[..., -1])
    return jnp.moveaxis(c, -1, axis)


def _restrict(f: jax.Array, shape: tuple[int, int]) -> jax.Array:
    # Columns first: that pass reads rows contiguously, and the rows pass (which reads
    # through a transpose) then works on half the data; the other order is 12% slower.
    return _restrict_axis(_restrict_axis(f, shape[1], f.ndim - 1), shape[0], f.ndim - 2)


def _barrier(x: jax.Array) -> jax.Array:
    """Materialise ``x``: stops XLA fusing chains of stencils (it recomputes the producer
    for every neighbour read, which made a V-cycle 50x slower on CPU)."""
    return jax.lax.optimization_barrier(x)


def _apply(level: _Level, u: jax.Array) -> jax.Array:
    """Masked operator ``A u = m * (deg * u - sum of neighbours of u)``, ``u`` zero off
    the unknowns (every vector of the CG and V-cycle is)."""
    return level.mask * (level.deg * u - _neighbour_sum(u))


def _gs_half(level: _Level, colour: jax.Array, u: jax.Array, r: jax.Array) -> jax.Array:
    """Gauss-Seidel update of one colour of the red-black ordering."""
    new = (r + _neighbour_sum(u)) * level.inv_deg
    return _barrier(jnp.where(colour, new, u))


def _coarse_inverse(level: _Level) -> jax.Array:
    """Dense inverse of the coarsest operator (identity on non-unknowns)."""
    h, w = level.mask.shape[-2:]
    idx = np.arange(h * w).reshape(h, w)
    adj = np.zeros((h * w, h * w), np.float32)  # grid adjacency: a NumPy literal
    for a, c in ((idx[:, :-1], idx[:, 1:]), (idx[:-1, :], idx[1:, :])):
        adj[a.ravel(), c.ravel()] = adj[c.ravel(), a.ravel()] = 1.0
    m = level.mask.reshape(-1)
    diag = m * level.deg.reshape(-1) + (1.0 - m)
    mat = jnp.diag(diag) - m[:, None] * jnp.asarray(adj) * m[None, :]
    return jnp.linalg.inv(mat)


def _vcycle(levels: list[_Level], coarse_inv: jax.Array, r: jax.Array, i: int = 0) -> jax.Array:
    """One symmetric V-cycle approximating ``A^-1 r`` (``r`` zero off the unknowns)."""
    lv = levels[i]
    if i == len(levels) - 1:
        h, w = lv.mask.shape[-2:]
        flat = r.reshape(r.shape[:-2] + (h * w,))
        return lv.mask * (flat @ coarse_inv.T).reshape(r.shape)
    u = jnp.zeros_like(r)
    u = _gs_half(lv, lv.red, u, r)
    u = _gs_half(lv, lv.black, u, r)
    res = _barrier(r - _apply(lv, u))
    coarse = levels[i + 1]
    rc = _restrict(res, coarse.mask.shape[-2:])
    ec = _vcycle(levels, coarse_inv, _barrier(coarse.mask * rc), i + 1)
    u = _barrier(u + lv.mask * _prolong(ec, lv.mask.shape[-2:]))
    u = _gs_half(lv, lv.black, u, r)
    u = _gs_half(lv, lv.red, u, r)
    return u


def _hierarchy(mask: jax.Array) -> list[_Level]:
    valid = np.ones(mask.shape, np.float32)
    levels = [_make_level(mask, valid)]
    while max(mask.shape) > _COARSEST:
        mask, valid = _coarsen(mask, valid)
        mask = _barrier(mask)
        levels.append(_make_level(mask, valid))
    return levels


# --------------------------------------------------------------------------- public API


def poisson_system(
    target: ArrayLike, source: ArrayLike, mask: ArrayLike, mode: Mode = "normal"
) -> tuple[jax.Array, jax.Array]:
    """Right-hand side of the Poisson equation and the diagonal ``|N_p|`` (canvas arrays).

    Args:
      target, source: ``H x W x 3`` canvas arrays (``f*`` and ``g``).
      mask: ``H x W``, nonzero inside :math:`\\Omega`.
      mode: ``"normal"`` or ``"mixed"``.

    Returns:
      ``(b, deg)``: ``b`` (``H x W x 3``) is the right-hand side
      :math:`\\sum_{q \\in N_p \\cap \\partial\\Omega} f^*_q + \\sum_{q \\in N_p} v_{pq}`
      on the mask (zero elsewhere); ``deg`` (``H x W``) is :math:`|N_p|`.
    """
    _check_mode(mode)
    f = jnp.moveaxis(jnp.asarray(target, jnp.float32), -1, -3)
    g = jnp.moveaxis(jnp.asarray(source, jnp.float32), -1, -3)
    m = (jnp.asarray(mask) > 0).astype(jnp.float32)[..., None, :, :]
    outside = (1.0 - m) * f
    b = m * (_guidance_divergence(f, g, mode) + _neighbour_sum(outside))
    deg = _np_neighbour_sum(np.ones(m.shape[-2:], np.float32))
    return jnp.moveaxis(b, -3, -1), jnp.asarray(deg)


@partial(jax.jit, static_argnames=("mode", "maxiter"))
def _solve(
    target: jax.Array, source: jax.Array, mask: jax.Array, tol: jax.Array, mode: str, maxiter: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    f = jnp.moveaxis(target.astype(jnp.float32), -1, 0)
    g = jnp.moveaxis(source.astype(jnp.float32), -1, 0)
    levels = _hierarchy((mask > 0).astype(jnp.float32))
    m = levels[0].mask
    coarse_inv = _coarse_inverse(levels[-1])
    fine = levels[0]

    # b = m * (div v + sum of target neighbours outside the mask); unknowns x = f on the mask.
    b = m * (_guidance_divergence(f, g, mode) + _neighbour_sum((1.0 - m) * f))
    # The pasted source, shifted per channel by the mean target - source step across the
    # mask's boundary: the error left is a smooth membrane without its large constant part.
    ring = (1.0 - m) * jnp.minimum(_neighbour_sum(m), 1.0)
    shift = jnp.sum(ring * (f - g), axis=(-2, -1)) / jnp.maximum(jnp.sum(ring), 1.0)
    x0 = m * (g + shift[:, None, None])
    r0 = b - _apply(fine, x0)

    def dot(a: jax.Array, c: jax.Array) -> jax.Array:
        return jnp.sum(a * c, axis=(-2, -1))

    bnorm = jnp.sqrt(dot(b, b))
    thresh = (tol * jnp.maximum(bnorm, 1e-30)) ** 2

    # The preconditioner is applied at the top of the body (beta = 0 on the first pass):
    # with no V-cycle outside the loop, the mask hierarchy enters the loop materialised.
    # Outside it, XLA fuses the coarse-mask reductions into every use (5x slower).
    def cond(state):
        _, r, _, _, k = state
        return (k < maxiter) & jnp.any(dot(r, r) > thresh)

    def body(state):
        x, r, p, rz_old, k = state
        z = _vcycle(levels, coarse_inv, r)
        rz = dot(r, z)
        beta = jnp.where(rz_old > 0, rz / jnp.where(rz_old > 0, rz_old, 1.0), 0.0)
        p = z + beta[:, None, None] * p
        ap = _apply(fine, p)
        pap = dot(p, ap)
        alpha = jnp.where(pap > 0, rz / jnp.where(pap > 0, pap, 1.0), 0.0)[:, None, None]
        return x + alpha * p, r - alpha * ap, p, rz, k + 1

    zero = jnp.zeros_like(bnorm)
    init = (x0, r0, jnp.zeros_like(r0), zero, jnp.asarray(0))
    x, r, _, _, k = jax.lax.while_loop(cond, body, init)
    rel = jnp.sqrt(dot(r, r)) / jnp.maximum(bnorm, 1e-30)
    out = jnp.where(mask[..., None] > 0, jnp.moveaxis(x, 0, -1), target.astype(jnp.float32))
    return out, k, jnp.max(rel)


def _no_boundary(mask: ArrayLike) -> bool:
    """True when the (concrete) mask leaves no target pixel on the canvas."""
    m = np.asarray(mask)
    return bool(m.shape[-2:] and np.all(m > 0, axis=(-2, -1)).any())


def poisson_solve(
    target: ArrayLike,
    source: ArrayLike,
    mask: ArrayLike,
    *,
    mode: Mode = "normal",
    tol: float = DEFAULT_TOL,
    maxiter: int = DEFAULT_MAXITER,
) -> jax.Array:
    """Solve the Poisson image-editing equation on the whole canvas.

    .. math::

        |N_p| f_p - \\sum_{q \\in N_p \\cap \\Omega} f_q
          = \\sum_{q \\in N_p \\cap \\partial\\Omega} f^*_q + \\sum_{q \\in N_p} v_{pq},
        \\qquad p \\in \\Omega

    (Pérez et al. 2003, Eq. 7; see the module docstring for :math:`v_{pq}`), by multigrid-
    preconditioned conjugate gradients, to ``||b - A f|| <= tol * ||b||`` per channel.

    Pure array function: jit it (``mode`` and ``maxiter`` static) or ``jax.vmap`` it over a
    leading job axis of jobs with one canvas shape. It solves on the full canvas; for one
    job :func:`poisson_blend` is faster (it crops to the mask's bounding box).

    Args:
      target: ``H x W x 3`` float canvas :math:`f^*` (0-255).
      source: ``H x W x 3`` float canvas :math:`g` (the source pasted on the canvas; only
        its values on the mask and its 1-pixel ring matter).
      mask: ``H x W``, nonzero inside :math:`\\Omega`. At least one pixel must be outside
        the mask (otherwise there is no boundary and the system is singular; concrete
        inputs raise :class:`InputError`, traced ones give an undefined result).
      mode: ``"normal"`` (source gradients) or ``"mixed"`` (per pair the larger of the
        source and target differences).
      tol: relative residual at which CG stops. The default ``1e-4`` gives a maximum error
        of about 0.15 grey level against an exact solve at 1024x1024 (7 iterations; the
        requirement is 0.5); ``1e-5`` gives about 0.01 (9 iterations).
      maxiter: cap on CG iterations (about 7-10 are needed for any mask).

    Returns:
      ``H x W x 3`` float32: the solution on the mask, the target (bit for bit) elsewhere.
      Values are not clipped.

    Example:
      >>> import numpy as np
      >>> t = np.full((32, 32, 3), 100.0, np.float32); s = t + 50.0
      >>> m = np.zeros((32, 32), np.float32); m[8:24, 8:24] = 1
      >>> out = poisson_solve(t, s, m)  # a constant offset in the source is removed
      >>> bool(np.allclose(out, 100.0, atol=1e-2))
      True
    """
    _check_mode(mode)
    if not isinstance(mask, jax.core.Tracer) and _no_boundary(mask):
        raise InputError("mask covers the whole canvas, so there is no boundary to blend into")
    out, _, _ = _solve_batched(target, source, mask, tol, mode, maxiter)
    return out


def _solve_batched(target, source, mask, tol, mode, maxiter):
    """Dispatch to the jitted solver, vmapping over any leading job axes."""
    target = jnp.asarray(target)
    source = jnp.asarray(source)
    mask = jnp.asarray(mask)
    fn = partial(_solve, mode=mode, maxiter=maxiter)
    for _ in range(mask.ndim - 2):
        fn = jax.vmap(fn, in_axes=(0, 0, 0, None))
    return fn(target, source, mask, jnp.asarray(tol, jnp.float32))


def solve_window(mask: np.ndarray, bucket: int = _BUCKET) -> tuple[slice, slice]:
    """The rows/cols of the canvas that :func:`poisson_blend` solves on.

    The mask's bounding box plus a 1-pixel ring (the Dirichlet boundary), grown to a
    multiple of ``bucket`` pixels (so nearby sizes share one compiled solver) and kept
    inside the canvas. Every unknown's neighbours lie in the window, and where the window
    meets its own edge that edge is the canvas edge, so the cropped system is identical.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    out = []
    for idx, n in ((rows, mask.shape[0]), (cols, mask.shape[1])):
        lo, hi = max(int(idx[0]) - 1, 0), min(int(idx[-1]) + 2, n)
        size = min(-(-(hi - lo) // bucket) * bucket, n)
        lo = max(min(lo - (size - (hi - lo)) // 2, n - size), 0)
        out.append(slice(lo, lo + size))
    return out[0], out[1]


def poisson_blend(
    source: io.ImageLike,
    target: io.ImageLike,
    mask: io.ImageLike,
    *,
    center: tuple[int, int] | None = None,
    canvas: int | None = 512,
    source_size: int | None = None,
    mode: Mode = "normal",
    tol: float = DEFAULT_TOL,
    maxiter: int = DEFAULT_MAXITER,
) -> np.ndarray:
    """Poisson image editing of one job: place the source on the canvas and solve.

    Placement follows :func:`jaxblend.io.place` (the same rules as the deep blend). The
    equation is the one of :func:`poisson_solve`, solved on the mask's bounding box only.

    Args:
      source, target, mask: paths, PIL images or arrays.
      center, canvas, source_size: see :func:`jaxblend.io.place`.
      mode: ``"normal"`` (seamless cloning) or ``"mixed"`` (mixed gradients).
      tol, maxiter: see :func:`poisson_solve`.

    Returns:
      ``H x W x 3`` float32 canvas, clipped to ``[0, 255]``.

    Raises:
      InputError: a bad mode, bad inputs or placement (see :func:`jaxblend.io.place`), or a
        mask without any target pixel around it.

    References:
      P. Pérez, M. Gangnet, A. Blake, "Poisson Image Editing", SIGGRAPH 2003.
    """
    _check_mode(mode)
    job = io.place(source, target, mask, center=center, canvas=canvas, source_size=source_size)
    return blend_job(job, mode=mode, tol=tol, maxiter=maxiter)


def blend_job(
    job: io.Job, *, mode: Mode = "normal", tol: float = DEFAULT_TOL, maxiter: int = DEFAULT_MAXITER
) -> np.ndarray:
    """:func:`poisson_blend` for a job already laid out by :func:`jaxblend.io.place`.

    Solves on :func:`solve_window` of the canvas only and pastes the result into the
    target. Returns ``H x W x 3`` float32 clipped to ``[0, 255]``.
    """
    _check_mode(mode)
    if _no_boundary(job.mask):
        raise InputError("mask covers the whole canvas, so there is no boundary to blend into")
    rs, cs = solve_window(job.mask)
    out = _solve_clipped(
        job.target[rs, cs], job.source[rs, cs], job.mask[rs, cs], tol, mode=mode, maxiter=maxiter
    )
    result = np.array(job.target, np.float32)
    if result.min() < 0.0 or result.max() > 255.0:
        np.clip(result, 0.0, 255.0, out=result)
    result[rs, cs] = np.asarray(out)
    return result


@partial(jax.jit, static_argnames=("mode", "maxiter"))
def _solve_clipped(target, source, mask, tol, mode: str, maxiter: int) -> jax.Array:
    """:func:`_solve` of one window, clipped to ``[0, 255]`` in the same program."""
    out, _, _ = _solve(target, source, mask, jnp.asarray(tol, jnp.float32), mode, maxiter)
    return jnp.clip(out, 0.0, 255.0)
