"""Making, checking and showing object masks.

A blend needs a mask of the object in the source image. This module makes one in three
ways, each behind ``jaxblend mask``:

* :func:`from_alpha` — the alpha channel of an RGBA (or grey + alpha) cutout, as is;
* :func:`from_background` — every pixel whose colour differs from a plain background, the
  background colour estimated from the image's border (:func:`estimate_background`);
* :func:`from_rectangle` — GrabCut (Rother, Kolmogorov, Blake 2004) from a rectangle
  around the object, through OpenCV, an optional dependency imported only here
  (``pip install opencv-python-headless``, or the ``masks`` extra).

It also says when a mask looks anti-aliased or JPEG-compressed (:func:`mask_health`,
:func:`soft_mask_warning`) and draws previews: a mask over its image (:func:`overlay`) and
a placed mask on the canvas (:func:`placement_preview`).

Masks here are ``H x W`` uint8 arrays, 0 outside and 255 inside (the alpha method keeps
the alpha's own values).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from jaxblend.errors import InputError
from jaxblend.io import ImageLike, Job, load_alpha, load_image

__all__ = [
    "Background",
    "MaskHealth",
    "estimate_background",
    "from_alpha",
    "from_background",
    "from_rectangle",
    "mask_health",
    "outline",
    "overlay",
    "placement_preview",
    "soft_mask_warning",
]

MIN_TOLERANCE = 24.0  # colour distance below which a pixel is background, at least
PLAIN_SPREAD = 48.0  # border colour spread above which the background is not plain
SOFT_WARN = 0.01  # soft pixels, as a fraction of the mask's nonzero pixels, that warn
OPENCV_HINT = "pip install opencv-python-headless"
OUTLINE = (255, 230, 0)  # drawn outlines: yellow, with a dark edge
TINT = (255, 0, 160)  # the preview's tint outside the mask
MARGIN = 0.04  # from_rectangle's safety border, a fraction of the object's sqrt(area)
OPENING_DEPTH = 0.1  # depth inside the cut, as that fraction, where openings are sought


# --------------------------------------------------------------------------- morphology


def _shift_reduce(m: np.ndarray, op: Any, fill: bool) -> np.ndarray:
    """``op`` over each pixel's 3x3 neighbourhood (pixels past the edge are ``fill``)."""
    p = np.pad(m, 1, constant_values=fill)
    h, w = m.shape
    out = p[1 : h + 1, 1 : w + 1].copy()
    for dr in (0, 1, 2):
        for dc in (0, 1, 2):
            if dr != 1 or dc != 1:
                op(out, p[dr : dr + h, dc : dc + w], out=out)
    return out


def _dilate(m: np.ndarray, r: int = 1) -> np.ndarray:
    for _ in range(r):
        m = _shift_reduce(m, np.logical_or, False)
    return m


def _erode(m: np.ndarray, r: int = 1) -> np.ndarray:
    for _ in range(r):
        m = _shift_reduce(m, np.logical_and, True)
    return m


def outline(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """Boolean ``H x W``: the inside pixels within ``width`` of the outside (the edge)."""
    m = np.asarray(mask) > 0
    return m & ~_erode(m, max(1, int(width)))


def _clean(m: np.ndarray, radius: int) -> np.ndarray:
    """Opening then closing by a 3x3 square ``radius`` times: drops specks, fills pinholes."""
    if radius < 1:
        return m
    m = _dilate(_erode(m, radius), radius)
    return _erode(_dilate(m, radius), radius)


def _to_u8(m: np.ndarray) -> np.ndarray:
    return np.where(m, np.uint8(255), np.uint8(0))


# --------------------------------------------------------------------------- making masks


def from_alpha(source: ImageLike) -> np.ndarray:
    """The alpha channel of ``source`` as an ``H x W`` uint8 mask, values kept.

    Saved as a PNG and passed as the mask, it gives the same job as passing no mask at
    all (the alpha is the mask then, :func:`jaxblend.io.place`).

    Raises:
      InputError: the image has no alpha channel, or it is opaque everywhere.
    """
    alpha = load_alpha(source, "source")
    if alpha is None:
        raise InputError(
            "the source has no alpha channel: use --method threshold (plain background) or "
            "--method grabcut --rect TOP,LEFT,BOTTOM,RIGHT"
        )
    a = np.asarray(alpha, np.uint8)
    if a.min() == 255:
        raise InputError(
            "the source's alpha channel is opaque everywhere, so it marks no object: use "
            "--method threshold or --method grabcut"
        )
    return a


class Background(NamedTuple):
    """A plain background estimated from the image border.

    Attributes:
      colour: median RGB of the border pixels.
      spread: 99th percentile of the border pixels' distance to ``colour`` (noise level).
      tolerance: the distance above which a pixel counts as the object.
    """

    colour: tuple[float, float, float]
    spread: float
    tolerance: float


def _border(h: int, w: int, border: int | None) -> int:
    if border is None:
        border = max(1, round(0.02 * min(h, w)))
    if not 1 <= int(border) <= min(h, w) // 2:
        raise InputError(f"border must be 1..{min(h, w) // 2} pixels, got {border}")
    return int(border)


def estimate_background(
    image: ImageLike, *, border: int | None = None, tolerance: float | None = None
) -> Background:
    """The background colour of ``image`` from a ``border``-pixel frame around it.

    The colour is the per-channel median of the frame's pixels; ``spread`` is the 99th
    percentile of their Euclidean RGB distance to it. The tolerance, unless given, is
    ``max(24, 2 * spread)``: twice the border's own noise (JPEG, grain), at least 24 grey
    levels.

    Args:
      image: path, PIL image or array.
      border: frame width in pixels; default 2% of the short side (at least 1).
      tolerance: fix the tolerance instead of deriving it from the noise.

    Raises:
      InputError: the frame is not a plain colour (``spread`` above 48) and no
        ``tolerance`` was given: the object touches the border or the background varies.
    """
    a = np.asarray(load_image(image, "source"), np.float32)
    h, w = a.shape[:2]
    b = _border(h, w, border)
    frame = np.concatenate(
        [a[:b].reshape(-1, 3), a[-b:].reshape(-1, 3), a[b:-b, :b].reshape(-1, 3),
         a[b:-b, -b:].reshape(-1, 3)]
    )  # fmt: skip
    colour = np.median(frame, axis=0)
    spread = float(np.percentile(np.linalg.norm(frame - colour, axis=-1), 99))
    if tolerance is None:
        if spread > PLAIN_SPREAD:
            raise InputError(
                f"the image border is not a plain background (its colours spread {spread:.0f} "
                f"grey levels around RGB {tuple(int(round(c)) for c in colour)}): use --method "
                "grabcut --rect TOP,LEFT,BOTTOM,RIGHT, or set --tolerance"
            )
        tolerance = max(MIN_TOLERANCE, 2.0 * spread)
    if not tolerance > 0:
        raise InputError(f"tolerance must be positive, got {tolerance}")
    return Background(tuple(float(c) for c in colour), spread, float(tolerance))


def from_background(
    image: ImageLike,
    *,
    border: int | None = None,
    tolerance: float | None = None,
    smooth: int = 1,
) -> np.ndarray:
    """Mask of an object on a plain background: pixels far from the background colour.

    A pixel is inside when its Euclidean RGB distance to the background colour
    (:func:`estimate_background`) exceeds the tolerance; an opening and a closing by a 3x3
    square, ``smooth`` times each, then drop isolated specks (noise) and fill pinholes; and
    near the edge a pixel must also be more than halfway, in colour, from the background to
    the object beside it (the 50% coverage line of a blurred or anti-aliased edge).

    Args:
      image: path, PIL image or array (an RGBA image's colour channels are used).
      border, tolerance: see :func:`estimate_background`.
      smooth: clean-up radius in pixels (0: none).

    Returns:
      ``H x W`` uint8, 255 inside and 0 outside.

    Raises:
      InputError: a border that is not plain, or nothing found.

    Example:
      >>> import numpy as np
      >>> im = np.full((32, 32, 3), 240, np.uint8); im[8:24, 10:20] = (200, 30, 30)
      >>> int((from_background(im) > 0).sum())
      160
    """
    bg = estimate_background(image, border=border, tolerance=tolerance)
    a = np.asarray(load_image(image, "source"), np.float32)
    dist = np.linalg.norm(a - np.asarray(bg.colour, np.float32), axis=-1)
    m = _clean(dist > bg.tolerance, int(smooth))
    m = _halfway_edge(m, dist)
    if not m.any():
        raise InputError(
            f"no pixel differs from the background colour RGB "
            f"{tuple(int(round(c)) for c in bg.colour)} by more than {bg.tolerance:.0f}: lower "
            "--tolerance, or use --method grabcut"
        )
    return _to_u8(m)


def _halfway_edge(m: np.ndarray, dist: np.ndarray, ring: int = 2) -> np.ndarray:
    """Move the mask's edge to where the colour is halfway from the background to the object.

    Edge pixels of an anti-aliased, blurred or JPEG-compressed image mix object and
    background; any tolerance low enough to keep the object's pale parts keeps them all,
    growing the mask by a pixel or so. A pixel of the ``ring`` inner pixels of the edge stays
    inside only if its distance from the background exceeds half that of the object's
    pixels just inside (the largest within 2 pixels): the 50% coverage line, like a
    mid-grey cut of an alpha matte. Thin parts without an interior are kept as they are.
    """
    interior = _erode(m, ring)
    band = m & ~interior
    near = np.where(interior, dist, np.float32(0))
    for _ in range(ring):
        near = _shift_reduce(near, np.maximum, np.float32(0))
    return m & ~(band & (near > 0) & (dist <= 0.5 * near))


def default_rect(h: int, w: int) -> tuple[int, int, int, int]:
    """The rectangle :func:`from_rectangle` uses when given none: the image inset by 5%."""
    dr, dc = max(1, round(0.05 * h)), max(1, round(0.05 * w))
    return dr, dc, h - dr, w - dc


def from_rectangle(
    image: ImageLike,
    rect: tuple[int, int, int, int] | None = None,
    *,
    iterations: int = 5,
    openings: bool = True,
    margin: float = MARGIN,
) -> np.ndarray:
    """A blending mask of the object inside ``rect``: GrabCut, see-through openings, margin.

    1. GrabCut (OpenCV's ``cv2.grabCut``): everything outside the rectangle is background;
       inside, GrabCut fits colour models of object and background (Gaussian mixtures) and
       cuts the graph of pixels, ``iterations`` times. It labels regions that the object
       encloses (the lenses inside spectacle frames, the gaps between spokes) as the object
       when their colours do not set them apart on their own.
    2. See-through openings (``openings``): with ``size`` the square root of the cut's area
       (its holes filled), the pixels deeper inside the cut than ``0.1 * size`` are made
       background and a second GrabCut finds the object in the band along the outline (a
       frame's own inner edge, when there is one). Each such deep region whose colours the
       background just around the object (a ``0.1 * size`` ring, as a five-component
       Gaussian mixture) explains better, on average, than the band's object pixels do is
       an opening (a lens: the same face as beside the frame) and is cut out, down to the
       second cut's edge but never into the outer half of the band, so a solid object, whose
       inside looks like its own rim, stays whole and the outline stays GrabCut's.
    3. The ``margin``: the mask is grown by ``margin * size`` pixels (a disc), a safety
       border of source background around the object, into the openings too, as a
       hand-drawn blending mask has; this also closes gaps narrower than twice that and
       fills holes as small.

    Args:
      image: path, PIL image or array.
      rect: ``(top, left, bottom, right)`` in pixels, bottom and right exclusive; default
        the image inset by 5% on each side (:func:`default_rect`): this takes the main
        object of the photo, so draw one around a smaller object (glasses on a face).
      iterations: GrabCut iterations (each pass).
      openings: look for see-through openings (step 2); ``False`` keeps GrabCut's cut.
      margin: the safety border, as a fraction of ``size`` (0: none); with ``openings``
        off and ``margin=0`` the mask is GrabCut's cut as it is.

    Returns:
      ``H x W`` uint8, 255 inside and 0 outside.

    Raises:
      InputError: OpenCV is not installed, a rectangle outside the image or covering all
        of it, a negative margin, or nothing found.

    References:
      C. Rother, V. Kolmogorov, A. Blake, "GrabCut: interactive foreground extraction
      using iterated graph cuts", SIGGRAPH 2004.
    """
    try:
        import cv2
    except ImportError:
        raise InputError(
            f"GrabCut needs OpenCV, which is not installed: {OPENCV_HINT} "
            "(or pip install 'jaxblend[masks]')"
        ) from None
    a = np.ascontiguousarray(np.asarray(load_image(image, "source"), np.uint8)[..., ::-1])
    h, w = a.shape[:2]
    top, left, bottom, right = default_rect(h, w) if rect is None else (int(v) for v in rect)
    if not (0 <= top < bottom <= h and 0 <= left < right <= w):
        raise InputError(
            f"rectangle rows {top}..{bottom}, cols {left}..{right} is not inside the {h}x{w} "
            "image: give --rect TOP,LEFT,BOTTOM,RIGHT with 0 <= TOP < BOTTOM <= height and "
            "0 <= LEFT < RIGHT <= width"
        )
    if (top, left, bottom, right) == (0, 0, h, w):
        raise InputError(
            "the rectangle covers the whole image, leaving GrabCut no background to learn "
            "from: draw it inside the image, around the object"
        )
    if int(iterations) < 1:
        raise InputError(f"iterations must be at least 1, got {iterations}")
    if not float(margin) >= 0:
        raise InputError(f"margin must be 0 or more, got {margin}")
    labels = np.zeros((h, w), np.uint8)
    try:
        _grabcut(cv2, a, labels, (left, top, right - left, bottom - top), int(iterations))
    except cv2.error as e:
        msg = str(e).strip().splitlines()[-1]
        raise InputError(f"GrabCut failed ({msg}): try a larger rectangle") from None
    m = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    if not m.any():
        raise InputError("GrabCut found no object in the rectangle: draw it around the object")
    silhouette = _fill_holes(cv2, m)
    size = float(np.sqrt(silhouette.sum()))
    if openings:
        m &= ~_openings(cv2, a, labels, silhouette, OPENING_DEPTH * size, int(iterations))
    if margin > 0:
        m = _distance_to(cv2, m) <= float(margin) * size
    return _to_u8(m)


def _grabcut(cv2: Any, a: np.ndarray, labels: np.ndarray, rect: Any, iterations: int) -> None:
    """``cv2.grabCut`` in place on ``labels``: from ``rect``, or from ``labels`` if None;
    seeded, so the same input gives the same cut in any order of calls."""
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    how = cv2.GC_INIT_WITH_MASK if rect is None else cv2.GC_INIT_WITH_RECT
    cv2.setRNGSeed(0)  # its k-means starts draw from OpenCV's generator: same input, same cut
    cv2.grabCut(a, labels, rect, bgd, fgd, iterations, how)


def _fill_holes(cv2: Any, m: np.ndarray) -> np.ndarray:
    """``m`` with every region it encloses (not reachable from the border) filled."""
    reach = np.pad(m, 1).astype(np.uint8)
    cv2.floodFill(reach, None, (0, 0), 1)
    return m | (reach[1:-1, 1:-1] == 0)


def _depth(cv2: Any, m: np.ndarray) -> np.ndarray:
    """Euclidean distance of each pixel of ``m`` to the nearest pixel outside it (or the
    image's edge); 0 outside."""
    d = cv2.distanceTransform(np.pad(m, 1).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return d[1:-1, 1:-1]


def _distance_to(cv2: Any, m: np.ndarray) -> np.ndarray:
    """Euclidean distance of each pixel to the nearest pixel of ``m`` (0 on ``m``)."""
    d = cv2.distanceTransform(
        np.pad(~m, 1, constant_values=True).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE
    )
    return d[1:-1, 1:-1]


def _gmm(cv2: Any, x: np.ndarray, k: int = 5) -> list[tuple[Any, ...]]:
    """A ``k``-component Gaussian mixture of the colours ``x`` (N x 3), as GrabCut starts
    its own: k-means clusters, each cluster's share, mean and covariance."""
    x = np.asarray(x, np.float32)
    crit = (cv2.TERM_CRITERIA_MAX_ITER + cv2.TERM_CRITERIA_EPS, 10, 0.5)
    cv2.setRNGSeed(0)
    _, lab, _ = cv2.kmeans(x, min(k, len(x)), None, crit, 1, cv2.KMEANS_PP_CENTERS)
    lab = lab.ravel()
    comps = []
    for j in range(k):
        xs = x[lab == j].astype(np.float64)
        if len(xs) >= 4:
            c = np.cov(xs.T) + np.eye(3)  # a grey level of noise keeps it invertible
            comps.append((len(xs) / len(x), xs.mean(0), np.linalg.inv(c), np.linalg.slogdet(c)[1]))
    return comps


def _gmm_loglik(comps: list[tuple[Any, ...]], x: np.ndarray) -> np.ndarray:
    """Log-likelihood (up to a constant shared by all mixtures) of each colour in ``x``."""
    x = np.asarray(x, np.float64)
    terms = []
    for share, mean, inv, logdet in comps:
        d = x - mean
        terms.append(np.log(share) - 0.5 * np.einsum("ni,ij,nj->n", d, inv, d) - 0.5 * logdet)
    return np.logaddexp.reduce(np.stack(terms), axis=0)


def _openings(
    cv2: Any,
    a: np.ndarray,
    labels: np.ndarray,
    silhouette: np.ndarray,
    depth: float,
    iterations: int,
) -> np.ndarray:
    """The see-through openings of the cut (step 2 of :func:`from_rectangle`): boolean."""
    none = np.zeros(silhouette.shape, bool)
    inside = _depth(cv2, silhouette)
    deep = silhouette & (inside > depth)
    ring = ~silhouette & (_distance_to(cv2, silhouette) <= depth)
    if not deep.any() or ring.sum() < 20:
        return none
    hollow = np.where(labels == cv2.GC_BGD, cv2.GC_BGD, cv2.GC_PR_BGD).astype(np.uint8)
    hollow[silhouette] = cv2.GC_PR_FGD
    hollow[deep] = cv2.GC_BGD
    try:
        _grabcut(cv2, a, hollow, None, iterations)
    except cv2.error:
        return none
    rim = (hollow == cv2.GC_FGD) | (hollow == cv2.GC_PR_FGD)
    if rim.sum() < 20:
        return none
    background, obj = _gmm(cv2, a[ring]), _gmm(cv2, a[rim])
    removable = silhouette & ~rim & (inside > depth / 2)
    _, parts = cv2.connectedComponents(removable.astype(np.uint8), connectivity=8)
    n, regions = cv2.connectedComponents(deep.astype(np.uint8), connectivity=8)
    out = none.copy()
    for j in range(1, n):
        region = regions == j
        x = a[region]
        if np.mean(_gmm_loglik(background, x) - _gmm_loglik(obj, x)) > 0:
            ids = np.unique(parts[region & removable])
            out |= np.isin(parts, ids[ids > 0])
    return out


# --------------------------------------------------------------------------- mask hygiene


class MaskHealth(NamedTuple):
    """How soft a mask is; fractions of the image's pixels.

    Attributes:
      peak: the mask's largest value (255 for an 8-bit mask, 1 for a 0/1 mask).
      soft: pixels strictly between 0 and ``peak`` (anti-aliasing, JPEG noise).
      inside: pixels inside at threshold 0 (any nonzero value).
      extra: pixels inside at threshold 0 but not at a mid-grey cut (value at most half
        of ``peak``): what "any nonzero is inside" adds.
    """

    peak: int
    soft: float
    inside: float
    extra: float


def mask_health(mask: Any) -> MaskHealth:
    """:class:`MaskHealth` of an ``H x W`` mask (array or grey PIL image)."""
    m = np.asarray(mask)
    peak = int(m.max()) if m.size else 0
    n = max(1, m.size)
    nonzero = m > 0
    soft = nonzero & (m < peak)
    extra = nonzero & (m.astype(np.float32) <= peak / 2)
    return MaskHealth(peak, soft.sum() / n, nonzero.sum() / n, extra.sum() / n)


def soft_mask_warning(mask: Any, threshold: float = 0) -> str | None:
    """A one-line warning when a mask looks anti-aliased or JPEG-noisy, else ``None``.

    It warns when more than 1% of the mask's nonzero pixels lie strictly between 0 and
    its peak value and ``threshold`` is 0 (every nonzero pixel inside, the default): such
    pixels carry the source's background into the blend. A threshold above 0 is a choice
    already made, so it does not warn.
    """
    h = mask_health(mask)
    if threshold > 0 or h.inside == 0 or h.soft <= SOFT_WARN * h.inside:
        return None
    return (
        f"the mask looks anti-aliased or JPEG-compressed: {h.soft:.1%} of the image's pixels "
        f"are strictly between 0 and {h.peak}, and at --mask-threshold 0 (the default) every "
        f"nonzero one is inside, {h.extra / h.inside:.1%} of the object's pixels at or below "
        "mid-grey; pass --mask-threshold 127 to cut at mid-grey"
    )


# --------------------------------------------------------------------------- previews


def _paint(img: np.ndarray, where: np.ndarray, colour: tuple[int, int, int]) -> None:
    img[where] = np.asarray(colour, img.dtype)


def _draw_outline(img: np.ndarray, mask: np.ndarray, width: int) -> None:
    """A ``width``-pixel outline in :data:`OUTLINE`, with a 1-pixel dark edge outside it."""
    m = np.asarray(mask) > 0
    edge = outline(m, width)
    halo = _dilate(m, 1) & ~m
    _paint(img, halo, (0, 0, 0))
    _paint(img, edge, OUTLINE)


def _line_width(h: int, w: int) -> int:
    return max(1, round(max(h, w) / 256))


def overlay(image: ImageLike, mask: Any) -> np.ndarray:
    """A preview of a mask over its image: outside tinted and darkened, an outline around.

    Args:
      image: the source (path, PIL image or array).
      mask: ``H x W`` mask of the image's size; nonzero is inside.

    Returns:
      ``H x W x 3`` uint8.
    """
    a = np.asarray(load_image(image, "source"), np.float32)
    m = np.asarray(mask) > 0
    if m.shape != a.shape[:2]:
        raise InputError(f"mask is {m.shape[1]}x{m.shape[0]} but the image is "
                         f"{a.shape[1]}x{a.shape[0]}: they must be the same size")  # fmt: skip
    out = a.copy()
    out[~m] = 0.35 * a[~m] + 0.25 * np.asarray(TINT, np.float32)
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    _draw_outline(out, m, _line_width(*m.shape))
    return out


def placement_preview(job: Job) -> np.ndarray:
    """The canvas with the placed object: the naive paste, the mask's outline, the centre.

    Shows where a blend of ``job`` (:func:`jaxblend.io.place`) will put the object and how
    large it will be, in a fraction of a second, before any blend runs.

    Returns:
      ``H x W x 3`` uint8 canvas.
    """
    out = np.clip(np.round(job.naive), 0, 255).astype(np.uint8)
    h, w = job.mask.shape
    lw = _line_width(h, w)
    _draw_outline(out, job.mask, lw)
    pl = job.placement
    r, c = pl.top + pl.height // 2, pl.left + pl.width // 2
    arm = max(3, 4 * lw)
    for dr, dc in ((0, 1), (1, 0)):
        for k in range(-arm, arm + 1):
            rr, cc = r + k * dr, c + k * dc
            if 0 <= rr < h and 0 <= cc < w:
                out[rr, cc] = OUTLINE
    return out
