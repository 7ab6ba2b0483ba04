"""Image I/O and placement of a source object on the target canvas.

All blending happens on the *canvas*: the target resized so that its long side is
``canvas`` pixels (aspect ratio kept). The source and its mask are resized so that their
long side is ``source_size`` (aspect kept) and the source's centre is put at
``center=(row, col)`` of the canvas, its top-left corner at ``int(center - size / 2)`` as
in the authors' code (github.com/owenzlz/DeepImageBlending), so results compare pixel for
pixel with theirs when the images are square.

Images are float32 arrays ``H x W x 3`` with values in ``[0, 255]``; masks are float32
``H x W`` arrays of 0 and 1.

Inputs: files of every mode Pillow opens (8-bit, 16-bit grey ``I;16`` scaled from 0–65535,
32-bit ``I`` read as 16-bit, float ``F``, palette, CMYK, grey/RGB with alpha), turned
upright by their EXIF orientation tag; or arrays, under one rule (:func:`image_array`):
``uint8`` and other integer arrays are 0–255, ``bool`` is 0/1, float arrays are 0–255 and
one whose maximum is in ``(0, 1]`` is refused as ambiguous (a 0–1 image read as 0–255
would come out black) unless ``value_range`` says its scale. Float masks are 0–1 when
their maximum is at most 1 (a soft mask of 0.3 is inside, not empty), 0–255 otherwise.
Files over Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``, 89.5
megapixels by default) are refused with their size; ``JAXBLEND_MAX_IMAGE_PIXELS=N`` (0: no
limit) allows larger ones. Resizing uses Pillow's bicubic filter; the mask is resized the
same way and a pixel is inside when its value, on a 0–255 scale, exceeds ``mask_threshold``
(default 0: every pixel that stays nonzero is inside). Without a mask, the source's alpha
channel is the mask (an RGBA or grey-alpha PNG cutout), under the same threshold.
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from jaxblend.errors import InputError, OutputError

ImageLike = Any  # path, PIL image or array

EXAMPLES_DIR = Path(__file__).parent / "examples"


MAX_PIXELS_ENV = "JAXBLEND_MAX_IMAGE_PIXELS"
_OPEN_LOCK = threading.Lock()  # Image.MAX_IMAGE_PIXELS is lifted while a header is read
_HIGH_DEPTH = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def max_image_pixels() -> int | None:
    """The largest image (in pixels) that is opened: ``$JAXBLEND_MAX_IMAGE_PIXELS`` if set
    (0 or ``none``: no limit), else Pillow's decompression-bomb limit
    ``PIL.Image.MAX_IMAGE_PIXELS`` (``None``: no limit)."""
    env = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not env:
        limit = Image.MAX_IMAGE_PIXELS
        return None if limit is None else int(limit)
    if env.lower() in ("none", "off", "0"):
        return None
    try:
        n = float(env)
    except ValueError:
        n = float("nan")
    if not (math.isfinite(n) and n >= 0):
        raise InputError(f"{MAX_PIXELS_ENV} must be a number of pixels (0: no limit), got {env!r}")
    return int(n) if n >= 1 else None


def _check_pixels(size: tuple[int, int], what: str, p: Path) -> None:
    limit = max_image_pixels()
    w, h = size
    if limit is not None and w * h > limit:

        def mp(n: int) -> str:
            return f"{n / 1e6:.1f} megapixels" if n >= 100_000 else f"{n} pixels"

        raise InputError(
            f"{what} file {p} is {w}x{h} = {mp(w * h)}, over the limit of {mp(limit)} "
            f"(Pillow's guard against decompression bombs); if you trust the file, allow it "
            f"with {MAX_PIXELS_ENV}={w * h} (0: no limit)"
        )


def _upright(im: Image.Image) -> Image.Image:
    """The image turned by its EXIF orientation tag (2-8), as viewers show it."""
    try:
        orientation = im.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - unreadable EXIF: keep the pixels as stored
        return im
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        try:
            return ImageOps.exif_transpose(im)
        except Exception:  # noqa: BLE001
            return im
    return im


def _header(p: Path, what: str) -> Image.Image:
    """The image file opened lazily (header read, pixels not decoded), size checked."""
    if not p.exists():
        raise InputError(f"{what} file not found: {p}")
    if p.is_dir():
        raise InputError(f"{what} {p} is a folder; give an image file")
    try:
        with _OPEN_LOCK:  # our own size check below, with the size and the way round it
            saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                im = Image.open(p)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{what} file {p} is not a readable image ({e})") from None
    except Exception as e:  # noqa: BLE001 - a broken file can trip any decoder error
        raise InputError(
            f"{what} file {p} is not a readable image ({type(e).__name__}: {e})"
        ) from None
    try:
        _check_pixels(im.size, what, p)
    except BaseException:
        im.close()
        raise
    return im


def canvas_shape(target: ImageLike, canvas: int | None) -> tuple[int, int]:
    """``(rows, cols)`` of the canvas :func:`place` makes from ``target``, read from the
    file's header only (nothing decoded), so a memory check can come before the layout."""
    if isinstance(target, (str, os.PathLike)):
        im = _header(Path(target), "target")
        w, h = im.size
        try:
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # turned by a quarter
                w, h = h, w
        except Exception:  # noqa: BLE001 - unreadable EXIF: as stored
            pass
        im.close()
    elif isinstance(target, Image.Image):
        w, h = target.size
    else:
        shape = np.shape(target)
        if len(shape) < 2:
            raise InputError(f"target array must be HxW or HxWx3, got shape {shape}")
        h, w = shape[:2]
    if canvas is None:
        return int(h), int(w)
    cw, ch = _fit_long_side((w, h), int(canvas))
    return ch, cw


def _open_file(p: Path, what: str) -> Image.Image:
    im = _header(p, what)
    try:
        im.load()
    except BaseException as e:
        im.close()
        if isinstance(e, MemoryError):
            raise InputError(f"{what} file {p} is too large to decode in memory") from None
        if isinstance(e, (OSError, SyntaxError, ValueError)):
            raise InputError(f"{what} file {p} is not a readable image ({e})") from None
        if isinstance(e, Exception):  # a broken file can trip any decoder error
            raise InputError(
                f"{what} file {p} is not a readable image ({type(e).__name__}: {e})"
            ) from None
        raise
    return im


def _check_range(value_range: Any, what: str) -> tuple[float, float] | None:
    if value_range is None:
        return None
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise InputError(f"value_range must be (low, high), got {value_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise InputError(f"value_range must be two finite numbers, low < high; got {value_range!r}")
    return lo, hi


def _scaled(arr: np.ndarray, lo: float, hi: float, what: str) -> np.ndarray:
    """``arr`` on a ``lo..hi`` scale as uint8 0-255 (values beyond it by more than half a
    grey level of the scale are refused)."""
    a = arr.astype(np.float64)
    slack = (hi - lo) / 510.0
    amin, amax = float(a.min()), float(a.max())
    if amin < lo - slack or amax > hi + slack:
        raise InputError(
            f"{what} has values {amin:g}..{amax:g}, outside its value range {lo:g}..{hi:g}; "
            "pass the range it uses (value_range=(low, high))"
        )
    return np.clip(np.round((a - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def image_array(
    x: Any, what: str = "image", value_range: Any = None, noun: str = "array"
) -> np.ndarray:
    """An image array (``H x W``, ``H x W x 1|2|3|4``) as uint8 0-255, under one rule.

    ``value_range=(low, high)`` maps ``low`` to 0 and ``high`` to 255. Without it: ``bool``
    is 0/1; integer arrays are 0-255 (larger values are refused: give their range, e.g.
    ``(0, 65535)``); float arrays are 0-255, and one whose maximum lies in ``(0, 1]`` is
    refused, since it could be a 0-1 image (which 0-255 would turn black) or a very dark
    0-255 one: say which with ``value_range=(0, 1)`` or ``(0, 255)``.
    """
    arr = np.asarray(x)
    if (
        arr.dtype == object
        or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_)
        or np.issubdtype(arr.dtype, np.complexfloating)
    ):
        raise InputError(f"{what} array must hold numbers, got dtype {arr.dtype}")
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (1, 2, 3, 4)):
        raise InputError(f"{what} array must be HxW or HxWx3 (or x1, x2, x4), got {arr.shape}")
    if arr.size == 0 or min(arr.shape[:2]) < 1:
        raise InputError(f"{what} array is empty (shape {arr.shape})")
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise InputError(f"{what} array contains NaN or infinite values")
    rng = _check_range(value_range, what)
    label = f"{what} {noun}"
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255 if rng is None else _scaled(arr, *rng, label)
    if rng is not None:
        return _scaled(arr, *rng, label)
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.integer):
        amin, amax = int(arr.min()), int(arr.max())
        if amin < 0 or amax > 255:
            raise InputError(
                f"{arr.dtype} {what} array has values {amin}..{amax}, outside 0..255; pass "
                "its range, e.g. value_range=(0, 65535) for 16-bit"
            )
        return arr.astype(np.uint8)
    amax = float(arr.max())
    if 0 < amax <= 1:
        how = (
            "pass"
            if noun == "array"
            else "save it with 8 bits per channel, or load it from Python with"
        )
        raise InputError(
            f"float {label} has values in [0, 1] (max {amax:g}), but float images are read "
            f"as 0-255; {how} value_range=(0, 1) if it is a 0-1 image, or (0, 255) if it "
            "really is that dark"
        )
    return _scaled(arr, 0.0, 255.0, label)


def mask_array(x: Any, what: str = "mask") -> np.ndarray:
    """A mask array as uint8 0-255: ``bool`` 0/1; float 0-1 when its maximum is at most 1,
    else 0-255; integers 0-255 (0-65535 when larger); any nonzero value stays nonzero."""
    arr = np.asarray(x)
    if (
        arr.dtype == object
        or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_)
        or np.issubdtype(arr.dtype, np.complexfloating)
    ):
        raise InputError(f"{what} array must hold numbers, got dtype {arr.dtype}")
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (1, 2, 3, 4)):
        raise InputError(f"{what} array must be HxW (or HxWxC), got shape {arr.shape}")
    if arr.size == 0:
        raise InputError(f"{what} array is empty (shape {arr.shape})")
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise InputError(f"{what} array contains NaN or infinite values")
    if arr.dtype == np.uint8:
        return arr
    a = arr.astype(np.float64)
    amin, amax = float(a.min()), float(a.max())
    if amin < 0:
        raise InputError(f"{what} array has negative values (min {amin:g}); a mask is >= 0")
    if arr.dtype == np.bool_ or (np.issubdtype(arr.dtype, np.floating) and amax <= 1):
        scale = 255.0
    elif amax <= 255:
        scale = 1.0
    elif np.issubdtype(arr.dtype, np.integer) and amax <= 65535:
        scale = 255.0 / 65535.0
    else:
        raise InputError(f"{what} array has values up to {amax:g}; use 0-1, 0-255 or 0-65535")
    out = np.clip(np.round(a * scale), 0, 255).astype(np.uint8)
    out[(a > 0) & (out == 0)] = 1  # faint but nonzero: still inside at threshold 0
    return out


def _from_high_depth(im: Image.Image, what: str, mask: bool, value_range: Any) -> Image.Image:
    """16-bit, 32-bit integer and float images (one channel) as 8-bit grey."""
    arr = np.asarray(im)
    if mask:
        if im.mode == "F" or value_range is not None:
            return Image.fromarray(mask_array(arr, what))
        a = arr.astype(np.int64)
        if a.min() < 0 or a.max() > 65535:
            raise InputError(f"{what} ({im.mode}) has values outside 0..65535")
        out = np.round(a * (255.0 / 65535.0)).astype(np.uint8)
        out[(a > 0) & (out == 0)] = 1
        return Image.fromarray(out)
    if im.mode != "F" and value_range is None:
        value_range = (0, 65535)  # I;16 and I: 16-bit grey, as PNG and TIFF store it
    noun = "image (32-bit float)" if im.mode == "F" else f"image ({im.mode})"
    return Image.fromarray(image_array(arr, what, value_range, noun=noun))


def _open(x: ImageLike, what: str, *, mask: bool = False, value_range: Any = None) -> Image.Image:
    """A path, PIL image or array as a PIL image of 8 bits per channel, upright."""
    if isinstance(x, (str, os.PathLike)):
        im = _upright(_open_file(Path(x), what))
    elif isinstance(x, Image.Image):
        im = _upright(x)
    elif not (isinstance(x, (np.ndarray, list, tuple)) or hasattr(x, "__array__")):
        raise InputError(f"{what} must be a path, a PIL image or an array, got {type(x).__name__}")
    else:
        try:
            arr = mask_array(x, what) if mask else image_array(x, what, value_range)
        except InputError:
            raise
        except (TypeError, ValueError, OverflowError) as e:
            raise InputError(f"{what} is not an image array ({e})") from None
        return Image.fromarray(arr)
    if im.mode in _HIGH_DEPTH:  # value_range applies to these and to arrays only
        return _from_high_depth(im, what, mask, value_range)
    return im


def load_image(x: ImageLike, what: str = "image", value_range: Any = None) -> Image.Image:
    """Open a path, PIL image or array as an RGB PIL image (alpha dropped, grey expanded).

    Arrays follow :func:`image_array` (``value_range`` gives their scale); files of every
    mode Pillow opens are read (16-bit grey scaled from 0-65535), turned upright by EXIF.
    """
    im = _open(x, what, value_range=value_range)
    if im.mode != "RGB":
        try:
            im = im.convert("RGB")
        except (ValueError, OSError) as e:
            raise InputError(
                f"{what}: cannot convert a {im.mode} image to RGB ({e}); save it as RGB"
            ) from None
    return im


def load_mask(x: ImageLike, what: str = "mask") -> Image.Image:
    """Open a mask as an 8-bit grey image: any nonzero pixel marks the object.

    Colour masks count a pixel as inside when any channel is nonzero; an RGBA/LA mask
    uses its alpha channel if the colour channels are constant. Arrays follow
    :func:`mask_array`; 16-bit masks are scaled from 0-65535, nonzero kept nonzero.
    """
    im = _open(x, what, mask=True)
    if im.mode in ("RGBA", "LA"):
        alpha = np.asarray(im.getchannel("A"))
        colour = np.asarray(im.convert("L"))
        arr = alpha if colour.min() == colour.max() else colour * (alpha > 0)
    elif im.mode in ("1", "L"):
        arr = np.asarray(im.convert("L"))
    else:
        try:
            arr = np.asarray(im.convert("RGB")).max(axis=-1)
        except (ValueError, OSError) as e:
            raise InputError(f"{what}: cannot read a {im.mode} image as a mask ({e})") from None
    return Image.fromarray(np.asarray(arr, np.uint8))


def has_alpha(im: Image.Image) -> bool:
    """Whether an image carries transparency (an alpha channel or a palette/grey key)."""
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info


def load_alpha(x: ImageLike, what: str = "source", value_range: Any = None) -> Image.Image | None:
    """The alpha channel of an image as an 8-bit grey image, or ``None`` if it has none."""
    im = _open(x, what, value_range=value_range)
    if not has_alpha(im):
        return None
    if im.mode not in ("RGBA", "LA"):
        im = im.convert("RGBA")
    return im.getchannel("A")


def object_mask(
    source: ImageLike, mask: ImageLike | None = None, value_range: Any = None
) -> Image.Image:
    """The object's mask as an 8-bit grey image: ``mask`` if given, else the source's alpha.

    Raises:
      InputError: no mask and a source without alpha, or an alpha channel that is opaque
        everywhere (it marks no object).
    """
    if mask is not None:
        return load_mask(mask, "mask")
    alpha = load_alpha(source, "source", value_range)
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
    value_range: tuple[float, float] | None = None,
) -> Job:
    """Lay a blend job out on the target canvas.

    Args:
      source, target, mask: paths, PIL images or arrays (``H x W x 3`` 0–255 / ``H x W``).
        ``mask=None`` takes the source's alpha channel (an RGBA cutout) as the mask.
        Arrays follow :func:`image_array` and :func:`mask_array` (a float image with values
        in ``[0, 1]`` needs ``value_range``; a float mask in ``[0, 1]`` is 0–1).
      center: ``(row, col)`` of the canvas where the source's centre goes; default: the
        canvas centre.
      canvas: long side of the canvas in pixels (the target is resized to it, aspect
        kept); ``None`` keeps the target's size.
      source_size: long side of the source and mask after resizing (aspect kept);
        ``None`` keeps their size.
      mask_threshold: after resizing, a pixel is inside when its mask value (0–255; a
        mask whose maximum is below 255 is scaled to it) exceeds this; ``0`` (default)
        counts every nonzero pixel, ``127`` cuts an anti-aliased or JPEG mask at mid-grey.
      value_range: ``(low, high)``, the scale of the source and target arrays (and of
        float or 16-bit images), mapped to 0–255: ``(0, 1)`` for float images in 0–1,
        ``(0, 65535)`` for 16-bit arrays. ``None``: the rule of :func:`image_array`.

    Returns:
      a :class:`Job`.

    Raises:
      InputError: unreadable inputs, no mask and no alpha channel, mask and source of
        different sizes, an empty mask, a mask that covers the whole canvas, or a
        placement outside the canvas.
    """
    from jaxblend import validate

    if canvas is not None:
        canvas = validate.integer(canvas, "canvas", 8, validate.MAX_SIDE)
    if source_size is not None:
        source_size = validate.integer(source_size, "source_size", 1, validate.MAX_SIDE)
    mask_threshold = validate.number(mask_threshold, "mask_threshold", 0, 255)
    if mask_threshold >= 255:
        raise InputError(f"mask threshold must be in [0, 255), got {mask_threshold:g}")
    center = validate.center(center)
    _check_range(value_range, "value_range")  # refused even where no array needs it
    src = load_image(source, "source", value_range)
    tgt = load_image(target, "target", value_range)
    msk = object_mask(source, mask, value_range)
    if src.size != msk.size:
        raise InputError(
            f"mask is {msk.size[0]}x{msk.size[1]} but source is {src.size[0]}x{src.size[1]} "
            "(width x height); give a mask of the same size as the source"
        )
    peak = int(np.asarray(msk).max())
    if peak == 0:
        raise InputError("mask is all zero: mark the object with nonzero pixels")
    if canvas is not None:
        size = _fit_long_side(tgt.size, canvas)
        validate.layout_memory((size[1], size[0]))
        if size != tgt.size:
            tgt = tgt.resize(size, Image.BICUBIC)
    else:
        validate.layout_memory((tgt.size[1], tgt.size[0]))
    cw, ch = tgt.size
    if source_size is not None:
        size = _fit_long_side(src.size, source_size)
        if size[0] > cw or size[1] > ch:  # refused before resizing (it could be huge)
            raise InputError(
                f"source_size {source_size} makes the source {size[1]}x{size[0]}, larger than "
                f"the {ch}x{cw} canvas; use a smaller --source-size"
            )
        if size != src.size:
            src = src.resize(size, Image.BICUBIC)
            msk = msk.resize(size, Image.BICUBIC)
    sw, sh = src.size
    row, col = (float(ch // 2), float(cw // 2)) if center is None else center
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
    arr = image if isinstance(image, np.ndarray) and image.dtype == np.uint8 else to_uint8(image)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"cannot tell the image format from {path.name}; use .png or .jpg")
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OutputError(f"cannot write {path} ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            Image.fromarray(arr).save(f, format=fmt)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"cannot write {path} ({e.strerror or e})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
