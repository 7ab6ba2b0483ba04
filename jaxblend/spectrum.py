"""How soft a scene is at its finest scales, from its amplitude spectrum.

Natural images have an amplitude spectrum that falls about as ``1/f`` (van der Schaaf &
van Hateren 1996): ``A(f) ∝ f^(−β)`` with ``β ≈ 1``. A soft painting (smooth brushwork
resampled to the canvas) falls much faster at its finest scales, a grainy one at about
that rate. :func:`fine_scale_sigma` turns the excess fall-off of the scene into the width
of a Gaussian whose frequency response has the same excess, the search-direction
smoothing of ``StageConfig(smooth="auto")``: pixel-level speckle, which fits VGG's Gram
statistics on any scene, is then not a search direction on scenes that have none, and
stays one on scenes whose own texture is that fine.

``β`` is measured between two annuli of the Hann-windowed grey image's power spectrum,
``f₁ ∈ [0.10, 0.15)`` and ``f₂ ∈ [0.35, 0.40)`` cycles per pixel (centres ``f̄₁, f̄₂``):
``β = ½ ln(P₁ / P₂) / ln(f̄₂ / f̄₁)``, and ``σ`` solves ``exp(−2π²σ²(f̄₂² − f̄₁²)) =
(f̄₂ / f̄₁)^(−(β − 1))``: ``σ² = max(0, β − 1) · ln(f̄₂ / f̄₁) / (2π² (f̄₂² − f̄₁²))``,
and the search smoothing is ``GAIN · σ``, clipped to ``[0, SIGMA_MAX]``. ``GAIN`` is the
rule's one constant, chosen on the development set (case1, case2, case4 at 512²): with
``σ`` itself (0.78 px on case1's portrait) case1's style distance stayed above the
authors'; ``1.25 σ`` (0.97 px) reaches it, and on the grainy scenes (0.24–0.35 px before
the gain) the smoothing stays near the identity either way.

The rule was calibrated on 512-pixel canvases, and it does not carry over to much larger
ones: on case4's painting upsampled to 2048×1536 and 4096×3072 (``bench/highres.py``) it
gives σ = 1.34 and 1.26 px, and stage 2 then stalls (its normalised style term ends at
0.54–0.62 against 0.17 with raw steps, whether the seam weight is coupled to σ or not)
while the object dissolves into grey ripples. So above ``CALIBRATED_SIDE`` the width
shrinks with the canvas's long side ``L``: ``σ · min(1, CALIBRATED_SIDE / L)``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxblend.optim import SIGMA_MAX

#: The two annuli (cycles per pixel) the slope is measured between.
LOW = (0.10, 0.15)
HIGH = (0.35, 0.40)
#: The factor on the matched ``σ`` (see the module docstring).
GAIN = 1.25
#: The canvas side (px) the rule was calibrated at; larger canvases get a narrower σ.
CALIBRATED_SIDE = 512


def amplitude_slope(image: jax.Array) -> jax.Array:
    """``β`` of an ``H x W x 3`` (or ``H x W``) image: the amplitude spectrum's log-log
    slope between the annuli :data:`LOW` and :data:`HIGH` (1 for a ``1/f`` image)."""
    g = image.mean(-1) if image.ndim == 3 else image
    g = g.astype(jnp.float32)
    g = g - jnp.mean(g)
    h, w = g.shape
    win = jnp.outer(jnp.hanning(h), jnp.hanning(w)).astype(jnp.float32)
    p = jnp.abs(jnp.fft.rfft2(g * win)) ** 2
    fy = jnp.fft.fftfreq(h)[:, None]
    fx = jnp.fft.rfftfreq(w)[None, :]
    r = jnp.sqrt(fy**2 + fx**2)

    def band(lo, hi):
        m = (r >= lo) & (r < hi)
        return jnp.sum(jnp.where(m, p, 0.0)) / jnp.maximum(jnp.sum(m), 1)

    tiny = jnp.float32(1e-20)
    p1, p2 = jnp.maximum(band(*LOW), tiny), jnp.maximum(band(*HIGH), tiny)
    return 0.5 * jnp.log(p1 / p2) / math.log(sum(HIGH) / sum(LOW))


def excess_sigma(image: jax.Array) -> jax.Array:
    """The Gaussian ``σ`` (px) whose response matches the image's fall-off in excess of
    ``1/f`` between :data:`LOW` and :data:`HIGH` (0 for a natural or grainy image; about
    ``s`` for a ``1/f`` image blurred by ``s`` px)."""
    f1, f2 = sum(LOW) / 2, sum(HIGH) / 2
    k = math.log(f2 / f1) / (2 * math.pi**2 * (f2**2 - f1**2))
    beta = amplitude_slope(image)
    return jnp.sqrt(jnp.maximum(beta - 1.0, 0.0) * k)


def fine_scale_sigma(image: jax.Array) -> jax.Array:
    """The search smoothing of ``smooth="auto"`` for a scene: ``GAIN`` times
    :func:`excess_sigma`, clipped to ``[0, SIGMA_MAX]``, times ``min(1, CALIBRATED_SIDE /
    L)`` for an image whose long side ``L`` exceeds the calibrated canvas."""
    scale = min(1.0, CALIBRATED_SIDE / max(image.shape[0], image.shape[1]))
    return scale * jnp.clip(GAIN * excess_sigma(image), 0.0, SIGMA_MAX)
