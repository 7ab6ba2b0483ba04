"""Exact windowed objective for stages that change the pixels inside the mask only.

In a ``region="mask"`` stage the blend ``I_B = I_Z ⊙ M + I_T ⊙ (1 − M)`` equals the target
outside the mask's bounding box ``B``, so a VGG feature ``F_l[I_B](j)`` can differ from the
target's ``F_l[I_T](j)`` only where the layer's receptive field touches ``B``. One objective
evaluation therefore needs VGG on a *window* around the box, not on the whole canvas: for a
200-px object on a 1024² canvas the window is 448², a fifth of the pixels.

Geometry (per axis; canvas length ``N``, box ``[b₀, b₁)``). For a layer of stride ``s`` the
feature at position ``j`` reads the input pixels ``RF(j) = [s·j − lo, s·j + hi]``
(:func:`receptive_field`; VGG16's ``relu4_3``: ``s = 8``, ``lo = 42``, ``hi = 49``, 92 px).
With ``m = max_l (lo_l + hi_l)`` over the layers used and ``S`` the largest stride, the
window is ``[o, o + L)`` with

    ``o = min(S·⌊max(b₀ − m, 0)/S⌋, S·⌈max(N − L, 0)/S⌉)``,  ``L ≥ (b₁ − b₀) + 2m + S − 1``,

``L`` a multiple of ``S`` rounded up to a bucket (:func:`plan`). ``o`` is a multiple of
``S``, so every pooled grid of the window is a sub-grid of the canvas's, and the window
never starts before the canvas: either ``o ≤ b₀ − m`` or ``o = 0``, and either
``o + L ≥ b₁ + m`` or ``o + L ≥ N`` (the window may run up to ``S − 1`` px past the end).

The window's network (:func:`window_features`) zeroes every activation outside the canvas
before each convolution, which is what the canvas's own zero padding does, so a feature is
computed exactly whenever ``RF(j) ∩ [0, N) ⊆ [o, o + L)``; no padding is invented inside
the canvas. That *valid set* ``R_l`` (:func:`valid`) contains every position whose
receptive field touches the box (``s·j − lo ≥ b₀ − m`` and ``s·j + hi ≤ b₁ − 1 + m``), so
outside ``R_l`` the features are the target's, computed once per job. With ``n_l = h_l w_l
c_l`` the full canvas's element count of layer ``l``:

* Gram (Eq. 8, ``FᵀF / n_l``): ``G_l[I_B] − G_l[I_T] = (Σ_{p∈R_l} f_p f_pᵀ − Σ_{p∈R_l}
  t_p t_pᵀ) / n_l`` with ``f`` the blend's and ``t`` the target's window features: the
  target's full-canvas Gram minus its sum over ``R_l`` plus the blend's;
* object Gram (``style_object``): ``(Σ_{p∉R_l} w_p t_p t_pᵀ + Σ_{p∈R_l} w_p f_p f_pᵀ) /
  (c_l Σ_p w_p)``, the first sum once per job;
* content (Eq. 7/9): ``mean((F ⊙ M_l − F_ref ⊙ M_l)²) = (Σ_{p∉R_l} ‖(t_p − r_p) M_l‖² +
  Σ_{p∈R_l} ‖(f_p − r_p) M_l‖²) / n_l``, the first sum once per job.

The pixel terms split the same way over ``R_0``, the window's pixels whose 3 x 3
neighbourhood is in it (:func:`pixel_terms`): the gradient term (Eq. 6, with its band
weights and either operator), TV (Eq. 12) and the range penalty, so an evaluation touches
the full canvas only to crop the iterate and to scatter the gradient back.

Bounded ``region="image"`` stages (``StageConfig.reach > 0``, the default stage 2) split
the same way with the mask's box replaced by the rectangle ``R`` of pixels the stage may
change (:func:`changed_box`: the box grown by ``g = ⌊reach·ℓ + ½⌋`` px, ``ℓ`` its long
side, clipped to the canvas): the stage's image is ``I = W ⊙ x + (1 − W) ⊙ I_T`` with ``W``
(:func:`region_weight`) 1 on the box, 0 outside ``R`` and a smoothstep ramp over ``R``'s
last ``min(16, g)`` px, so outside ``R`` it is the target — exactly what the window treats
as constant — and the same sums hold with ``R_l`` now every position whose receptive field
touches ``R``. The content term stays on the object (``M_l``, zero outside ``R_l``), the
seam band on the object mask's edge.

The masked content term needs nothing outside ``R_l``: ``M_l(j) > 0`` only where a mask
pixel lies in ``[s·j, s·j + s)``, inside ``RF(j)``, so ``j ∈ R_l``. The target's Gram
matrices themselves are computed tile by tile (:func:`canvas_grams`), so a prepare never
holds a full-canvas feature map either (except for the unmasked content term and the
``style_object`` match, which read the target's features everywhere); its pixel sums over
the canvas run strip by strip (:func:`strip_sum`) and windows are gathered, not sliced
from a padded copy (:func:`crop`), so it holds no full-canvas temporaries beyond its
inputs (at 4096 x 3072: 2.4 GB of temporaries in stage 1's prepare instead of 4.3 GB).

Terms that cannot be split this way fall back to the full objective, automatically
(:func:`plan` returns ``None``): the histogram term (each value's rank among *all* the
layer's positions changes, so it needs the whole feature map), the
``style_image="iterate"`` style term (the iterate changes everywhere) and unbounded
``region="image"`` stages (``reach=0``: every pixel changes).

Shapes are static, so ``L`` is rounded up to a bucket (a multiple of 64 px): jobs whose
boxes fall in the same bucket — any positions — share one compiled program, and a stack of
jobs under ``jax.vmap`` uses the bucket of its largest box (the origin is per job, traced).
Everything here takes one job; ``jax.vmap`` batches.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxblend import losses
from jaxblend.config import StageConfig
from jaxblend.vgg import LAYERS, conv3x3, max_pool2, preprocess

#: Window sides are rounded up to a multiple of this many pixels (and of the stride).
BUCKET = 64
#: The window is used only when its area is below this share of the canvas's.
MAX_FRACTION = 0.6
#: Width (px) of the ramp at the edge of a bounded ``region="image"`` stage's rectangle.
RAMP = 16
#: Side (px) of the tiles :func:`canvas_grams` computes a large canvas's Grams on.
TILE = 1024


class Geometry(NamedTuple):
    """Static shape of a window (hashable: part of the compiled program's key).

    Attributes:
      size: ``(L_y, L_x)``, the window's sides in pixels, multiples of ``stride``.
      stride: ``S``, the largest stride of the layers used; the origin is a multiple.
      margin: ``m``, how far past the box (px) the receptive fields reach.
    """

    size: tuple[int, int]
    stride: int
    margin: int


class WindowData(NamedTuple):
    """Per-job window constants (arguments of the compiled program; see :func:`prepare`)."""

    origin: jax.Array  # int32 (2,): the window's top-left pixel on the canvas
    target: jax.Array  # L_y x L_x x 3: the target's window (edge-replicated past the canvas)
    mask: jax.Array  # L_y x L_x: the stage's pixel weight W (region_weight; edge-replicated)
    pixels: jax.Array  # L_y x L_x: 1 on R_0, the pixels whose pixel terms the window computes
    guide: jax.Array  # the guidance field's window (edge-replicated)
    grad_weight: jax.Array  # L_y x L_x: the gradient term's pixel weight ⊙ 1_{R_0}
    grad_out: jax.Array  # Σ_{p∉R_0} w_p ‖D(I_T)(p) − guide(p)‖²
    grad_norm: jax.Array  # the gradient term's denominator (H·W·C, or max(Σw, 1)·C)
    tv_out: jax.Array  # Σ_{p∉R_0} |I_T(p + e_y) − I_T(p)| + |I_T(p + e_x) − I_T(p)|
    range_out: jax.Array  # Σ_{p∉R_0} relu(−I_T)² + relu(I_T − 255)²
    region: dict  # layer -> h x w (window grid) 1 on R_l, 0 elsewhere
    gram_in: dict  # style layer -> Σ_{p∈R_l} t_p t_pᵀ (c x c)
    content_out: dict  # content layer -> Σ_{p∉R_l} ‖(t_p − r_p) M_l(p)‖²
    content_mask: dict  # content layer -> M_l ⊙ 1_R on the window grid (h x w)
    content_ref: dict  # content layer -> r ⊙ M_l ⊙ 1_R on the window grid (h x w x c)
    object_out: dict  # style layer -> Σ_{p∉R_l} w_p t_p t_pᵀ ({} unless style_object)
    object_weight: dict  # style layer -> w ⊙ 1_R on the window grid
    object_norm: dict  # style layer -> c_l · max(Σ_p w_p, 1e-6)


@functools.lru_cache(maxsize=256)
def receptive_field(arch: str, layer: str) -> tuple[int, int, int]:
    """``(s, lo, hi)``: feature ``j`` of ``layer`` reads input pixels ``[s·j − lo, s·j + hi]``.

    Found by walking the network backwards from one position: a 3 x 3 convolution widens
    the interval ``[a, b]`` to ``[a − 1, b + 1]``, a 2 x 2 pool of stride 2 maps it to
    ``[2a, 2b + 1]``, a ReLU keeps it.

    Example:
      >>> receptive_field("vgg16", "relu4_3")
      (8, 42, 49)
    """
    names = LAYERS[arch]
    a, b, s = 0, 0, 1
    for name in reversed(names[: names.index(layer) + 1]):
        if name.startswith("conv"):
            a, b = a - 1, b + 1
        elif name.startswith("pool"):
            a, b, s = 2 * a, 2 * b + 1, 2 * s
    return s, -a, b


def level_shape(hw: tuple[int, int], arch: str, layer: str) -> tuple[int, int]:
    """Spatial shape of ``layer``'s features on an ``hw`` canvas (each pool floors)."""
    h, w = hw
    names = LAYERS[arch]
    for name in names[: names.index(layer) + 1]:
        if name.startswith("pool"):
            h, w = h // 2, w // 2
    return h, w


def bounded(cfg: StageConfig) -> bool:
    """Whether a ``region="image"`` stage changes only a rectangle ``R`` (``reach > 0``)."""
    return cfg.region == "image" and cfg.reach > 0


def _grow(reach: float, long_side):
    """``g = ⌊reach·ℓ + ½⌋`` px (float32 arithmetic, host and traced alike)."""
    if isinstance(long_side, (int, np.integer)):
        return int(np.floor(np.float32(reach) * np.float32(long_side) + np.float32(0.5)))
    g = jnp.floor(jnp.float32(reach) * long_side.astype(jnp.float32) + 0.5)
    return g.astype(jnp.int32)


def changed_box(cfg: StageConfig, mask: Any) -> tuple[jax.Array, jax.Array]:
    """``(r₀, r₁)``, int32 ``(y, x)`` pairs: the rectangle ``[r₀, r₁)`` outside which a
    stage's image is the target (traced; one ``H x W`` mask).

    ``region="mask"``: the mask's bounding box ``[b₀, b₁)``; bounded ``region="image"``:
    ``r₀ = max(b₀ − g, 0)``, ``r₁ = min(b₁ + g, N)`` with ``g = ⌊reach·ℓ + ½⌋``, ``ℓ =
    max(b₁ − b₀)`` the box's long side; unbounded: the whole canvas. Empty mask: ``[0, 0)``.
    """
    m = jnp.asarray(mask) != 0
    b0, b1 = [], []
    for axis in (0, 1):
        any_ = m.any(axis=1 - axis)
        n = any_.shape[0]
        has = any_.any()
        b0.append(jnp.where(has, jnp.argmax(any_), 0))
        b1.append(jnp.where(has, n - jnp.argmax(any_[::-1]), 0))
    lo, hi = jnp.stack(b0).astype(jnp.int32), jnp.stack(b1).astype(jnp.int32)
    if cfg.region == "image":
        n = jnp.asarray(m.shape, jnp.int32)
        if not cfg.reach:
            return jnp.zeros(2, jnp.int32), n
        g = _grow(cfg.reach, jnp.max(hi - lo))
        lo, hi = jnp.maximum(lo - g, 0), jnp.minimum(hi + g, n)
    return lo, hi


def _smoothstep(t: jax.Array) -> jax.Array:
    return t * t * (3 - 2 * t)


def region_weight(cfg: StageConfig, mask: jax.Array) -> jax.Array:
    """The stage's ``H x W`` pixel weight ``W``: its image is ``W ⊙ x + (1 − W) ⊙ I_T``.

    ``region="mask"``: the mask. Bounded ``region="image"``: ``W(y, x) = w_y(y)·w_x(x)``
    with, per axis, ``w(i) = σ(min(t_lo(i), t_hi(i)))``, ``σ(t) = 3t² − 2t³``,
    ``t_lo(i) = clip((i − r₀ + 1)/(ρ + 1), 0, 1)`` (1 for ``i ≥ 0`` when ``r₀ = 0``: no
    ramp at the canvas's edge), ``t_hi(i) = clip((r₁ − i)/(ρ + 1), 0, 1)`` (1 for ``i <
    N`` when ``r₁ = N``), ``ρ = min(RAMP, g)``: 0 outside ``R = [r₀, r₁)``, rising over its
    last ``ρ`` px and 1 on the mask's box (which lies ``g ≥ ρ`` px inside). Unbounded
    ``region="image"``: ones.
    """
    mask = jnp.asarray(mask, jnp.float32)
    if cfg.region == "mask":
        return mask
    if not cfg.reach:
        return jnp.ones_like(mask)
    lo, hi = changed_box(cfg, mask)
    box = changed_box(dataclasses.replace(cfg, region="mask"), mask)
    rho = jnp.minimum(RAMP, _grow(cfg.reach, jnp.max(box[1] - box[0]))).astype(jnp.float32)
    ws = []
    for axis in (0, 1):
        n = mask.shape[axis]
        i = jnp.arange(n, dtype=jnp.float32)
        r0, r1 = lo[axis].astype(jnp.float32), hi[axis].astype(jnp.float32)
        t_lo = jnp.where(lo[axis] > 0, jnp.clip((i - r0 + 1) / (rho + 1), 0, 1), i >= r0)
        t_hi = jnp.where(hi[axis] < n, jnp.clip((r1 - i) / (rho + 1), 0, 1), i < r1)
        ws.append(_smoothstep(jnp.minimum(t_lo, t_hi).astype(jnp.float32)))
    return ws[0][:, None] * ws[1][None, :]


def _changed_box_np(cfg: StageConfig, m: np.ndarray, axis: int) -> tuple[int, int]:
    """Host-side :func:`changed_box` along ``axis`` of one concrete mask, 1 px wider on
    each side (float32 rounding of ``g`` may differ by one between host and device)."""
    ext = [_box_1d(m.any(axis=1 - a)) for a in (0, 1)]
    b0, b1 = ext[axis]
    n = m.shape[axis]
    if cfg.region != "image":
        return b0, b1
    g = _grow(cfg.reach, max(e[1] - e[0] for e in ext)) + 1
    return max(b0 - g, 0), min(b1 + g, n)


def windowable(cfg: StageConfig) -> bool:
    """Whether a stage's objective can be computed exactly on a window (see module doc):
    ``window`` on, ``region="mask"`` or a bounded ``region="image"`` (``reach > 0``), no
    histogram term, the style term (if any) on the composite, the content term (if any) on
    the composite's features, no tone term, and at least one VGG term (otherwise there is nothing to
    save)."""
    return bool(
        cfg.window
        and (cfg.region == "mask" or bounded(cfg))
        and not cfg.hist
        and not cfg.tone
        and (not cfg.style or cfg.style_image == "blend")
        and (not cfg.content or cfg.content_image == "blend")
        and _terms_layers(cfg)
    )


def _terms_layers(cfg: StageConfig) -> tuple[str, ...]:
    names: set[str] = set()
    if cfg.content:
        names.update(n for n, _ in cfg.content_layers)
    if cfg.style:
        names.update(n for n, _ in cfg.style_layers)
    return tuple(sorted(names))


def _box_1d(any_: np.ndarray) -> tuple[int, int]:
    idx = np.flatnonzero(any_)
    return (0, 0) if idx.size == 0 else (int(idx[0]), int(idx[-1]) + 1)


def plan(
    cfg: StageConfig,
    arch: str,
    mask: Any,
    *,
    bucket: int = BUCKET,
    max_fraction: float = MAX_FRACTION,
) -> Geometry | None:
    """The window a stage uses on ``mask``'s canvas, or ``None`` for the full objective.

    Host-side, from the concrete mask: ``H x W`` for one job or ``N x H x W`` for a stack
    (then the window fits the largest box of the stack, each job keeping its own origin).
    Per axis ``L = min(⌈((b₁ − b₀) + 2m + S − 1) / q⌉·q, ⌈N/S⌉·S)`` with ``q`` the least
    multiple of ``bucket`` and ``S``, ``[b₀, b₁)`` the :func:`changed_box` (the mask's
    box, or the rectangle ``R`` of a bounded ``region="image"`` stage). ``None`` when the
    stage is not :func:`windowable` or the window's area is not below ``max_fraction`` of
    the canvas's.

    Args:
      cfg: the stage's configuration.
      arch: the VGG architecture (``"vgg16"``, ``"vgg19"``).
      mask: the canvas mask(s); nonzero = pixels the stage may change.
      bucket: window sides are multiples of this (px); 1 = as small as exact allows.
      max_fraction: use the window only below this share of the canvas area.
    """
    if not windowable(cfg):
        return None
    layers = _terms_layers(cfg)
    rfs = [receptive_field(arch, n) for n in layers]
    stride = max(s for s, _, _ in rfs)
    margin = max(lo + hi for _, lo, hi in rfs)
    m = np.asarray(mask) != 0
    if m.ndim == 2:
        m = m[None]
    hw = m.shape[1:]
    q = int(np.lcm(int(bucket), stride))
    size = []
    for axis in (0, 1):
        extent = max(b1 - b0 for b0, b1 in (_changed_box_np(cfg, mi, axis) for mi in m))
        need = extent + 2 * margin + stride - 1
        full = -(-hw[axis] // stride) * stride
        size.append(min(-(-need // q) * q, full))
    if size[0] * size[1] >= max_fraction * hw[0] * hw[1]:
        return None
    return Geometry((size[0], size[1]), stride, margin)


def origin(geom: Geometry, mask: jax.Array, cfg: StageConfig | None = None) -> jax.Array:
    """The window's top-left pixel ``(o_y, o_x)`` for one ``H x W`` mask (traced; int32).

    ``o = min(S·⌊max(b₀ − m, 0)/S⌋, S·⌈max(N − L, 0)/S⌉)`` per axis (module doc), ``b₀``
    the start of ``cfg``'s :func:`changed_box` (default: the mask's box); an empty mask
    gives the box ``[0, 0)``.
    """
    lo, _ = changed_box(cfg if cfg is not None else StageConfig(), mask)
    out = []
    for axis in (0, 1):
        n = mask.shape[axis]
        b0 = lo[axis]
        s, size = geom.stride, geom.size[axis]
        a = (jnp.maximum(b0 - geom.margin, 0) // s) * s
        out.append(jnp.minimum(a, -(-max(n - size, 0) // s) * s))
    return jnp.stack(out).astype(jnp.int32)


def valid(
    j: jax.Array, o: jax.Array, size: int, n_canvas: int, n_level: int, rf: tuple[int, int, int]
) -> jax.Array:
    """Which positions ``j`` (canvas grid of a layer, one axis) the window computes exactly.

    ``j`` must lie in the window and on the canvas grid (``0 ≤ j < n_level``), and its
    receptive field, clipped to the canvas, in the window: ``max(s·j − lo, 0) ≥ o`` and
    ``min(s·j + hi, N − 1) ≤ o + L − 1``.
    """
    s, lo, hi = rf
    return (
        (j >= o // s)
        & (j < (o + size) // s)
        & (j < n_level)
        & (jnp.maximum(s * j - lo, 0) >= o)
        & (jnp.minimum(s * j + hi, n_canvas - 1) <= o + size - 1)
    )


def _region_2d(geom, o, hw, arch, layer, *, window_grid: bool) -> jax.Array:
    """``R_l`` as 0/1 on the window's grid (``window_grid``) or on the canvas's grid."""
    rf = receptive_field(arch, layer)
    s = rf[0]
    lvl = level_shape(hw, arch, layer)
    axes = []
    for axis in (0, 1):
        if window_grid:
            j = o[axis] // s + jnp.arange(geom.size[axis] // s)
        else:
            j = jnp.arange(lvl[axis])
        axes.append(valid(j, o[axis], geom.size[axis], hw[axis], lvl[axis], rf))
    return (axes[0][:, None] & axes[1][None, :]).astype(jnp.float32)


def crop(
    image: jax.Array,
    geom: Geometry,
    o: jax.Array,
    stride: int = 1,
    pad: int | None = None,
    mode: str = "constant",
) -> jax.Array:
    """The window of a canvas array (``H x W`` or ``H x W x ...``) on a grid of ``stride``
    (1: pixels; a layer's stride: its features); past the canvas's end zeros
    (``mode="constant"``) or the last row/column repeated (``"edge"``).

    The window is gathered row by row and column by column (indices clamped to the canvas
    for ``"edge"``), so no padded copy of the canvas is made; ``pad`` is accepted for
    compatibility and ignored.
    """
    size = (geom.size[0] // stride, geom.size[1] // stride)
    del pad  # a gather of the window's rows and columns: nothing is padded or clamped
    n = image.shape[:2]
    idx = [o[a] // stride + jnp.arange(size[a]) for a in (0, 1)]
    out = jnp.take(image, jnp.clip(idx[0], 0, n[0] - 1), axis=0)
    out = jnp.take(out, jnp.clip(idx[1], 0, n[1] - 1), axis=1)
    if mode == "constant":
        ok = [(i >= 0) & (i < m) for i, m in zip(idx, n, strict=True)]
        keep = (ok[0][:, None] & ok[1][None, :]).astype(out.dtype)
        out = out * keep.reshape(keep.shape + (1,) * (image.ndim - 2))
    elif mode != "edge":
        raise ValueError(f"mode must be 'constant' or 'edge', got {mode!r}")
    return out


def window_features(
    spec: Any,
    params: Any,
    image: jax.Array,
    layers: tuple[str, ...],
    o: jax.Array,
    canvas: tuple[int, int],
) -> dict[str, jax.Array]:
    """VGG features of a window ``image`` (``L_y x L_x x 3``) at canvas offset ``o``.

    The same network as :func:`jaxblend.vgg.features` (same dtype and precision as
    ``spec``: a :class:`jaxblend.solve.VGGSpec`), except that before each convolution the
    activations at positions outside the canvas (``o/s + q ∉ [0, n_level)``; ``o`` may be
    negative, a multiple of the largest stride, for :func:`canvas_grams`'s tiles) are set
    to zero — the canvas's zero padding — so positions of :func:`valid` come out as on the
    canvas.

    Returns:
      layer -> float32 ``L_y/s x L_x/s x c``.
    """
    dtype = "bfloat16" if spec.dtype == "bfloat16" else "float32"
    precision = "default" if spec.dtype == "tf32" else None
    inner = params["params"] if "params" in params else params
    names = LAYERS[spec.arch]
    deepest = max(names.index(n) for n in layers)
    h = preprocess(image[None], spec.preprocessing)
    n = list(canvas)
    s = 1
    out: dict[str, jax.Array] = {}
    for name in names[: deepest + 1]:
        if name.startswith("conv"):
            q = [o[a] // s + jnp.arange(h.shape[1 + a]) for a in (0, 1)]
            ins = [(q[a] >= 0) & (q[a] < n[a]) for a in (0, 1)]
            inside = (ins[0][:, None] & ins[1][None, :]).astype(h.dtype)
            h = h * inside[None, :, :, None]
            p = inner[name]
            h = conv3x3(h, p["kernel"], dtype, precision)
            h = h + p["bias"].astype(jnp.float32).reshape(1, 1, 1, -1)
        elif name.startswith("relu"):
            h = jax.nn.relu(h)
        else:
            h = max_pool2(h)
            n = [n[0] // 2, n[1] // 2]
            s *= 2
        if name in layers:
            out[name] = h[0].astype(jnp.float32)
    return out


def _sum_outer(f: jax.Array, w: jax.Array) -> jax.Array:
    """``Σ_p w_p f_p f_pᵀ`` of ``h x w x c`` features and ``h x w`` weights (``c x c``)."""
    c = f.shape[-1]
    flat = f.reshape(-1, c)
    return jnp.matmul((flat * w.reshape(-1, 1)).T, flat, precision=jax.lax.Precision.HIGHEST)


def _tv_map(x: jax.Array) -> jax.Array:
    """``|x(p + e_y) − x(p)| + |x(p + e_x) − x(p)|`` per element, 0 past the last row/column:
    its sum is :func:`jaxblend.losses.tv_loss`."""
    dy = jnp.abs(x[1:] - x[:-1])
    dx = jnp.abs(x[:, 1:] - x[:, :-1])
    zeros = [(0, 0)] * (x.ndim - 2)
    return jnp.pad(dy, [(0, 1), (0, 0)] + zeros) + jnp.pad(dx, [(0, 0), (0, 1)] + zeros)


def _range_map(x: jax.Array, low: float = 0.0, high: float = 255.0) -> jax.Array:
    """Per element ``relu(low − x)² + relu(x − high)²`` (:func:`jaxblend.losses.range_loss`)."""
    return jax.nn.relu(low - x) ** 2 + jax.nn.relu(x - high) ** 2


def _grad_err(cfg: StageConfig, image: jax.Array, guide: jax.Array) -> jax.Array:
    """``(D(I) − guide)²`` per element, ``D`` the stage's operator (edge replication)."""
    d = losses.laplacian if cfg.operator == "laplacian" else losses.forward_differences
    return (d(image) - guide) ** 2


def _per_pixel(err: jax.Array, w: jax.Array) -> jax.Array:
    """``Σ`` over an element map's trailing axes, weighted per pixel by ``w`` (``H x W``)."""
    return jnp.sum(err.reshape(err.shape[0], err.shape[1], -1), axis=-1) * w


#: Rows per strip of :func:`strip_sum`.
STRIP = 256


def strip_sum(fn, images: tuple, weight: jax.Array, rows: int = STRIP) -> jax.Array:
    """``Σ_p weight_p Σ_k fn(*images)[p, k]`` over a whole canvas, computed on strips of
    ``rows`` rows (``lax.map``) so that no full-canvas map of ``fn`` is ever held.

    ``fn`` maps ``H x W x …`` images to an element map of the same rows and columns in
    which a row reads at most its neighbouring rows, with the canvas's edge replicated past
    its first and last row (the Laplacian, forward differences, TV, pointwise maps). Each
    strip is read with one halo row on either side from the edge-replicated canvas, and
    only its own rows are kept, so the sum equals the whole canvas's (up to the order of
    float32 additions).
    """
    h = weight.shape[0]
    rows = max(1, min(rows, h))
    n = -(-h // rows)
    extra = n * rows - h
    padded = [jnp.pad(a, [(1, extra + 1)] + [(0, 0)] * (a.ndim - 1), mode="edge") for a in images]
    w = jnp.pad(weight, [(0, extra)] + [(0, 0)] * (weight.ndim - 1))

    def one(i):
        strips = [jax.lax.dynamic_slice_in_dim(a, i * rows, rows + 2, 0) for a in padded]
        return jnp.sum(
            _per_pixel(fn(*strips)[1:-1], jax.lax.dynamic_slice_in_dim(w, i * rows, rows, 0))
        )

    return jnp.sum(jax.lax.map(one, jnp.arange(n)))


def canvas_grams(
    spec: Any, params: Any, image: jax.Array, layers: tuple[str, ...], *, tile: int = TILE
) -> dict[str, jax.Array]:
    """:func:`jaxblend.losses.gram` of ``image``'s features at ``layers``, the whole
    canvas, exactly, computed tile by tile so that no full-canvas feature map is held.

    The canvas is cut into cores ``[c, c + T)`` per axis (``T``: ``tile`` rounded up to a
    multiple of the largest stride ``S``; ``c = 0, T, 2T, …``); each core's window ``[c −
    p, c + T + p)``, ``p = S·⌈max_l max(lo_l, hi_l)/S⌉``, runs :func:`window_features`
    (zero padding outside the canvas, also before it) and owns the positions ``j ∈ [c/s,
    (c + T)/s) ∩ [0, n_l)`` of each layer: every position is owned once, and exactly
    computed (``s·j − lo ≥ c − p`` and ``s·j + hi ≤ c + T + p − 1``). Then ``G_l = Σ_tiles
    Σ_{owned} f_p f_pᵀ / (h_l w_l c_l)``. One VGG pass (``lax.map``) per tile.
    """
    hw = image.shape[:2]
    arch = spec.arch
    rfs = [receptive_field(arch, n) for n in layers]
    big = max(s for s, _, _ in rfs)
    pad = big * -(-max(max(lo, hi) for _, lo, hi in rfs) // big)
    t = [big * -(-min(tile, n) // big) for n in hw]
    size = (t[0] + 2 * pad, t[1] + 2 * pad)
    padded = jnp.pad(image, [(pad, pad + t[0]), (pad, pad + t[1]), (0, 0)])
    cores = np.array(
        [(cy, cx) for cy in range(0, hw[0], t[0]) for cx in range(0, hw[1], t[1])], np.int32
    )

    def one(c):
        win = jax.lax.dynamic_slice(padded, (c[0], c[1], 0), (*size, 3))
        o = c - pad
        f = window_features(spec, params, win, layers, o, hw)
        out = {}
        for n in layers:
            s = receptive_field(arch, n)[0]
            lvl = level_shape(hw, arch, n)
            own = []
            for a in (0, 1):
                j = o[a] // s + jnp.arange(size[a] // s)
                own.append((j >= c[a] // s) & (j < (c[a] + t[a]) // s) & (j < lvl[a]))
            out[n] = _sum_outer(f[n], (own[0][:, None] & own[1][None, :]).astype(jnp.float32))
        return out

    sums = jax.lax.map(one, jnp.asarray(cores))
    grams = {}
    for n in layers:
        h, w = level_shape(hw, arch, n)
        grams[n] = jnp.sum(sums[n], axis=0) / (h * w * sums[n].shape[-1])
    return grams


def prepare(
    cfg: StageConfig,
    spec: Any,
    geom: Geometry,
    params: Any,
    target: jax.Array,
    mask: jax.Array,
    guide: jax.Array,
    band: jax.Array | None,
    content_ref: jax.Array,
    full_feats: dict,
    *,
    masked: bool,
) -> tuple[WindowData, dict]:
    """A job's window constants, once per job; also the target's and the reference's
    window features (``{"target": …, "ref": …}``, exact on ``R_l``) for the caller's
    normalising scales.

    Pixel terms: ``R_0`` is :func:`valid` for a 3 x 3 stencil (``s = lo = hi = 1``); a
    pixel's Laplacian (or forward difference), TV differences and range penalty change
    only within 1 px of the changed rectangle, inside ``R_0``. Past the canvas's end the
    window repeats the last row/column, so the stencils see the canvas's edge replication
    there (and TV differences across the end are 0); the VGG pass zeroes those pixels.

    Content: the reference's features are computed on the window only (exact on ``R_l``);
    the masked term's sum outside ``R_l`` is 0 (module doc), the unmasked one's reads
    ``full_feats``.

    Args:
      cfg, spec, geom: static: the stage, the network (``VGGSpec``) and the window shape.
      params: VGG parameters.
      target, mask: the job's ``H x W x 3`` canvas and ``H x W`` (object) mask.
      guide: the gradient term's guidance field (:func:`jaxblend.losses.guidance`).
      band: the gradient term's ``H x W`` pixel weights, or ``None`` (unweighted mean).
      content_ref: the content reference image (``H x W x 3``).
      full_feats: ``{"target": …, "ref": …}`` full-canvas features, needed only for the
        unmasked content term (content layers, both) and ``style_object`` (style layers,
        the target's); otherwise empty.
      masked: whether the content term is masked (Eq. 7) or not (Eq. 9).
    """
    hw = target.shape[:2]
    arch = spec.arch
    o = origin(geom, mask, cfg)
    t_win = crop(target, geom, o, mode="edge")
    m_win = crop(region_weight(cfg, mask), geom, o, mode="edge")
    px_rf = (1, 1, 1)
    r0 = [
        valid(o[a] + jnp.arange(geom.size[a]), o[a], geom.size[a], hw[a], hw[a], px_rf)
        for a in (0, 1)
    ]
    pixels = (r0[0][:, None] & r0[1][None, :]).astype(jnp.float32)
    c0 = [valid(jnp.arange(hw[a]), o[a], geom.size[a], hw[a], hw[a], px_rf) for a in (0, 1)]
    out0 = 1 - (c0[0][:, None] & c0[1][None, :]).astype(jnp.float32)
    w = jnp.ones(hw, jnp.float32) if band is None else band
    # The target's pixel terms outside R_0, strip by strip (no full-canvas maps held).
    grad_out = strip_sum(functools.partial(_grad_err, cfg), (target, guide), w * out0)
    per_px = guide.size // (hw[0] * hw[1])
    grad_norm = jnp.float32(guide.size) if band is None else jnp.maximum(jnp.sum(w), 1.0) * per_px
    g_win = crop(guide, geom, o, mode="edge")
    gw = crop(w, geom, o, mode="edge") * pixels
    tv_out = strip_sum(_tv_map, (target,), out0)
    range_out = strip_sum(_range_map, (target,), out0)
    layers = _terms_layers(cfg)
    tw = window_features(spec, params, t_win, layers, o, hw)
    region = {n: _region_2d(geom, o, hw, arch, n, window_grid=True) for n in layers}
    s_layers = tuple(n for n, _ in cfg.style_layers) if cfg.style else ()
    c_layers = tuple(n for n, _ in cfg.content_layers) if cfg.content else ()
    gram_in = {n: _sum_outer(tw[n], region[n]) for n in s_layers}
    rw = window_features(spec, params, crop(content_ref, geom, o, mode="edge"), c_layers, o, hw)
    c_out, c_mask, c_ref = {}, {}, {}
    for n in c_layers:
        lvl = level_shape(hw, arch, n)
        s = receptive_field(arch, n)[0]
        if masked:
            ml = losses.resize_mask(mask, lvl)
            c_out[n] = jnp.float32(0)  # M_l = 0 outside R_l (module doc)
        else:
            ml = jnp.ones(lvl, jnp.float32)
            t, r = full_feats["target"][n], full_feats["ref"][n]
            outside = 1 - _region_2d(geom, o, hw, arch, n, window_grid=False)
            c_out[n] = jnp.sum(((t - r) ** 2) * outside[..., None])
        mw = crop(ml, geom, o, s) * region[n]
        c_mask[n] = mw
        c_ref[n] = rw[n] * mw[..., None]
    o_out, o_w, o_norm = {}, {}, {}
    if cfg.style and cfg.style_object:
        for n in s_layers:
            t = full_feats["target"][n]
            w = losses.resize_mask(mask, t.shape[:2])
            outside = 1 - _region_2d(geom, o, hw, arch, n, window_grid=False)
            o_out[n] = _sum_outer(t, w * outside)
            o_w[n] = crop(w, geom, o, receptive_field(arch, n)[0]) * region[n]
            o_norm[n] = t.shape[-1] * jnp.maximum(jnp.sum(w), 1e-6)
    wd = WindowData(
        o, t_win, m_win, pixels, g_win, gw, grad_out, grad_norm, tv_out, range_out,
        region, gram_in, c_out, c_mask, c_ref, o_out, o_w, o_norm,
    )  # fmt: skip
    return wd, {"target": tw, "ref": rw}


def _as_window(x: jax.Array, wd: WindowData, canvas: tuple[int, int]) -> jax.Array:
    """The iterate's window: the crop of the full canvas ``x``, or for a window-sized
    ``x`` (``L_y x L_x x 3``, the windowed stages' optimised variable) ``x`` with the rows
    and columns past the canvas's end replaced by its last one on the canvas — the edge
    replication the full canvas's stencils see — so those entries are no free variables
    (zero gradient) and the last row's gradient collects what its copies receive."""
    size = wd.mask.shape
    if x.shape[:2] == size:
        iy = jnp.minimum(jnp.arange(size[0]), canvas[0] - 1 - wd.origin[0])
        ix = jnp.minimum(jnp.arange(size[1]), canvas[1] - 1 - wd.origin[1])
        return x[iy][:, ix]
    geom = Geometry((size[0], size[1]), 1, 0)
    # o + L <= N + S - 1 and S <= 32 (VGG has five pools): 32 rows past the end suffice.
    return crop(x, geom, wd.origin, pad=32, mode="edge")


def variable(x: jax.Array, wd: WindowData) -> jax.Array:
    """The optimised variable of a windowed stage: the window of the full-canvas ``x``
    (edge-replicated past the canvas's end). Outside it ``x`` has no effect on the
    objective, so L-BFGS on the window takes the same steps as on the canvas."""
    return _as_window(x, wd, x.shape[:2])


def blend_window(x: jax.Array, wd: WindowData, canvas: tuple[int, int]) -> jax.Array:
    """The window of the stage's image ``W ⊙ x + (1 − W) ⊙ I_T`` (``W``: the mask, or the
    bounded region's :func:`region_weight`) for the iterate ``x``, full ``H x W x 3`` or
    its window, on a ``canvas`` (``(H, W)``); edge-replicated past the canvas's end."""
    xw = _as_window(x, wd, canvas)
    m = wd.mask[..., None]
    return xw * m + wd.target * (1 - m)


def paste(canvas: jax.Array, win: jax.Array, o: jax.Array) -> jax.Array:
    """``canvas`` with the window ``win`` written at ``o`` (its part on the canvas only):
    ``lax.dynamic_update_slice`` on the canvas padded past its end, so a window running
    past the end is neither clamped nor shifted."""
    h, w = canvas.shape[:2]
    py, px = win.shape[0], win.shape[1]
    padded = jnp.pad(canvas, [(0, py), (0, px)] + [(0, 0)] * (canvas.ndim - 2))
    start = (o[0], o[1]) + (0,) * (canvas.ndim - 2)
    return jax.lax.dynamic_update_slice(padded, win.astype(canvas.dtype), start)[:h, :w]


def full_image(x: jax.Array, wd: WindowData, target: jax.Array) -> jax.Array:
    """The stage's whole-canvas image for the iterate ``x`` (window or canvas): the
    target with :func:`blend_window` pasted at the window's origin (outside the window the
    stage's image is the target)."""
    return paste(target, blend_window(x, wd, target.shape[:2]), wd.origin)


def pixel_terms(
    cfg: StageConfig, blend: jax.Array, wd: WindowData, canvas: tuple[int, int]
) -> dict[str, jax.Array]:
    """The whole canvas's gradient (Eq. 6), TV (Eq. 12) and range terms from the blend's
    window (:func:`blend_window`), unweighted:

    * ``grad = (Σ_{p∉R_0} w_p e_T(p) + Σ_{p∈R_0} w_p e_B(p)) / n``, ``e = ‖D(I) − guide‖²``,
      ``n`` = ``H·W·C`` (unweighted mean) or ``max(Σ w, 1)·C``;
    * ``tv = Σ_{p∉R_0} tv_T(p) + Σ_{p∈R_0} tv_B(p)`` (forward differences per pixel);
    * ``range = (Σ_{p∉R_0} ρ(I_T(p)) + Σ_{p∈R_0} ρ(I_B(p))) / (H·W·C)``.
    """
    out = {}
    if cfg.grad:
        err = _per_pixel(_grad_err(cfg, blend, wd.guide), wd.grad_weight)
        out["grad"] = (wd.grad_out + jnp.sum(err)) / wd.grad_norm
    if cfg.tv:
        out["tv"] = wd.tv_out + jnp.sum(_per_pixel(_tv_map(blend), wd.pixels))
    if cfg.range:
        inside = jnp.sum(_per_pixel(_range_map(blend), wd.pixels))
        out["range"] = (wd.range_out + inside) / (canvas[0] * canvas[1] * blend.shape[-1])
    return out


def content_loss(
    feats: dict, wd: WindowData, canvas: tuple[int, int], arch: str, *, weights: dict
) -> jax.Array:
    """:func:`jaxblend.losses.content_loss` of the whole canvas from window features:
    ``Σ_l α_l (Σ_{p∉R_l} ‖(t_p − r_p) M_l‖² + Σ_{p∈R_l} ‖(f_p − r_p) M_l‖²) / n_l``."""
    total = jnp.float32(0)
    for name, a in weights.items():
        f = feats[name]
        h, w = level_shape(canvas, arch, name)
        inside = jnp.sum((f * wd.content_mask[name][..., None] - wd.content_ref[name]) ** 2)
        total = total + a * (wd.content_out[name] + inside) / (h * w * f.shape[-1])
    return total


def style_loss(
    feats: dict, wd: WindowData, canvas: tuple[int, int], arch: str, *, weights: dict
) -> jax.Array:
    """:func:`jaxblend.losses.style_loss` against the target's own Grams, from window
    features: ``Σ_l β_l mean(((Σ_{p∈R_l} f_p f_pᵀ − Σ_{p∈R_l} t_p t_pᵀ) / n_l)²)``."""
    total = jnp.float32(0)
    for name, b in weights.items():
        f = feats[name]
        h, w = level_shape(canvas, arch, name)
        diff = (_sum_outer(f, wd.region[name]) - wd.gram_in[name]) / (h * w * f.shape[-1])
        total = total + b * jnp.mean(diff**2)
    return total


def object_style_loss(feats: dict, wd: WindowData, grams: dict, *, weights: dict) -> jax.Array:
    """:func:`jaxblend.losses.style_loss` with a mask (the object's Gram against
    ``grams``), from window features: ``G = (Σ_{p∉R_l} w_p t_p t_pᵀ + Σ_{p∈R_l} w_p f_p
    f_pᵀ) / (c_l Σ_p w_p)``."""
    total = jnp.float32(0)
    for name, b in weights.items():
        g = (wd.object_out[name] + _sum_outer(feats[name], wd.object_weight[name])) / (
            wd.object_norm[name]
        )
        total = total + b * jnp.mean((g - grams[name]) ** 2)
    return total
