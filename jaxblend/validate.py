"""Checks made before any compute: output paths, numbers and memory.

Every check raises :class:`~jaxblend.errors.InputError` with one line that says what is
wrong and how to fix it, so a bad path or number is refused in a fraction of a second
instead of after minutes of compute (or with a traceback). Nothing here writes anything
that stays: a folder's writability is probed with a temporary file, removed at once, and
folders that do not exist yet are not created.
"""

from __future__ import annotations

import dataclasses
import io as _bytes_io
import math
import numbers
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from jaxblend.errors import InputError

#: Seeds are uint32: jax.random.PRNGKey takes them, and a stack passes them as a uint32 array.
SEED_MAX = 2**32 - 1
#: The largest canvas or source side accepted at all (memory refuses most before it).
MAX_SIDE = 100_000
#: The largest float32: a loss weight above it would be infinite on the device.
F32_MAX = 3.4028234663852886e38
#: Budgets (steps, chunk) stay far inside the int32 evaluation counter.
MAX_STEPS = 10**9
#: Host bytes per canvas pixel of a layout (target, source and mask in float32, the
#: resized target in uint8 and the temporaries of :func:`jaxblend.io.place`).
LAYOUT_BYTES_PER_PIXEL = 64
#: A generous bound on a deep blend's bytes per canvas pixel (XLA's measured figure for
#: stage 1 is about 1.9 kB at 512² with the default settings, README's GPU table); below
#: it the memory check needs no measurement, above it it measures (one small compile).
QUICK_BYTES_PER_PIXEL = 8192
#: The long side of the canvas the memory measurement compiles at, scaled by area.
MEASURE_SIDE = 128


def _fmt_bytes(n: float) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n / 2**10:.1f} KiB"


# --------------------------------------------------------------------------- numbers


def integer(value: Any, name: str, lo: int, hi: int, hint: str = "") -> int:
    """``value`` as an int in ``lo..hi``: an integer, an integral finite float or a string
    of one; bools refused."""
    v: int | None = None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        v = int(value)
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        f = float(value)
        v = int(f) if math.isfinite(f) and f == int(f) else None
    elif isinstance(value, str):
        try:
            v = int(value.strip())
        except ValueError:
            v = None
    if v is None or not lo <= v <= hi:
        tail = f"; {hint}" if hint else ""
        raise InputError(f"{name} must be an integer in {lo}..{hi}, got {value!r}{tail}")
    return v


def number(
    value: Any, name: str, lo: float = -math.inf, hi: float = math.inf, *, lo_open: bool = False
) -> float:
    """``value`` as a finite float in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""
    try:
        v = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError, OverflowError):
        v = math.nan
    if not math.isfinite(v) or v < lo or v > hi or (lo_open and v == lo):
        if hi == math.inf:
            span = f"{'>' if lo_open else '>='} {lo:g}" if lo > -math.inf else ""
        else:
            span = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}]"
        raise InputError(f"{name} must be a finite number {span}, got {value!r}".replace("  ", " "))
    return v


def seed(value: Any, name: str = "seed") -> int:
    """A seed for ``jax.random.PRNGKey``: an integer in ``0..2**32 - 1``."""
    return integer(value, name, 0, SEED_MAX)


def center(value: Any) -> tuple[float, float] | None:
    """``(row, col)`` as two finite floats (``None`` passes: the canvas centre)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.split(",")
    try:
        row, col = (float(c) for c in value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"center must be two numbers (row, col), got {value!r}") from None
    if not (math.isfinite(row) and math.isfinite(col)) or max(abs(row), abs(col)) > 1e9:
        raise InputError(f"center must be two finite numbers (row, col), got {value!r}")
    return row, col


# --------------------------------------------------------------------------- paths


@lru_cache(maxsize=64)
def _writes_rgb(fmt: str) -> bool:
    """Whether Pillow can write an 8-bit RGB image in ``fmt`` (tried on a 1x1 image)."""
    from PIL import Image

    try:
        Image.new("RGB", (1, 1)).save(_bytes_io.BytesIO(), format=fmt)
        return True
    except Exception:  # noqa: BLE001 - no writer, no RGB mode, a missing codec: all "no"
        return False


def image_format(path: Path, option: str) -> str:
    """The Pillow format an output's suffix names, if it can write an RGB image."""
    from PIL import Image

    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or not _writes_rgb(fmt):
        what = f"the suffix {path.suffix!r}" if path.suffix else "no suffix"
        raise InputError(
            f"{option} {path}: {what} names no image format jaxblend can write; "
            "end the name with .png (lossless) or .jpg"
        )
    return fmt


def _existing_ancestor(path: Path) -> Path:
    p = path.absolute()
    while not p.exists():
        if p.parent == p:
            break
        p = p.parent
    return p


def _probe(folder: Path, label: str) -> None:
    """Refuse a folder that cannot take a new file (tries one, removes it at once)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".jaxblend-probe.", dir=folder)
    except OSError as e:
        raise InputError(
            f"{label}: cannot write in {folder} ({e.strerror or e}); choose a folder you can "
            "write to"
        ) from None
    os.close(fd)
    Path(tmp).unlink(missing_ok=True)


def output_folder(path: str | os.PathLike, option: str, file: Path | None = None) -> Path:
    """A folder the run will write into: an existing folder we can write in, or one that
    can be created (its nearest existing ancestor is a folder we can write in). ``file``:
    the output file the folder is for, named in the messages instead."""
    if str(path) == "":
        raise InputError(f"{option} is empty; give a folder")
    p = Path(path)
    label = f"{option} {file if file is not None else p}"
    if p.exists() and not p.is_dir():
        if file is not None:
            raise InputError(f"{label}: {p} is a file, not a folder; give another path")
        raise InputError(f"{label} is a file, not a folder; give a folder name")
    base = _existing_ancestor(p)
    if not base.is_dir():
        raise InputError(
            f"{label}: {base} is a file, so no folder can be made under it; give another path"
        )
    _probe(base, label)
    return p


def output_image(path: str | os.PathLike, option: str) -> Path:
    """An image file the run will write: a known image suffix, not a folder, in a folder
    that exists (or can be created) and takes new files."""
    if str(path) == "":
        raise InputError(f"{option} is empty; give a file name such as out.png")
    p = Path(path)
    if p.is_dir() or str(path).endswith(("/", os.sep)):
        raise InputError(f"{option} {p} is a folder; give a file name such as {p / 'out.png'}")
    image_format(p, option)
    output_folder(p.parent, option, file=p)
    return p


def output_file(
    path: str | os.PathLike, option: str, suffixes: tuple[str, ...] | None = None
) -> Path:
    """A non-image output file (weights): not a folder, in a folder that takes new files,
    ending with one of ``suffixes`` if given."""
    if str(path) == "":
        raise InputError(f"{option} is empty; give a file name")
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{option} {p} is a folder; give a file name such as {p / 'x'}")
    if suffixes is not None and p.suffix.lower() not in suffixes:
        raise InputError(f"{option} {p}: the file must end with {' or '.join(suffixes)}")
    output_folder(p.parent, option, file=p)
    return p


def distinct(paths: dict[str, Any]) -> None:
    """Refuse two outputs of one run that name the same file (one would overwrite the other)."""
    seen: dict[Path, str] = {}
    for option, path in paths.items():
        if path is None:
            continue
        p = Path(path).absolute()
        if p in seen:
            raise InputError(f"{option} and {seen[p]} name the same file {path}; give two names")
        seen[p] = option


# --------------------------------------------------------------------------- memory


def host_available_bytes() -> int | None:
    """Memory the host can still give (``MemAvailable``), or ``None`` if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def _largest_side(side: int, need: float, have: float) -> int:
    """The long side at which ``need`` (proportional to the area) fits in ``have``."""
    return max(8, int(side * math.sqrt(max(have, 1.0) / max(need, 1.0))))


def layout_memory(shape_hw: tuple[int, int]) -> None:
    """Refuse a canvas whose layout arrays alone exceed the host's available memory."""
    h, w = shape_hw
    have = host_available_bytes()
    need = h * w * LAYOUT_BYTES_PER_PIXEL
    if have is not None and need > have:
        raise InputError(
            f"a {h}x{w} canvas needs about {_fmt_bytes(need)} for its image arrays alone, "
            f"more than the {_fmt_bytes(have)} of memory available; lower the canvas "
            f"(--canvas, BlendConfig.canvas) to {_largest_side(max(h, w), need, have)} or less"
        )


_MEASURED: dict[tuple, tuple[int, str]] = {}


def _measured(cfg: Any, vgg: Any, ref: tuple[int, int]) -> tuple[int, str]:
    """:func:`jaxblend.batch._per_job_bytes` at ``ref`` (cached per configuration, network
    and shape: one small compile each)."""
    from jaxblend.batch import _per_job_bytes

    # What the measurement depends on: the stages' terms, the solver and the arithmetic.
    stage = dataclasses.replace(cfg.stage1, steps=1)
    stage2 = dataclasses.replace(cfg.stage2, steps=1) if cfg.stage2_enabled else None
    key = (stage, stage2, cfg.stage2_content, cfg.solver, cfg.history, cfg.precision,
           id(vgg.params), vgg.arch, ref)  # fmt: skip
    if key not in _MEASURED:
        _MEASURED[key] = _per_job_bytes(cfg, vgg, (*ref, 3))
    return _MEASURED[key]


def _ref_shape(h: int, w: int, side: int) -> tuple[int, int]:
    s = side / max(h, w)
    return max(8, round(h * s)), max(8, round(w * s))


#: Bytes per canvas pixel a windowed blend still holds for the whole canvas (target,
#: source, mask, guidance, band, starts and results: about twenty float32 planes, x 3).
CANVAS_BYTES_PER_PIXEL = 256


def _solved_pixels(cfg: Any, vgg: Any, mask: Any) -> int:
    """The largest number of pixels a stage's VGG pass runs on: a windowed stage's window
    area (:func:`jaxblend.window.plan`), else the canvas's."""
    import numpy as np

    from jaxblend import window

    m = np.asarray(mask)
    arch = getattr(vgg, "arch", "vgg16")
    stages = [cfg.stage1] + ([cfg.stage2] if getattr(cfg, "stage2_enabled", True) else [])
    out = 0
    for st in stages:
        geom = window.plan(st, arch, m)
        out = max(out, m.shape[-2] * m.shape[-1] if geom is None else geom.size[0] * geom.size[1])
    return out


def blend_memory(
    cfg: Any,
    shape_hw: tuple[int, int],
    vgg: Any,
    *,
    device: Any = None,
    stack: int = 1,
    option: str = "--canvas",
    mask: Any = None,
    at_least: bool = False,
) -> None:
    """Refuse a deep blend whose estimated memory exceeds what the device has free.

    The estimate is :func:`jaxblend.batch._per_job_bytes` (XLA's memory analysis of each
    stage's compiled iteration, the larger; the per-job figure ``--batch-size auto``
    uses), measured on two
    small canvases of the same aspect (long sides ``MEASURE_SIDE / 2`` and
    :data:`MEASURE_SIDE`) and extended linearly in the pixel count (a fixed part plus bytes
    per pixel: 3.8 kB per pixel with the default settings on CPU). It is measured only when
    the generous bound :data:`QUICK_BYTES_PER_PIXEL` does not already show that the job
    fits, so an ordinary canvas costs nothing. ``vgg`` may be a loader (called only when
    measuring). ``stack``: jobs solved together, each needing the per-job bytes.
    ``mask``: the job's ``H x W`` canvas mask, when known: stages that run on a window
    (:func:`jaxblend.window.plan`) need the bytes per pixel of the window's area only, plus
    :data:`CANVAS_BYTES_PER_PIXEL` of the canvas for its constant arrays. ``at_least``:
    only refuse a canvas whose arrays alone (:data:`CANVAS_BYTES_PER_PIXEL`) do not fit —
    the check before the layout, when the mask (and so the window) is not known yet.
    """
    import jax

    from jaxblend.batch import _available_bytes

    h, w = (int(v) for v in shape_hw)
    dev = device if device is not None else jax.local_devices()[0]
    have = _available_bytes(dev)
    history = int(getattr(cfg, "history", 10))
    px = h * w
    if at_least:
        need = CANVAS_BYTES_PER_PIXEL * px * stack
        if need <= have:
            return
        side = max(8, int(max(h, w) * math.sqrt(have / need)))
        raise InputError(
            f"a {h}x{w} canvas needs about {_fmt_bytes(need)} for its arrays alone "
            f"({CANVAS_BYTES_PER_PIXEL} bytes per pixel), more than the {_fmt_bytes(have)} "
            f"{dev.platform}:{getattr(dev, 'id', 0)} has free; lower the canvas ({option}) "
            f"to {side} or less"
        )
    canvas_bytes = 0
    if mask is not None:
        px, canvas_bytes = _solved_pixels(cfg, vgg, mask), CANVAS_BYTES_PER_PIXEL * h * w
    if (px * (QUICK_BYTES_PER_PIXEL + 48 * history) + canvas_bytes) * stack <= have:
        return
    model = vgg if hasattr(vgg, "params") else vgg()
    base = cfg
    small, big = _ref_shape(h, w, MEASURE_SIDE // 2), _ref_shape(h, w, MEASURE_SIDE)
    b_small, how = _measured(base, model, small)
    b_big, _ = _measured(base, model, big)
    px_small, px_big = small[0] * small[1], big[0] * big[1]
    per_px = max((b_big - b_small) / max(px_big - px_small, 1), b_big / px_big / 4, 1.0)
    fixed = max(b_big - per_px * px_big, 0.0)
    need = (fixed + per_px * px + canvas_bytes) * stack
    if need <= have:
        return
    where = f"{dev.platform}:{getattr(dev, 'id', 0)}"
    jobs = f" for a stack of {stack} jobs" if stack > 1 else ""
    px_max = max((have / stack - fixed) / per_px, 64.0)
    side = max(8, int(max(h, w) * math.sqrt(px_max / px)))
    fix = f"lower the canvas ({option}) to {side} or less"
    if stack > 1:
        fix += " or the batch size (--batch-size)"
    raise InputError(
        f"a {h}x{w} canvas needs about {_fmt_bytes(need)}{jobs} ("
        f"{per_px / 1024:.1f} KiB per pixel, {how} at {big[0]}x{big[1]} and {small[0]}x"
        f"{small[1]}), more than the {_fmt_bytes(have)} {where} has free; {fix}"
    )
