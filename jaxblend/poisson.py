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
smoothing, one sweep each way on the finest level and two on the coarser ones, bilinear
cell-centred prolongation, restriction = its transpose, coarse masks = cells whose four
children are all unknowns, dense solve on the coarsest grid). CG iterates on the correction
to the pasted source shifted per channel by the mean target - source step across the mask's
boundary, so float32 round-off stays relative to the correction, not to 0-255 values. It
stops on a relative residual, so the result is the exact discrete solution up to ``tol``;
5-6 iterations reach the default for the masks measured (64 to 1024 pixels). Each colour
channel is its own 2-D ``lax.while_loop`` with static shapes, so :func:`poisson_solve` is
jit-able and takes a stack of jobs of one canvas shape (leading axes) in one loop, each job
stopping on its own residual (so its result does not depend on its stack mates).
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
    if not isinstance(mode, str) or mode not in MODES:
        raise InputError(f"mode must be 'normal' or 'mixed', got {mode!r}")
    return mode


def _check_solver(tol: object, maxiter: object) -> None:
    """Refuse a tolerance outside (0, 1) or a cap on iterations that is not a positive
    integer (a traced ``tol``, under ``jax.jit``, is not checked)."""
    if not isinstance(tol, jax.core.Tracer):
        try:
            t = float(np.asarray(tol))
        except (TypeError, ValueError):
            t = float("nan")
        if not 0 < t < 1:  # NaN fails too; tol >= 1 would return the unsolved start
            raise InputError(
                f"tol is the relative residual at which the solve stops and must be in (0, 1), "
                f"got {tol!r}; the default is {DEFAULT_TOL:g}"
            )
    if isinstance(maxiter, bool) or not isinstance(maxiter, (int, np.integer)):
        raise InputError(f"maxiter must be a positive integer, got {maxiter!r}")
    if not 1 <= int(maxiter) <= 100_000:
        raise InputError(
            f"maxiter must be in 1..100000, got {maxiter}; the default is {DEFAULT_MAXITER}"
        )


def _check_screen(screen: object) -> None:
    """Refuse a screening weight that is not a finite number (or array) >= 0."""
    if isinstance(screen, (bool, str)):
        v = np.array(np.nan)
    else:
        try:
            v = np.asarray(screen, np.float64)
        except (TypeError, ValueError):
            v = np.array(np.nan)
    if v.size == 0 or not np.all(np.isfinite(v)) or np.any(v < 0):
        raise InputError(f"screen must be a finite number >= 0 (in 1/px²), got {screen!r}")


def _check_shapes(target: ArrayLike, source: ArrayLike, mask: ArrayLike) -> None:
    """Canvas shapes: ``... x H x W x 3`` images and an ``... x H x W`` mask, all alike."""
    t, s, m = (np.shape(a) for a in (target, source, mask))
    if len(t) < 3 or t[-1] != 3 or s != t or m != t[:-1]:
        raise InputError(
            f"poisson_solve needs target and source of shape ... x H x W x 3 and a mask of "
            f"... x H x W, got target {t}, source {s}, mask {m}"
        )


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
# One colour channel at a time: ``(..., H, W)`` arrays (leading axes: a stack of jobs).


def _grid(h: int, w: int) -> tuple[jax.Array, jax.Array]:
    """``|N_p|`` (in-grid neighbour count) and the red mask ``(i + j)`` even, from iotas:
    XLA computes them where they are used instead of reading constant arrays."""
    i = jax.lax.broadcasted_iota(jnp.int32, (h, w), 0)
    j = jax.lax.broadcasted_iota(jnp.int32, (h, w), 1)
    deg = 4 - (i == 0).astype(jnp.int32) - (i == h - 1) - (j == 0) - (j == w - 1)
    return deg.astype(jnp.float32), (i + j) % 2 == 0


def _coarsen(mask: jax.Array) -> jax.Array:
    """Coarse unknowns: cells whose four children are all unknowns (odd sizes padded)."""
    h, w = mask.shape[-2:]
    pad = [(0, 0)] * (mask.ndim - 2) + [(0, h % 2), (0, w % 2)]
    m = jnp.pad(mask, pad)
    hc, wc = (h + 1) // 2, (w + 1) // 2
    return m.reshape(m.shape[:-2] + (hc, 2, wc, 2)).min(axis=(-3, -1))


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
    """Exact transpose of :func:`_prolong_axis`, written out by even/odd pairs: ``c_i =
    0.75 (f_2i + f_2i+1) + 0.25 (f_2i-1 + f_2i+2)``, the edge cells taking their replicated
    neighbour's share. (XLA's autodiff transpose of the prolongation fuses into a V-cycle
    about 3x slower on CPU.) The pairs are a reshape, so rows need no transpose."""
    axis = axis % f.ndim
    n = f.shape[axis]
    pad = [(0, 0)] * f.ndim
    pad[axis] = (0, 2 * nc - n)
    pairs = jnp.pad(f, pad).reshape(f.shape[:axis] + (nc, 2) + f.shape[axis + 1 :])
    fe = jax.lax.index_in_dim(pairs, 0, axis + 1, keepdims=False)
    fo = jax.lax.index_in_dim(pairs, 1, axis + 1, keepdims=False)

    def piece(a: jax.Array, lo: int, hi: int) -> jax.Array:
        return jax.lax.slice_in_dim(a, lo, hi, axis=axis)

    zero = jnp.zeros_like(piece(fe, 0, 1))
    c = 0.75 * (fe + fo)
    c = c + 0.25 * jnp.concatenate([piece(fe, 1, nc), zero], axis=axis)  # f[2i+2]
    c = c + 0.25 * jnp.concatenate([zero, piece(fo, 0, nc - 1)], axis=axis)  # f[2i-1]
    first = jax.lax.broadcasted_iota(jnp.int32, c.shape, axis) == 0
    last = jax.lax.broadcasted_iota(jnp.int32, c.shape, axis) == nc - 1
    # Replicated edges: cell 0 also receives f[0] (its own "previous"), the last f[2nc-1].
    edge = jnp.where(first, jnp.broadcast_to(piece(fe, 0, 1), c.shape), 0.0) + jnp.where(
        last, jnp.broadcast_to(piece(fo, nc - 1, nc), c.shape), 0.0
    )
    return c + 0.25 * edge


def _restrict(f: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """The 2-D restriction ``P^T``; :func:`_vcycle` applies the same two passes (rows, then
    columns) with the intermediate written out."""
    return _restrict_axis(_restrict_axis(f, shape[0], -2), shape[1], -1)


def _hierarchy(mask: jax.Array) -> list[jax.Array]:
    """The unknowns of every level, finest first, down to at most ``_COARSEST`` cells a side."""
    masks = [mask]
    while max(mask.shape[-2:]) > _COARSEST:
        mask = _coarsen(mask)
        masks.append(mask)
    return masks


def _coarse_inverse(mask: jax.Array) -> jax.Array:
    """Dense inverse of the coarsest operator (identity on non-unknowns)."""
    h, w = mask.shape[-2:]
    idx = np.arange(h * w).reshape(h, w)
    adj = np.zeros((h * w, h * w), np.float32)  # grid adjacency: a NumPy literal
    for a, c in ((idx[:, :-1], idx[:, 1:]), (idx[:-1, :], idx[1:, :])):
        adj[a.ravel(), c.ravel()] = adj[c.ravel(), a.ravel()] = 1.0
    deg, _ = _grid(h, w)
    m = mask.reshape(mask.shape[:-2] + (h * w,))
    diag = m * deg.reshape(-1) + (1.0 - m)
    mat = diag[..., :, None] * np.eye(h * w, dtype=np.float32) - (
        m[..., :, None] * adj * m[..., None, :]
    )
    return jnp.linalg.inv(mat)


# Every vector of the V-cycle and of CG is stored "ghosted": ``(h + 2) x (w + 2)`` with a
# ring of zeros, so a stencil reads its neighbours as plain slices. Stencil results are
# written into the interior of a scratch buffer whose old contents are dead
# (``buf.at[1:-1, 1:-1].set(x)``); XLA then updates the buffer in place with a vectorised
# loop. Both matter on CPU: a fusion that pads its output (``jnp.pad`` of the result, the
# obvious way to keep shapes) compiled to scalar code, and the in-place writes also keep
# XLA from fusing a whole chain of stencils into one loop that recomputes every link
# (measured at 544 x 672: 0.24 ms per Gauss-Seidel half-sweep against 0.83 ms padded).
_IN = (Ellipsis, slice(1, -1), slice(1, -1))


def _ghost(x: jax.Array) -> jax.Array:
    return jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)])


def _put(buf: jax.Array, x: jax.Array) -> jax.Array:
    """``buf`` with its interior replaced by ``x`` (in place when ``buf`` is dead)."""
    return buf.at[_IN].set(x)


def _nsum(u: jax.Array) -> jax.Array:
    """Sum of the 4 neighbours at the interior of a ghosted array."""
    return u[..., :-2, 1:-1] + u[..., 2:, 1:-1] + u[..., 1:-1, :-2] + u[..., 1:-1, 2:]


class _Scratch(NamedTuple):
    """One level's buffers: ``u``, ``v`` (ghosted, the smoother's ping-pong pair), ``r``
    (ghosted right-hand side, written by the finer level) and ``mid`` (ghosted,
    ``h_coarse x w`` inside: the half-way stage of restriction and of prolongation)."""

    u: jax.Array
    v: jax.Array
    r: jax.Array
    mid: jax.Array


def _scratch(masks: list[jax.Array]) -> tuple[_Scratch, ...]:
    out = []
    for i, m in enumerate(masks):
        z = jnp.zeros(m.shape, jnp.float32)
        below = masks[i + 1] if i + 1 < len(masks) else m
        mid = jnp.zeros(m.shape[:-2] + (below.shape[-2], m.shape[-1]), jnp.float32)
        out.append(_Scratch(z, z, z, mid))
    return tuple(out)


def _vcycle(
    masks: list[jax.Array], inv: jax.Array, r: jax.Array, bufs: tuple[_Scratch, ...], i: int = 0
) -> tuple[jax.Array, tuple[_Scratch, ...]]:
    """One symmetric V-cycle approximating ``A^-1 r`` (``r`` ghosted, zero off the
    unknowns); returns ``z`` (ghosted, one of level ``i``'s buffers) and the buffers.

    Red-black Gauss-Seidel: one sweep before and one after the coarse correction on the
    finest level, two on every coarser one (their masks are cruder, so the cheap extra
    sweeps there cut the CG iterations from 7 to 5-6 on a 1024-pixel canvas).
    """
    m = masks[i]
    h, w = m.shape[-2] - 2, m.shape[-1] - 2
    b = bufs[i]
    m_in, r_in = m[_IN], r[_IN]
    if i == len(masks) - 1:
        flat = r_in.reshape(r_in.shape[:-2] + (h * w,))
        z = jnp.where(m_in, jnp.einsum("...ij,...j->...i", inv, flat).reshape(r_in.shape), 0.0)
        u = _put(b.u, z)
        return u, bufs[:i] + (b._replace(u=u),) + bufs[i + 1 :]
    deg, red = _grid(h, w)
    sweeps = 1 if i == 0 else 2

    def half(dst: jax.Array, src: jax.Array, colour: jax.Array) -> jax.Array:
        new = jnp.where(m_in, (r_in + _nsum(src)) / deg, 0.0)
        return _put(dst, jnp.where(colour, new, src[_IN]))

    # First sweep from u = 0: the red half needs no neighbours, the black half reads it.
    v = _put(b.v, jnp.where(red, r_in / deg, 0.0))
    u = half(b.u, v, ~red)
    for _ in range(sweeps - 1):
        v = half(v, u, red)
        u = half(u, v, ~red)
    # Residual (into v, free now), then restriction rows first (contiguous pairs), columns
    # on the half-height data; each stage is written out, so XLA cannot fuse the three.
    v = _put(v, jnp.where(m_in, r_in - deg * u[_IN] + _nsum(u), 0.0))
    coarse = masks[i + 1]
    hc, wc = coarse.shape[-2] - 2, coarse.shape[-1] - 2
    mid = _put(b.mid, _restrict_axis(v[_IN], hc, -2))
    rc = _put(bufs[i + 1].r, jnp.where(coarse[_IN], _restrict_axis(mid[_IN], wc, -1), 0.0))
    bufs = bufs[:i] + (b._replace(mid=mid),) + bufs[i + 1 :]
    bufs = bufs[: i + 1] + (bufs[i + 1]._replace(r=rc),) + bufs[i + 2 :]
    ec, bufs = _vcycle(masks, inv, rc, bufs, i + 1)
    # Prolongation: columns on the coarse rows (the interleaving part, on half the data),
    # then rows, fused with the correction of u.
    mid = _put(bufs[i].mid, _prolong_axis(ec[_IN], w, ec.ndim - 1))
    v = _put(v, u[_IN] + jnp.where(m_in, _prolong_axis(mid[_IN], h, mid.ndim - 2), 0.0))
    for _ in range(sweeps):
        u = half(u, v, ~red)
        v = half(v, u, red)
    return v, bufs[:i] + (_Scratch(u, v, bufs[i].r, mid),) + bufs[i + 1 :]


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
    deg, _ = _grid(*m.shape[-2:])
    return jnp.moveaxis(b, -3, -1), deg


def _solve_channel(
    f: jax.Array,
    g: jax.Array,
    masks: list[jax.Array],
    inv: jax.Array,
    ring: jax.Array,
    tol: jax.Array,
    mode: str,
    maxiter: int,
    screen: jax.Array | float = 0.0,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One colour channel (``H x W``): the solution on the mask, iterations, relative residual.

    ``screen`` (``λ`` of :func:`poisson_solve`, broadcast against the leading axes) adds
    ``λ f_p`` to the operator and ``λ g_p`` to the right-hand side; the V-cycle still
    inverts the unscreened operator, which bounds the screened one from below, so it stays
    a good preconditioner.

    ``masks`` are the levels' unknowns, ghosted. The unknowns are written
    ``x = m * (g + s) + e``: the pasted source shifted by ``s``, the mean target - source
    step across the mask's boundary, plus a correction ``e`` that conjugate gradients find
    from ``e = 0``. Solving for the correction keeps float32 round-off relative to it rather
    than to the 0-255 pixel values (a tight solve then agrees with a float64 direct solve to
    within 0.002 grey level, as the tests check; the old form stopped near 0.1).
    """
    mg = masks[0]
    m = mg[_IN]
    deg, _ = _grid(*m.shape[-2:])
    lam = jnp.asarray(screen, jnp.float32)
    lam = lam.reshape(lam.shape + (1, 1)) if lam.ndim else lam
    out = 1.0 - m
    s = jnp.sum(ring * (f - g), axis=(-2, -1), keepdims=True) / jnp.maximum(
        jnp.sum(ring, axis=(-2, -1), keepdims=True), 1.0
    )
    # b = m * (div v + sum of target neighbours outside the mask).
    if mode == "normal":  # div v = deg * g - sum of the neighbours of g
        zero = jnp.zeros_like(mg)
        fg, gg, og = _put(zero, f), _put(zero, g), _put(zero, out)  # ghosted, zero rings
        b = m * (deg * g - _nsum(gg) + _nsum(og * fg) + lam * g)
        # b - A(m * (g + s)) simplifies to the step across the boundary, summed over the
        # outside neighbours: m * sum_q (1 - m_q) * (f_q - g_q - s), less lam * s.
        r0 = m * (_nsum(og * (fg - gg - s)) - lam * s)
    else:
        b = m * (_guidance_divergence(f, g, mode) + _neighbour_sum(out * f) + lam * g)
        x0 = m * (g + s)
        r0 = b - m * ((deg + lam) * x0 - _neighbour_sum(x0))

    def dot(a: jax.Array, c: jax.Array) -> jax.Array:
        return jnp.sum(a * c, axis=(-2, -1), keepdims=True)

    on = [x > 0 for x in masks]  # boolean masks in the loop: a quarter of the bytes
    bn2 = jnp.maximum(dot(b, b), 1e-30)
    thresh = tol * tol * bn2
    stacked = f.ndim > 2  # leading axes: a stack of jobs sharing the loop

    # The preconditioner is applied at the top of the body (beta = 0 on the first pass),
    # so the mask hierarchy, computed outside, enters the loop materialised. e, r, p are
    # ghosted; elementwise updates keep their zero rings.
    def body(state):
        e0, r0_, p0, rz_old, k, rr_old, bufs = state
        z, bufs = _vcycle(on, inv, r0_, bufs)
        rz = dot(r0_, z)
        beta = jnp.where(rz_old > 0, rz / jnp.where(rz_old > 0, rz_old, 1.0), 0.0)
        p = z + beta * p0
        ap = _put(bufs[0].u, jnp.where(on[0][_IN], (deg + lam) * p[_IN] - _nsum(p), 0.0))
        pap = dot(p, ap)
        alpha = jnp.where(pap > 0, rz / jnp.where(pap > 0, pap, 1.0), 0.0)
        r = r0_ - alpha * ap
        bufs = (bufs[0]._replace(u=ap),) + bufs[1:]
        e, rr = e0 + alpha * p, dot(r, r)
        if stacked:  # a job that has reached tol keeps its state: it stops on its own
            go = rr_old > thresh  # residual, as it would alone, whatever its stack mates do
            e, r, p = (jnp.where(go, a, b_) for a, b_ in ((e, e0), (r, r0_), (p, p0)))
            rz, rr = jnp.where(go, rz, rz_old), jnp.where(go, rr, rr_old)
        return e, r, p, rz, k + 1, rr, bufs

    def cond(state):
        return (state[4] < maxiter) & jnp.any(state[5] > thresh)

    r0 = _ghost(r0)
    zero = jnp.zeros_like(r0)
    init = (zero, r0, zero, jnp.zeros_like(bn2), jnp.asarray(0), dot(r0, r0), _scratch(on))
    e, _, _, _, k, rr, _ = jax.lax.while_loop(cond, body, init)
    return m * (g + s) + e[_IN], k, jnp.sqrt(rr / bn2)


@partial(jax.jit, static_argnames=("mode", "maxiter"))
def _solve(
    target: jax.Array,
    source: jax.Array,
    mask: jax.Array,
    tol: jax.Array,
    mode: str,
    maxiter: int,
    screen: jax.Array | float = 0.0,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The jitted solve of one job: ``(solution canvas, most CG iterations of a channel,
    largest relative residual of a channel)``.

    Each colour channel is its own 2-D problem with its own ``while_loop``, run one after
    the other: XLA splits each one's 2-D stencils evenly over the CPU's threads, which a
    channels-first 3-D array of 3 rows would not allow. The ``H x W`` grids (``|N_p|``,
    the red cells) broadcast over a stack's leading axes, also under strict rank promotion.
    """
    with jax.numpy_rank_promotion("allow"):
        return _solve_body(target, source, mask, tol, mode, maxiter, screen)


def _solve_body(target, source, mask, tol, mode, maxiter, screen=0.0):
    target = target.astype(jnp.float32)
    source = source.astype(jnp.float32)
    m = (mask > 0).astype(jnp.float32)
    levels = _hierarchy(m)
    inv = _coarse_inverse(levels[-1])
    masks = [_ghost(x) for x in levels]
    ring = (1.0 - m) * jnp.minimum(_nsum(masks[0]), 1.0)  # target pixels next to the mask
    parts = [
        _solve_channel(target[..., c], source[..., c], masks, inv, ring, tol, mode, maxiter, screen)
        for c in range(target.shape[-1])
    ]
    x = jnp.stack([p[0] for p in parts], axis=-1)
    out = jnp.where(mask[..., None] > 0, x, target)
    iters = jnp.max(jnp.stack([p[1] for p in parts]))
    rel = jnp.max(jnp.stack([jnp.max(p[2]) for p in parts]))
    return out, iters, rel


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
    screen: ArrayLike = 0.0,
) -> jax.Array:
    """Solve the Poisson image-editing equation on the whole canvas.

    .. math::

        |N_p| f_p - \\sum_{q \\in N_p \\cap \\Omega} f_q
          = \\sum_{q \\in N_p \\cap \\partial\\Omega} f^*_q + \\sum_{q \\in N_p} v_{pq},
        \\qquad p \\in \\Omega

    (Pérez et al. 2003, Eq. 7; see the module docstring for :math:`v_{pq}`), by multigrid-
    preconditioned conjugate gradients, to ``||b - A f|| <= tol * ||b||`` per channel.

    Pure array function: jit it (``mode`` and ``maxiter`` static). For many jobs of one
    canvas shape, pass them stacked (leading axes): they share one loop, and each job stops
    on its own residual (a job that has reached ``tol`` keeps its iterate while the others
    go on), so a job's result does not depend on its stack mates (``jax.vmap`` works too,
    but is slower: it selects between old and new values of every loop buffer, the scratch
    of the V-cycle included, at every step). It solves on the full
    canvas; for one job :func:`poisson_blend` is faster (it crops to the mask's bounding
    box).

    Args:
      target: ``... x H x W x 3`` float canvas :math:`f^*` (0-255).
      source: ``... x H x W x 3`` float canvas :math:`g` (the source pasted on the canvas;
        only its values on the mask and its 1-pixel ring matter).
      mask: ``... x H x W``, nonzero inside :math:`\\Omega`. At least one pixel must be outside
        the mask (otherwise there is no boundary and the system is singular; concrete
        inputs raise :class:`InputError`, traced ones give an undefined result).
      mode: ``"normal"`` (source gradients) or ``"mixed"`` (per pair the larger of the
        source and target differences).
      tol: relative residual ``||b - A f|| / ||b||`` (per channel) at which CG stops. The
        default ``1e-4`` leaves at most 0.08 grey level against a float64 direct solve on
        the cases of ``tests/test_poisson.py`` and ``bench/poisson.py`` (requirement: 0.5);
        ``1e-7`` comes within 0.002 of it (``tests/test_poisson.py``).
      maxiter: cap on CG iterations (5-6 reach the default tolerance).
      screen: ``λ >= 0`` (1/px², a number or one per job of a stack): the *screened*
        Poisson equation (Bhat et al. 2008), ``(|N_p| + λ) f_p - Σ_{q∈N_p∩Ω} f_q = … +
        λ g_p``, the minimiser of the gradient error plus ``λ ‖f − g‖²`` on the mask. The
        correction to the pasted source then fades with the distance from the mask's edge
        over ``1/√λ`` px instead of filling the whole mask: the seam is as seamless, but
        the object's interior keeps its own colours (Poisson pulls a dark object on a light
        scene towards the scene's brightness). ``0`` is Pérez's equation.

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
    _check_solver(tol, maxiter)
    _check_shapes(target, source, mask)
    if not isinstance(mask, jax.core.Tracer) and _no_boundary(mask):
        raise InputError("mask covers the whole canvas, so there is no boundary to blend into")
    if not isinstance(screen, jax.core.Tracer):
        _check_screen(screen)
    out, _, _ = _solve_batched(target, source, mask, tol, mode, maxiter, screen)
    return out


def _solve_batched(target, source, mask, tol, mode, maxiter, screen=0.0):
    """The jitted solver on one job or on a stack (leading axes): one loop for the stack.

    The solver broadcasts over leading axes itself; the loop runs while any job is above
    its tolerance, and a job already below it keeps its CG state (a select on three
    buffers), so it stops where it would alone. Under ``jax.vmap`` instead, JAX selects
    between old and new values of every loop buffer at every step, the V-cycle's scratch
    included (16 jobs at 512²: 1.74 s against 1.48 s with one stop for the whole stack).
    """
    target = jnp.asarray(target)
    source = jnp.asarray(source)
    mask = jnp.asarray(mask)
    tol = jnp.asarray(tol, jnp.float32)
    return _solve(target, source, mask, tol, mode, maxiter, jnp.asarray(screen, jnp.float32))


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
    mask: io.ImageLike | None = None,
    *,
    center: tuple[int, int] | None = None,
    canvas: int | None = 512,
    source_size: int | None = None,
    mode: Mode = "normal",
    tol: float = DEFAULT_TOL,
    maxiter: int = DEFAULT_MAXITER,
    value_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """Poisson image editing of one job: place the source on the canvas and solve.

    Placement follows :func:`jaxblend.io.place` (the same rules as the deep blend). The
    equation is the one of :func:`poisson_solve`, solved on the mask's bounding box only.

    Args:
      source, target, mask: paths, PIL images or arrays; ``mask=None`` takes the source's
        alpha channel (an RGBA cutout).
      center, canvas, source_size: see :func:`jaxblend.io.place`.
      mode: ``"normal"`` (seamless cloning) or ``"mixed"`` (mixed gradients).
      tol, maxiter: see :func:`poisson_solve`.
      value_range: the scale of image arrays, e.g. ``(0, 1)`` (see
        :func:`jaxblend.io.place`); the result is 0–255 whatever it is.

    Returns:
      ``H x W x 3`` float32 canvas, clipped to ``[0, 255]``.

    Raises:
      InputError: a bad mode, bad inputs or placement (see :func:`jaxblend.io.place`), or a
        mask without any target pixel around it.

    References:
      P. Pérez, M. Gangnet, A. Blake, "Poisson Image Editing", SIGGRAPH 2003.
    """
    _check_mode(mode)
    _check_solver(tol, maxiter)
    job = io.place(
        source, target, mask, center=center, canvas=canvas, source_size=source_size,
        value_range=value_range,
    )  # fmt: skip
    return blend_job(job, mode=mode, tol=tol, maxiter=maxiter)


def blend_job(
    job: io.Job,
    *,
    mode: Mode = "normal",
    tol: float = DEFAULT_TOL,
    maxiter: int = DEFAULT_MAXITER,
    screen: float = 0.0,
) -> np.ndarray:
    """:func:`poisson_blend` for a job already laid out by :func:`jaxblend.io.place`
    (``screen``: see :func:`poisson_solve`).

    Solves on :func:`solve_window` of the canvas only and pastes the result into the
    target. Returns ``H x W x 3`` float32 clipped to ``[0, 255]``.
    """
    _check_mode(mode)
    _check_solver(tol, maxiter)
    _check_screen(screen)
    if _no_boundary(job.mask):
        raise InputError("mask covers the whole canvas, so there is no boundary to blend into")
    rs, cs = solve_window(job.mask)
    out = _solve_clipped(
        job.target[rs, cs], job.source[rs, cs], job.mask[rs, cs], tol, mode=mode,
        maxiter=maxiter, screen=screen,
    )  # fmt: skip
    result = np.clip(job.target, 0.0, 255.0, dtype=np.float32)  # one pass: copy and clip
    result[rs, cs] = np.asarray(out)
    return result


@partial(jax.jit, static_argnames=("mode", "maxiter"))
def _solve_clipped(target, source, mask, tol, mode: str, maxiter: int, screen=0.0) -> jax.Array:
    """:func:`_solve` of one window, clipped to ``[0, 255]`` in the same program."""
    tol = jnp.asarray(tol, jnp.float32)
    out, _, _ = _solve(target, source, mask, tol, mode, maxiter, jnp.asarray(screen, jnp.float32))
    return jnp.clip(out, 0.0, 255.0)
