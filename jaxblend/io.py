"""Image I/O and placement of a source object on the target canvas.

All blending happens on the *canvas*: the target resized so that its long side is
``canvas`` pixels (aspect ratio kept). The source and its mask are resized so that their
long side is ``source_size`` (aspect kept) and the source's centre is put at
``center=(row, col)`` of the canvas, its top-left corner at ``int(center - size / 2)`` as
in the authors' code (github.com/owenzlz/DeepImageBlending), so results compare pixel for
pixel with theirs when the images are square.

Images are float32 arrays ``H x W x 3`` with values in ``[0, 255]``; masks are float32
``H x W`` arrays of 0 and 1. Resizing uses Pillow's bicubic filter; the mask is resized the
same way and a pixel is inside when its value, on a 0–255 scale, exceeds ``mask_threshold``
(default 0: every pixel that stays nonzero is inside). Without a mask, the source's alpha
channel is the mask (an RGBA or grey-alpha PNG cutout), under the same threshold.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from jaxblend.errors import InputError

ImageLike = Any  # path, PIL image or array

EXAMPLES_DIR = Path(__file__).parent / "examples"


def _open(x: ImageLike, what: str) -> Image.Image:
    if isinstance(x, Image.Image):
        return x
    if isinstance(x, (str, os.PathLike)):
        p = Path(x)
        if not p.exists():
            raise InputError(f"{what} file not found: {p}")
        try:
            im = Image.open(p)
            im.load()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise InputError(f"{what} file {p} is not a readable image ({e})") from None
        return im
    arr = np.asarray(x)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4)):
        raise InputError(f"{what} array must be HxW or HxWx3, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{what} array contains NaN or infinite values")
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.dtype != np.uint8:
        arr = np.clip(np.round(arr.astype(np.float64)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def load_image(x: ImageLike, what: str = "image") -> Image.Image:
    """Open a path, PIL image or array as an RGB PIL image (alpha dropped, grey expanded)."""
    im = _open(x, what)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return im


def load_mask(x: ImageLike, what: str = "mask") -> Image.Image:
    """Open a mask as an 8-bit grey image: any nonzero pixel marks the object.

    Colour masks count a pixel as inside when any channel is nonzero; an RGBA/LA mask
    uses its alpha channel if the colour channels are constant.
    """
    im = _open(x, what)
    if im.mode in ("RGBA", "LA"):
        alpha = np.asarray(im.getchannel("A"))
        colour = np.asarray(im.convert("L"))
        arr = alpha if colour.min() == colour.max() else colour * (alpha > 0)
    elif im.mode in ("1", "L"):
        arr = np.asarray(im.convert("L"))
    elif im.mode in ("I", "I;16", "F"):
        arr = (np.asarray(im) != 0).astype(np.uint8) * 255
    else:
        arr = np.asarray(im.convert("RGB")).max(axis=-1)
    return Image.fromarray(np.asarray(arr, np.uint8))


def has_alpha(im: Image.Image) -> bool:
    """Whether an image carries transparency (an alpha channel or a palette/grey key)."""
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info


def load_alpha(x: ImageLike, what: str = "source") -> Image.Image | None:
    """The alpha channel of an image as an 8-bit grey image, or ``None`` if it has none."""
    im = _open(x, what)
    if not has_alpha(im):
        return None
    if im.mode not in ("RGBA", "LA"):
        im = im.convert("RGBA")
    return im.getchannel("A")


def object_mask(source: ImageLike, mask: ImageLike | None = None) -> Image.Image:
    """The object's mask as an 8-bit grey image: ``mask`` if given, else the source's alpha.

    Raises:
      InputError: no mask and a source without alpha, or an alpha channel that is opaque
        everywhere (it marks no object).
    """
    if mask is not None:
        return load_mask(mask, "mask")
    alpha = load_alpha(source, "source")
    if alpha is None:
        raise InputError(
            "no mask given and the source has no alpha channel: give a mask (--mask FILE), "
            "or make one with `jaxblend mask --source SOURCE -o mask.png`"
        )
    if np.asarray(alpha).min() == 255:
        raise InputError(
            "no mask given and the source's alpha channel is opaque everywhere, so it marks no "
            "object: give a mask (--mask FILE), or make one with `jaxblend mask`"
        )
    return alpha


def inside(mask: np.ndarray, threshold: float = 0, peak: float | None = None) -> np.ndarray:
    """Boolean mask: pixels whose value, scaled so that ``peak`` is 255, exceed ``threshold``.

    ``peak`` defaults to the mask's maximum (so a 0/1 mask counts as 0/255); with
    ``threshold=0`` every nonzero pixel is inside, whatever the scale.
    """
    m = np.asarray(mask)
    if threshold <= 0:
        return m > 0
    peak = float(m.max()) if peak is None else float(peak)
    return m.astype(np.float32) * np.float32(255.0 / max(peak, 1e-12)) > np.float32(threshold)


def to_array(im: Image.Image) -> np.ndarray:
    """PIL RGB image -> float32 H x W x 3 in [0, 255]."""
    return np.asarray(im, dtype=np.float32)


def _fit_long_side(size_wh: tuple[int, int], long_side: int) -> tuple[int, int]:
    w, h = size_wh
    s = long_side / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


class Placement(NamedTuple):
    """Where the source lies on the canvas: top-left corner and size, in canvas pixels."""

    top: int
    left: int
    height: int
    width: int


@dataclass(frozen=True)
class Job:
    """One blend job laid out on the canvas (all arrays are NumPy, float32).

    Attributes:
      target: ``H x W x 3`` canvas, 0–255.
      source: ``H x W x 3``, the resized source pasted at its place, the target elsewhere.
      mask: ``H x W``, 1 inside the object, 0 outside.
      placement: where the source's box lies on the canvas.
    """

    target: np.ndarray
    source: np.ndarray
    mask: np.ndarray
    placement: Placement

    @property
    def naive(self) -> np.ndarray:
        """The naive copy-paste: source inside the mask, target outside."""
        m = self.mask[..., None]
        return self.source * m + self.target * (1 - m)


def place(
    source: ImageLike,
    target: ImageLike,
    mask: ImageLike | None = None,
    *,
    center: tuple[int, int] | None = None,
    canvas: int | None = 512,
    source_size: int | None = None,
    mask_threshold: float = 0,
) -> Job:
    """Lay a blend job out on the target canvas.

    Args:
      source, target, mask: paths, PIL images or arrays (``H x W x 3`` 0–255 / ``H x W``).
        ``mask=None`` takes the source's alpha channel (an RGBA cutout) as the mask.
      center: ``(row, col)`` of the canvas where the source's centre goes; default: the
        canvas centre.
      canvas: long side of the canvas in pixels (the target is resized to it, aspect
        kept); ``None`` keeps the target's size.
      source_size: long side of the source and mask after resizing (aspect kept);
        ``None`` keeps their size.
      mask_threshold: after resizing, a pixel is inside when its mask value (0–255; a
        mask whose maximum is below 255 is scaled to it) exceeds this; ``0`` (default)
        counts every nonzero pixel, ``127`` cuts an anti-aliased or JPEG mask at mid-grey.

    Returns:
      a :class:`Job`.

    Raises:
      InputError: unreadable inputs, no mask and no alpha channel, mask and source of
        different sizes, an empty mask, a mask that covers the whole canvas, or a
        placement outside the canvas.
    """
    src = load_image(source, "source")
    tgt = load_image(target, "target")
    msk = object_mask(source, mask)
    if not 0 <= float(mask_threshold) < 255:
        raise InputError(f"mask threshold must be in [0, 255), got {mask_threshold}")
    if src.size != msk.size:
        raise InputError(
            f"mask is {msk.size[0]}x{msk.size[1]} but source is {src.size[0]}x{src.size[1]} "
            "(width x height); give a mask of the same size as the source"
        )
    peak = int(np.asarray(msk).max())
    if peak == 0:
        raise InputError("mask is all zero: mark the object with nonzero pixels")
    if canvas is not None:
        if int(canvas) < 8:
            raise InputError(f"canvas must be at least 8 pixels, got {canvas}")
        size = _fit_long_side(tgt.size, int(canvas))
        if size != tgt.size:
            tgt = tgt.resize(size, Image.BICUBIC)
    if source_size is not None:
        if int(source_size) < 1:
            raise InputError(f"source_size must be positive, got {source_size}")
        size = _fit_long_side(src.size, int(source_size))
        if size != src.size:
            src = src.resize(size, Image.BICUBIC)
            msk = msk.resize(size, Image.BICUBIC)
    cw, ch = tgt.size
    sw, sh = src.size
    if center is None:
        center = (ch // 2, cw // 2)
    try:
        row, col = (float(c) for c in center)
    except (TypeError, ValueError):
        raise InputError(f"center must be two numbers (row, col), got {center!r}") from None
    top, left = int(row - sh / 2), int(col - sw / 2)
    if top < 0 or left < 0 or top + sh > ch or left + sw > cw:
        raise InputError(
            f"the {sh}x{sw} source centred at (row {row:g}, col {col:g}) spans rows "
            f"{top}..{top + sh - 1}, cols {left}..{left + sw - 1}, outside the {ch}x{cw} "
            "canvas; move --center or reduce --source-size"
        )
    tgt_a = to_array(tgt)
    m_small = inside(np.asarray(msk), mask_threshold, peak).astype(np.float32)
    mask_c = np.zeros((ch, cw), np.float32)
    mask_c[top : top + sh, left : left + sw] = m_small
    if not mask_c.any():
        raise InputError(
            "mask is empty after resizing and thresholding: use a larger --source-size or a "
            "lower --mask-threshold"
        )
    if mask_c.all():
        raise InputError(
            "mask covers the whole canvas, so there is no target boundary to blend into; "
            "use a smaller --source-size or a larger --canvas"
        )
    src_c = tgt_a.copy()
    src_c[top : top + sh, left : left + sw] = to_array(src)
    return Job(tgt_a, src_c, mask_c, Placement(top, left, sh, sw))


def to_uint8(image: Any) -> np.ndarray:
    """Round and clip a float image in [0, 255] to uint8."""
    return np.clip(np.round(np.asarray(image, np.float32)), 0, 255).astype(np.uint8)


def _umask() -> int:
    """The process's umask, read without changing it where the system allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but brief)
    os.umask(old)
    return old


def save_image(image: Any, path: str | os.PathLike) -> Path:
    """Write an image atomically: a temporary file in the same folder, then rename.

    A reader never sees a partial file, and an interrupted write leaves the old file (or
    nothing) in place. The file gets the mode ``open()`` would give it (``0o666`` less the
    umask: 0644 under umask 022), not the 0600 of the temporary file. The format follows
    the extension (PNG, JPEG, ...).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = image if isinstance(image, np.ndarray) and image.dtype == np.uint8 else to_uint8(image)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"cannot tell the image format from {path.name}; use .png or .jpg")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            Image.fromarray(arr).save(f, format=fmt)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
