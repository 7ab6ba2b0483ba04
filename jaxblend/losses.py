"""The loss terms of Deep Image Blending as pure functions of arrays.

Every function here takes ONE unbatched example (an ``H x W x 3`` image, or a dict of
``h x w x c`` feature maps); use ``jax.vmap`` for batches. Images are float 0–255.

Normalisations (documented once, used everywhere):

* gradient loss: mean over pixels and channels, as the authors' code (``MSELoss``);
* content loss: mean over the layer's elements, i.e. the paper's ``1/(2 N_l M_l)`` up to
  the constant 2;
* Gram matrix: ``FᵀF / (h·w·c)`` as the authors' code; style loss is the mean squared
  difference of Grams (paper: ``1/(2 N_l²)`` times the sum, a constant factor apart);
* histogram loss: mean over the layer's elements;
* total variation: the plain sum of absolute differences (Eq. 12, the authors' code).

References:
  L. Zhang, T. Wen, J. Shi. Deep Image Blending. WACV 2020 (arXiv:1910.11495).
  P. Pérez, M. Gangnet, A. Blake. Poisson Image Editing. SIGGRAPH 2003.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxblend.optim import gaussian_smoother

Features = Mapping[str, jax.Array]


# ----------------------------------------------------------------------------- gradients


def _shift(x: jax.Array, axis: int, step: int) -> jax.Array:
    """``x`` shifted by one pixel along ``axis`` with edge replication (Neumann border)."""
    n = x.shape[axis]
    if step > 0:  # value of the next pixel, last one repeated
        idx = jnp.minimum(jnp.arange(n) + 1, n - 1)
    else:
        idx = jnp.maximum(jnp.arange(n) - 1, 0)
    return jnp.take(x, idx, axis=axis)


def laplacian(image: ArrayLike) -> jax.Array:
    """4-neighbour Laplacian ``4 f_p − Σ_{q∈N_p} f_q`` of an ``H x W x C`` image.

    The kernel ``[[0,-1,0],[-1,4,-1],[0,-1,0]]`` the authors convolve with. At the image
    border the outside neighbour is the border pixel itself (edge replication), so a
    constant image has zero Laplacian everywhere.
    """
    x = jnp.asarray(image)
    return 4 * x - _shift(x, 0, 1) - _shift(x, 0, -1) - _shift(x, 1, 1) - _shift(x, 1, -1)


def forward_differences(image: ArrayLike) -> jax.Array:
    """First-order gradient ``(f_{m+1,n} − f_{m,n}, f_{m,n+1} − f_{m,n})``: ``H x W x C x 2``.

    The last row/column has zero difference (edge replication).
    """
    x = jnp.asarray(image)
    return jnp.stack([_shift(x, 0, 1) - x, _shift(x, 1, 1) - x], axis=-1)


def guidance(
    source: ArrayLike,
    target: ArrayLike,
    mask: ArrayLike,
    *,
    operator: str = "laplacian",
    mixed: bool = False,
) -> jax.Array:
    """The guidance field the blend's derivatives should follow (Eq. 6; Pérez et al.).

    ``guide = D(I_S) ⊙ M + D(I_T) ⊙ (1 − M)`` with ``D`` the 4-neighbour Laplacian
    (``operator="laplacian"``, the authors' default) or forward differences
    (``operator="gradient"``). With ``mixed=True`` (Pérez's mixed seamless cloning) each
    first-order difference inside the mask is the source's or the target's, whichever is
    larger in magnitude; for the Laplacian operator the guidance is then the (negative)
    divergence of that mixed gradient field, so that flat source regions let the
    target's texture through.

    Args:
      source: ``H x W x C`` source placed on the canvas.
      target: ``H x W x C`` canvas.
      mask: ``H x W`` with 1 inside the object.
      operator: ``"laplacian"`` or ``"gradient"``.
      mixed: take the stronger of source and target gradients inside the mask.

    Returns:
      ``H x W x C`` (Laplacian) or ``H x W x C x 2`` (gradient) guidance.
    """
    if operator not in ("laplacian", "gradient"):
        raise ValueError(f"operator must be 'laplacian' or 'gradient', got {operator!r}")
    s, t = jnp.asarray(source), jnp.asarray(target)
    m = jnp.asarray(mask)[..., None]
    if not mixed:
        d = laplacian if operator == "laplacian" else forward_differences
        if operator == "gradient":
            m = m[..., None]
        return d(s) * m + d(t) * (1 - m)
    gs, gt = forward_differences(s), forward_differences(t)
    g = jnp.where(jnp.abs(gs) > jnp.abs(gt), gs, gt)
    g = g * m[..., None] + gt * (1 - m[..., None])
    if operator == "gradient":
        return g
    # Laplacian = −div of forward differences: Σ_q (f_p − f_q) over the 4 neighbours.
    gy, gx = g[..., 0], g[..., 1]
    return -(gy - _shift(gy, 0, -1) * (jnp.arange(gy.shape[0]) > 0)[:, None, None]) - (
        gx - _shift(gx, 1, -1) * (jnp.arange(gx.shape[1]) > 0)[None, :, None]
    )


def gradient_loss(
    blend: ArrayLike,
    guide: ArrayLike,
    *,
    operator: str = "laplacian",
    weight: ArrayLike | None = None,
) -> jax.Array:
    """Poisson gradient loss (Eq. 6): ``mean((D(I_B) − guide)²)``.

    Args:
      blend: ``H x W x C`` blended image ``I_B = I_Z ⊙ M + I_T ⊙ (1 − M)``.
      guide: the output of :func:`guidance` for the same ``operator``.
      operator: ``"laplacian"`` or ``"gradient"``.
      weight: optional ``H x W`` pixel weights (e.g. a band across the mask boundary, see
        :func:`boundary_band`); the loss is then ``Σ w (D(I_B) − guide)² / (C Σ w)``.
    """
    d = laplacian if operator == "laplacian" else forward_differences
    err = (d(blend) - jnp.asarray(guide)) ** 2
    if weight is None:
        return jnp.mean(err)
    w = jnp.asarray(weight)
    w = w.reshape(w.shape + (1,) * (err.ndim - 2))
    per_pixel = err.size // (err.shape[0] * err.shape[1])
    return jnp.sum(err * w) / (jnp.maximum(jnp.sum(w), 1.0) * per_pixel)


def boundary_band(mask: ArrayLike, radius: int) -> jax.Array:
    """``H x W`` indicator of the pixels within ``radius`` px (Chebyshev) of the mask edge:
    the mask dilated by ``radius`` minus the mask eroded by ``radius`` (square windows)."""
    m = jnp.asarray(mask) > 0.5
    k = 2 * int(radius) + 1
    win = (k, k)

    def grow(x):
        x = x.astype(jnp.float32)
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, win, (1, 1), "SAME") > 0.5

    return (grow(m) & grow(~m)).astype(jnp.float32)


# ----------------------------------------------------------------------------- VGG terms


def resize_mask(mask: ArrayLike, shape: tuple[int, int]) -> jax.Array:
    """Average-pool an ``H x W`` mask down to a feature map's ``h x w`` (H = k·h)."""
    m = jnp.asarray(mask)
    h, w = shape
    kh, kw = m.shape[0] // h, m.shape[1] // w
    m = m[: h * kh, : w * kw]
    return m.reshape(h, kh, w, kw).mean(axis=(1, 3))


def content_loss(
    features: Features,
    reference: Features,
    mask: ArrayLike | None = None,
    *,
    weights: Mapping[str, float],
) -> jax.Array:
    """Content loss: Eq. 7 (masked) or Eq. 9 (``mask=None``).

    ``Σ_l α_l · mean((F_l[I] ⊙ M_l − F_l[I_ref] ⊙ M_l)²)`` with ``M_l`` the mask pooled to
    layer ``l`` (the paper's ``1/(2 N_l M_l) ‖·‖²`` up to the constant 2).

    Args:
      features: layer name → ``h x w x c`` features of the image being optimised.
      reference: the same layers of the reference (source for stage 1, stage-1 blend for
        stage 2).
      mask: ``H x W`` canvas mask, or ``None`` for the unmasked Eq. 9.
      weights: layer name → ``α_l``.
    """
    total = jnp.float32(0)
    for name, a in weights.items():
        f, r = features[name], reference[name]
        if mask is not None:
            m = resize_mask(mask, f.shape[:2])[..., None]
            f, r = f * m, r * m
        total = total + a * jnp.mean((f - r) ** 2)
    return total


def gram(feature: ArrayLike) -> jax.Array:
    """Gram matrix ``FᵀF / (h·w·c)`` of an ``h x w x c`` feature map (``c x c``)."""
    f = jnp.asarray(feature)
    h, w, c = f.shape
    f = f.reshape(h * w, c)
    return jnp.matmul(f.T, f, precision=jax.lax.Precision.HIGHEST) / (h * w * c)


def style_loss(
    features: Features,
    target_grams: Mapping[str, jax.Array],
    mask: ArrayLike | None = None,
    *,
    weights: Mapping[str, float],
) -> jax.Array:
    """Gram style loss (Eq. 8/10): ``Σ_l β_l · mean((G_l[I] − G_l^*)²)``.

    Args:
      features: layer name → ``h x w x c`` features of the blend.
      target_grams: layer name → the Gram matrix to reach, ``G_l^*`` (computed once per
        job): the target's, or with ``mask`` that of the matched target features
        (:func:`matched_features`).
      mask: ``H x W`` canvas mask: compare the :func:`masked_gram` of the positions under
        the mask pooled to each layer (the object's own style) instead of the whole map's.
      weights: layer name → ``β_l``.
    """
    total = jnp.float32(0)
    for name, b in weights.items():
        f = features[name]
        g = gram(f) if mask is None else masked_gram(f, resize_mask(mask, f.shape[:2]))
        total = total + b * jnp.mean((g - target_grams[name]) ** 2)
    return total


def masked_gram(feature: ArrayLike, weight: ArrayLike) -> jax.Array:
    """Gram matrix of the positions a ``h x w`` weight covers: ``Σ_p w_p f_p f_pᵀ / (Σ_p w_p·c)``.

    With ``weight`` all ones it is :func:`gram`.
    """
    f = jnp.asarray(feature)
    h, w, c = f.shape
    m = jnp.asarray(weight, jnp.float32).reshape(h * w, 1)
    f = f.reshape(h * w, c)
    n = jnp.maximum(jnp.sum(m), 1e-6)
    return jnp.matmul((f * m).T, f, precision=jax.lax.Precision.HIGHEST) / (n * c)


def _patches(f: jax.Array) -> jax.Array:
    """``h x w x 9c``: each position's 3 x 3 neighbourhood (edges replicated), L2-normalised."""
    h, w, _ = f.shape
    p = jnp.pad(f, ((1, 1), (1, 1), (0, 0)), mode="edge")
    cols = [p[i : i + h, j : j + w] for i in range(3) for j in range(3)]
    x = jnp.concatenate(cols, axis=-1)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


def match_positions(reference: ArrayLike, target: ArrayLike) -> jax.Array:
    """For each position of ``reference`` (``h x w x c``), the flat index of the position of
    ``target`` (same shape) whose 3 x 3 patch is most similar (cosine): Luan et al.'s
    nearest-neighbour patch matching, computed once per job (``(h·w)²`` similarities)."""
    r = _patches(jnp.asarray(reference)).reshape(-1, 9 * reference.shape[-1])
    t = _patches(jnp.asarray(target)).reshape(-1, 9 * target.shape[-1])
    return jnp.argmax(jnp.matmul(r, t.T), axis=-1)


def matched_features(target: ArrayLike, match: ArrayLike, coarse: tuple[int, int]) -> jax.Array:
    """``target`` (``H x W x c``) rearranged by a ``coarse``-grid match (:func:`match_positions`).

    A position ``(i, j)`` of the finer layer lies in coarse cell ``(i // k, j // k)`` (``k =
    H / h``); it takes the target feature at the same offset inside the matched cell (Luan
    et al. map correspondences to shallower layers this way).
    """
    t = jnp.asarray(target)
    hh, ww = t.shape[:2]
    h, w = coarse
    k = hh // h
    i = jnp.arange(hh)[:, None]
    j = jnp.arange(ww)[None, :]
    cell = jnp.asarray(match).reshape(h, w)[jnp.minimum(i // k, h - 1), jnp.minimum(j // k, w - 1)]
    ti = jnp.clip((cell // w) * k + i % k, 0, hh - 1)
    tj = jnp.clip((cell % w) * k + j % k, 0, ww - 1)
    return t[ti, tj]


def sorted_channels(feature: ArrayLike) -> jax.Array:
    """Each channel's values sorted: ``h x w x c`` → ``(h·w) x c``. Computed once per target."""
    f = jnp.asarray(feature)
    return jnp.sort(f.reshape(-1, f.shape[-1]), axis=0)


def histogram_match(feature: ArrayLike, target_sorted: ArrayLike) -> jax.Array:
    """Exact per-channel histogram matching by sorting (no bins).

    Each value of ``feature`` is replaced by the target's value of the same rank; when the
    pixel counts differ, the target's sorted values are resampled at the same quantiles
    with linear interpolation.

    Args:
      feature: ``h x w x c``.
      target_sorted: ``n x c`` from :func:`sorted_channels`.

    Returns:
      ``h x w x c``: the matched feature ``R``.
    """
    f = jnp.asarray(feature)
    t = jnp.asarray(target_sorted)
    h, w, c = f.shape
    p = h * w
    flat = f.reshape(p, c)
    if t.shape[0] != p:
        q = jnp.linspace(0.0, t.shape[0] - 1.0, p)
        lo = jnp.floor(q).astype(jnp.int32)
        hi = jnp.minimum(lo + 1, t.shape[0] - 1)
        frac = (q - lo)[:, None]
        t = t[lo] * (1 - frac) + t[hi] * frac
    ranks = jnp.argsort(flat, axis=0)
    out = jnp.zeros_like(flat).at[ranks, jnp.arange(c)[None, :]].set(t)
    return out.reshape(h, w, c)


def histogram_loss(
    features: Features, target_sorted: Mapping[str, jax.Array], *, weights: Mapping[str, float]
) -> jax.Array:
    """Histogram loss (Eq. 11): ``Σ_l γ_l · mean((F_l[I_B] − R_l)²)``, ``R_l`` held constant.

    ``R_l`` = ``F_l[I_B]`` histogram-matched per channel to the target's features
    (:func:`histogram_match`), under ``stop_gradient``.
    """
    total = jnp.float32(0)
    for name, g in weights.items():
        f = features[name]
        r = jax.lax.stop_gradient(histogram_match(f, target_sorted[name]))
        total = total + g * jnp.mean((f - r) ** 2)
    return total


def tv_loss(image: ArrayLike) -> jax.Array:
    """Total variation (Eq. 12): ``Σ |I_{m+1,n} − I_{m,n}| + |I_{m,n+1} − I_{m,n}|``."""
    x = jnp.asarray(image)
    return jnp.sum(jnp.abs(x[1:] - x[:-1])) + jnp.sum(jnp.abs(x[:, 1:] - x[:, :-1]))


def range_loss(image: ArrayLike, low: float = 0.0, high: float = 255.0) -> jax.Array:
    """Out-of-range penalty ``mean(relu(low − I)² + relu(I − high)²)``.

    Not in the paper: the result is saved as 8-bit, so values outside ``[0, 255]`` are
    clipped, which breaks the seams the gradient loss made (Poisson solutions overshoot).
    This smooth penalty keeps the optimum inside the range, so clipping changes nothing.
    """
    x = jnp.asarray(image)
    return jnp.mean(jax.nn.relu(low - x) ** 2 + jax.nn.relu(x - high) ** 2)


def blur(image: ArrayLike, sigma: float) -> jax.Array:
    """Separable Gaussian blur of an ``H x W x C`` image (static ``sigma`` px, zero
    padding: the image counts as 0 beyond the canvas): :func:`jaxblend.optim.gaussian_smoother`."""
    return gaussian_smoother(float(sigma))(jnp.asarray(image))


LUMA = (0.299, 0.587, 0.114)  # Rec. 601 brightness weights


def tone_loss(
    image: ArrayLike,
    reference: ArrayLike,
    mask: ArrayLike,
    sigma: float,
    *,
    luma: bool = False,
    highpass: float = 0.0,
) -> jax.Array:
    """The object's tone against a reference: the mean over the mask (weights ``M``) and
    channels of the squared Gaussian-blurred difference,

    ``Σ_p M_p ‖(G_σ * (I − I_ref))_p‖² / (C · max(Σ_p M_p, 1e-6))``;

    with ``luma`` the difference is first reduced to its brightness ``Y = 0.299 R +
    0.587 G + 0.114 B`` (``C = 1``), so only light and dark count, not hue; with
    ``highpass > sigma`` the blurred difference is a difference of Gaussians, ``(G_σ −
    G_highpass) * (I − I_ref)``, so a change smoother than ``highpass`` px (the whole
    object lighter or darker) costs nothing either: only the object's own light and dark
    parts, between the two widths, are held.

    Blurring first keeps only the coarse colour and brightness: texture finer than
    ``σ`` (zero-mean detail) costs nothing, so a style term may repaint the object's
    texture while this term keeps its tones (a dark horse stays dark). Not in the paper.
    """
    d = jnp.asarray(image) - jnp.asarray(reference)
    if luma:
        d = jnp.tensordot(d, jnp.asarray(LUMA, d.dtype), axes=1)[..., None]
    d = blur(d, sigma) - blur(d, highpass) if highpass else blur(d, sigma)
    m = jnp.asarray(mask, jnp.float32)
    return jnp.sum(m[..., None] * d**2) / (d.shape[-1] * jnp.maximum(jnp.sum(m), 1e-6))
