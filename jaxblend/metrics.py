"""Quality figures of a blend that do not depend on the network the blend optimises.

Every figure compares a result ``R`` on the canvas with the job's own images: the target
canvas ``T``, the source placed on it ``S``, the mask ``M`` (``> 0.5`` inside) and the naive
paste ``N = S ⊙ M + T ⊙ (1 − M)``. Images are ``H x W x 3`` in ``[0, 255]``. All figures
but two are model-free NumPy; ``object_fidelity`` and ``style_distance`` use the AlexNet
trunk of :mod:`jaxblend.lpips`, which no blend term optimises (the blend uses VGG).

=================  ==========================================================  ===========
figure             what it measures                                            naive paste
=================  ==========================================================  ===========
``ghosting``       target structure showing through the object (0 = none)     0
``structure``      source structure kept inside the object (1 = all)           1
``contrast``       luminance contrast kept inside the object (1 = all)         1
``outline``        a line or halo tracing the mask boundary (grey levels)      0
``seam``           RMS Laplacian error against the guidance near the mask      its seam
``fidelity``       LPIPS(result, naive paste) on the object's box (0 = same)   0
``style``          AlexNet Gram distance to the target (1 = naive paste)       1
=================  ==========================================================  ===========

Lower is better for ghosting, outline, seam, fidelity and style; ``structure`` and
``contrast`` near 1 mean the object stayed solid. The formulas are in each function's
docstring. Use :class:`Scorer` to score several results of one job (constants once).

References:
  R. Zhang et al. The Unreasonable Effectiveness of Deep Features as a Perceptual Metric.
  CVPR 2018 (LPIPS). L. Gatys, A. Ecker, M. Bethge. Image Style Transfer Using
  Convolutional Neural Networks. CVPR 2016 (Gram matrices).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.typing import ArrayLike

__all__ = [
    "FIGURES",
    "Scorer",
    "contrast",
    "dilate",
    "erode",
    "ghosting",
    "object_fidelity",
    "outline",
    "score",
    "seam_error",
    "style_distance",
]

#: The figures :func:`score` returns, in table order.
FIGURES = ("ghosting", "structure", "contrast", "outline", "seam", "fidelity", "style")

_LUMA = np.array([0.299, 0.587, 0.114])


# ----------------------------------------------------------------------------- helpers


def _img(x: ArrayLike, name: str) -> np.ndarray:
    a = np.asarray(x, np.float64)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"{name} must be an H x W x 3 image, got shape {a.shape}")
    return a


def _mask(m: ArrayLike, shape: tuple[int, ...]) -> np.ndarray:
    a = np.asarray(m)
    if a.shape != tuple(shape[:2]):
        raise ValueError(f"mask must be H x W = {shape[:2]}, got shape {a.shape}")
    return a > 0.5


def _disk(radius: float) -> list[tuple[int, int]]:
    r = int(np.floor(radius))
    return [
        (dy, dx)
        for dy in range(-r, r + 1)
        for dx in range(-r, r + 1)
        if dy * dy + dx * dx <= radius * radius
    ]


def dilate(mask: np.ndarray, radius: float, *, outside: bool = False) -> np.ndarray:
    """Binary dilation by a Euclidean disk of ``radius`` pixels (``outside``: the value
    assumed beyond the canvas)."""
    m = np.asarray(mask, bool)
    if radius <= 0:
        return m.copy()
    r = int(np.floor(radius))
    p = np.pad(m, r, constant_values=outside)
    out = np.zeros_like(m)
    h, w = m.shape
    for dy, dx in _disk(radius):
        out |= p[r + dy : r + dy + h, r + dx : r + dx + w]
    return out


def erode(mask: np.ndarray, radius: float) -> np.ndarray:
    """Binary erosion by a Euclidean disk (pixels outside the canvas count as outside)."""
    m = np.asarray(mask, bool)
    return ~dilate(~m, radius, outside=True) if radius > 0 else m.copy()


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an ``H x W (x C)`` array, zero outside the canvas."""
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    out = x
    for axis in (0, 1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (r, r)
        p = np.pad(out, pad)
        n = out.shape[axis]
        acc = np.zeros_like(out)
        for i, kv in enumerate(k):
            acc += kv * np.take(p, np.arange(i, i + n), axis=axis)
        out = acc
    return out


def _laplacian(x: np.ndarray) -> np.ndarray:
    """4-neighbour Laplacian ``4 f − Σ f_q`` with edge replication (as the blend's loss)."""
    p = np.pad(x, ((1, 1), (1, 1), (0, 0)), mode="edge")
    return 4 * x - p[:-2, 1:-1] - p[2:, 1:-1] - p[1:-1, :-2] - p[1:-1, 2:]


def _gradients(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x[1:, :-1] - x[:-1, :-1], x[:-1, 1:] - x[:-1, :-1]


# ----------------------------------------------------------------------------- figures


def ghosting(
    result: ArrayLike, source: ArrayLike, target: ArrayLike, mask: ArrayLike, *, erode_px: int = 2
) -> tuple[float, float]:
    """How much of the target's own structure shows through the object, and how much of the
    source's structure is kept.

    Inside the mask eroded by ``erode_px`` pixels, the result's forward differences (both
    directions, all channels) are fitted by least squares as a mix of the source's and the
    target's: ``∇R ≈ a ∇S + b ∇T``. ``b`` is the ghosting (0 for a naive paste or any
    result whose texture is not the target's texture *at the same place*; 0.5 for a 50/50
    alpha mix of source and target), ``a`` the structure kept (1 for the naive paste, 0.5
    for the mix). Stylisation adds texture uncorrelated with ``∇T`` and leaves ``b`` near 0;
    a see-through object raises it.

    Returns:
      ``(b, a)``: ghosting and structure.
    """
    r, s, t = _img(result, "result"), _img(source, "source"), _img(target, "target")
    m = _mask(mask, r.shape)
    inner = erode(m, erode_px)[:-1, :-1]
    ys, ts, rs = [], [], []
    for gr, gs, gt in zip(_gradients(r), _gradients(s), _gradients(t)):
        rs.append(gr[inner].ravel())
        ys.append(gs[inner].ravel())
        ts.append(gt[inner].ravel())
    y, xs, xt = np.concatenate(rs), np.concatenate(ys), np.concatenate(ts)
    if y.size == 0:
        return 0.0, 1.0
    a_mat = np.array([[xs @ xs, xs @ xt], [xs @ xt, xt @ xt]])
    rhs = np.array([xs @ y, xt @ y])
    if np.linalg.det(a_mat) <= 1e-9 * max(a_mat[0, 0] * a_mat[1, 1], 1e-30):
        return 0.0, float(rhs[0] / a_mat[0, 0]) if a_mat[0, 0] > 0 else 1.0
    a, b = np.linalg.solve(a_mat, rhs)
    return float(b), float(a)


def contrast(result: ArrayLike, naive: ArrayLike, mask: ArrayLike, *, erode_px: int = 2) -> float:
    """Luminance contrast kept inside the object: ``std(Y(R)) / std(Y(N))`` over the mask
    eroded by ``erode_px`` pixels, ``Y = 0.299 R + 0.587 G + 0.114 B``. 1 for the naive
    paste; 0.5 for an object faded halfway to flat; above 1 when texture was added."""
    r, n = _img(result, "result"), _img(naive, "naive")
    inner = erode(_mask(mask, r.shape), erode_px)
    if inner.sum() < 2:
        return 1.0
    sd = float(np.std((n @ _LUMA)[inner]))
    return float(np.std((r @ _LUMA)[inner])) / max(sd, 1e-6)


def outline(result: ArrayLike, naive: ArrayLike, mask: ArrayLike, *, sigma: float = 3.0) -> float:
    """Outline / halo index on the mask boundary, in grey levels (0 = none).

    What the blend changed, ``D = R − N``, is looked at on the one-pixel bands just inside
    (``mask − mask ⊖ 1.5 px``) and just outside (``mask ⊕ 1.5 px − mask``) the boundary.
    A seamless blend changes a band about as much as the pixels a little further in on the
    same side (flanks ``mask ⊖ 2.5 px − mask ⊖ 5 px`` inside, ``mask ⊕ 5 px − mask ⊕
    2.5 px`` outside; their local mean ``A`` is Gaussian-weighted with ``sigma`` px over the
    flank only); a line or halo traced along the mask edge changes it by more. The excess
    ``e = D − A`` of each band pixel is averaged along the boundary (Gaussian, ``sigma``
    px, band pixels only), so that added texture of random sign cancels and a consistent
    line stays, and ``outline = mean_band mean_c |blur_band(e)|``. The naive paste scores
    0, a smooth (Poisson) correction about 0, a 1-px line of height ``h`` just inside the
    boundary about ``h / 2``.
    """
    r, n = _img(result, "result"), _img(naive, "naive")
    m = _mask(mask, r.shape)
    d = r - n
    band_in, band_out = m & ~erode(m, 1.5), dilate(m, 1.5) & ~m
    f_in, f_out = erode(m, 2.5) & ~erode(m, 5), dilate(m, 5) & ~dilate(m, 2.5)
    band = band_in | band_out
    if not band.any():
        return 0.0

    def local_mean(region: np.ndarray, values: np.ndarray) -> np.ndarray:
        w = _blur(region.astype(np.float64), sigma)[..., None]
        return _blur(values * region[..., None], sigma) / np.maximum(w, 1e-12)

    expect = np.where(band_in[..., None], local_mean(f_in, d), local_mean(f_out, d))
    e = (d - expect) * band[..., None]
    along = local_mean(band, e)
    return float(np.mean(np.abs(along[band])))


def seam_error(
    result: ArrayLike, source: ArrayLike, target: ArrayLike, mask: ArrayLike, *, radius: float = 4
) -> float:
    """Seam figure (``grad_err``): ``sqrt(mean((ΔR − g)²))`` over the mask dilated by
    ``radius`` px (Euclidean disk), ``Δ`` the 4-neighbour Laplacian with edge replication
    and ``g = ΔS ⊙ M + ΔT ⊙ (1 − M)`` the guidance of the paper's Eq. 6. Grey levels."""
    r, s, t = _img(result, "result"), _img(source, "source"), _img(target, "target")
    m = _mask(mask, r.shape)
    guide = np.where(m[..., None], _laplacian(s), _laplacian(t))
    d = (_laplacian(r) - guide)[dilate(m, radius)]
    return float(np.sqrt(np.mean(d**2)))


def _box(mask: np.ndarray, pad: int) -> tuple[slice, slice]:
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    return (
        slice(max(0, ys.min() - pad), min(h, ys.max() + 1 + pad)),
        slice(max(0, xs.min() - pad), min(w, xs.max() + 1 + pad)),
    )


@jax.jit
def _lpips(params, a, b):
    from jaxblend.lpips import lpips_distance

    return lpips_distance(params, a, b)


@jax.jit
def _alex_grams(params, x):
    from jaxblend.lpips import alexnet_features

    out = []
    for f in alexnet_features(params, x):
        h, w, c = f.shape
        f = f.reshape(h * w, c)
        out.append(f.T @ f / (h * w * c))
    return out


def _lpips_params(lpips: Any) -> Any:
    if lpips is None:
        from jaxblend.lpips import load_lpips

        return load_lpips().params
    return getattr(lpips, "params", lpips)


def _min64(x: np.ndarray) -> np.ndarray:
    h, w = x.shape[:2]
    if min(h, w) >= 64:
        return x
    f = 64 / min(h, w)
    shape = (max(64, round(h * f)), max(64, round(w * f)), 3)
    return np.asarray(jax.image.resize(x, shape, "linear"))


def object_fidelity(
    result: ArrayLike, naive: ArrayLike, mask: ArrayLike, *, pad: int = 8, lpips: Any = None
) -> float:
    """LPIPS (AlexNet, v0.1) between the result and the naive paste on the object's box.

    The box is the mask's bounding box grown by ``pad`` px (clipped to the canvas); boxes
    with a side under 64 px are resized (bilinear) so that side is 64. 0 = the object as
    pasted; stylisation raises it a little, a faded or repainted object a lot.
    """
    r, n = _img(result, "result"), _img(naive, "naive")
    m = _mask(mask, r.shape)
    if not m.any():
        raise ValueError("mask is empty")
    b = _box(m, pad)
    return float(_lpips(_lpips_params(lpips), _min64(r[b]), _min64(n[b])))


def style_distance(
    result: ArrayLike,
    target: ArrayLike,
    naive: ArrayLike,
    *,
    lpips: Any = None,
    _cache: Mapping[str, Any] | None = None,
) -> float:
    """Style distance to the target on the AlexNet trunk (not the network the blend uses).

    ``style = (1/5) Σ_l ‖G_l(R) − G_l(T)‖² / ‖G_l(N) − G_l(T)‖²`` over AlexNet's relu1 …
    relu5 of the whole canvas (LPIPS preprocessing), ``G = FᵀF / (h·w·c)``. Each layer is
    normalised by the naive paste's distance, so the naive paste scores 1.0 and the target
    itself 0.
    """
    return float(np.mean(style_layers(result, target, naive, lpips=lpips, _cache=_cache)))


def style_layers(
    result: ArrayLike,
    target: ArrayLike,
    naive: ArrayLike,
    *,
    lpips: Any = None,
    _cache: Mapping[str, Any] | None = None,
) -> list[float]:
    """The five per-layer ratios (relu1 … relu5) whose mean is :func:`style_distance`."""
    p = _lpips_params(lpips)
    c = _cache or {}
    gt = c.get("target") or [np.asarray(g, np.float64) for g in _alex_grams(p, _img(target, "t"))]
    gn = c.get("naive") or [np.asarray(g, np.float64) for g in _alex_grams(p, _img(naive, "n"))]
    gr = [np.asarray(g, np.float64) for g in _alex_grams(p, _img(result, "result"))]
    return [
        float(np.sum((r - t) ** 2) / max(np.sum((n - t) ** 2), 1e-30))
        for r, n, t in zip(gr, gn, gt)
    ]


class Scorer:
    """All figures of :func:`score` for results of one job, its constants computed once.

    Args:
      source, target, mask: the job on the canvas (``H x W x 3`` source placed on the
        target, ``H x W`` mask).
      lpips: a loaded :func:`jaxblend.lpips.load_lpips` model (default the shipped one).

    Example:
      >>> s = Scorer(job.source, job.target, job.mask)
      >>> s(result.image)  # {"ghosting": ..., "structure": ..., ...}
    """

    def __init__(self, source: ArrayLike, target: ArrayLike, mask: ArrayLike, *, lpips=None):
        self.source = _img(source, "source")
        self.target = _img(target, "target")
        if self.source.shape != self.target.shape:
            raise ValueError(f"source {self.source.shape} and target {self.target.shape} differ")
        self.mask = _mask(mask, self.target.shape)
        if not self.mask.any():
            raise ValueError("mask is empty")
        self.naive = np.where(self.mask[..., None], self.source, self.target)
        self.params = _lpips_params(lpips)
        self._grams = {
            "target": [np.asarray(g, np.float64) for g in _alex_grams(self.params, self.target)],
            "naive": [np.asarray(g, np.float64) for g in _alex_grams(self.params, self.naive)],
        }

    def style_layers(self, result: ArrayLike) -> list[float]:
        """:func:`style_layers` of ``result`` (the style figure's five layers apart)."""
        return style_layers(result, self.target, self.naive, lpips=self.params, _cache=self._grams)

    def __call__(self, result: ArrayLike) -> dict[str, float]:
        r = _img(result, "result")
        if r.shape != self.target.shape:
            raise ValueError(f"result is {r.shape}, the canvas is {self.target.shape}")
        ghost, struct = ghosting(r, self.source, self.target, self.mask)
        return {
            "ghosting": ghost,
            "structure": struct,
            "contrast": contrast(r, self.naive, self.mask),
            "outline": outline(r, self.naive, self.mask),
            "seam": seam_error(r, self.source, self.target, self.mask),
            "fidelity": object_fidelity(r, self.naive, self.mask, lpips=self.params),
            "style": style_distance(
                r, self.target, self.naive, lpips=self.params, _cache=self._grams
            ),
        }


def score(
    result: ArrayLike, source: ArrayLike, target: ArrayLike, mask: ArrayLike, *, lpips=None
) -> dict[str, float]:
    """Every figure of the module for one result (see :data:`FIGURES` and the table above)."""
    return Scorer(source, target, mask, lpips=lpips)(result)
