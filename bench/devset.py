"""The development set: real cases with the authors' outputs, and cross pairs built from them.

Each case is a source/mask/target triple and a placement on a 512-pixel canvas (scaled with
``canvas``). ``case1``, ``case2`` and ``case4`` are the authors' own cases at their
placements (``../shared/examples/*/README.md``); case2 and case4 were made with
nearest-neighbour resizing, so their images are resized that way before placing, which
makes the authors' outputs comparable pixel for pixel. The cross pairs put one case's
object into another case's scene; ``boat-photo`` is photo to photo (the motor boat pasted a
second time into its own sea photo).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "examples"
BUNDLED = ROOT / "jaxblend" / "examples"


@dataclass(frozen=True)
class Case:
    """One development case.

    Attributes:
      name: short name used in file names.
      source, target: ``(case folder, file stem)`` of the object's photo and of the scene
        (``mask`` is the source case's ``mask.png``).
      source_size, center: placement on a 512 canvas (long side of the source; its centre's
        row and column), the authors' where they exist.
      nearest: resize with nearest-neighbour (the authors' case2/case4 outputs).
      authors: the case folder whose ``reference_stage{1,2}.png`` are the authors' outputs.
      what: one line for the tables.
    """

    name: str
    source: tuple[str, str]
    target: tuple[str, str]
    source_size: int
    center: tuple[int, int]
    nearest: bool = False
    authors: str | None = None
    what: str = ""


CASES: tuple[Case, ...] = (
    Case("case1", ("case1", "source"), ("case1", "target"), 300, (200, 235), False, "case1",
         "glasses onto a painted portrait (authors' case 1)"),
    Case("case2", ("case2", "source"), ("case2", "target"), 280, (350, 372), True, "case2",
         "motor boat onto an impressionist lake (authors' case 2)"),
    Case("case4", ("case4", "source"), ("case4", "target"), 230, (382, 320), True, "case4",
         "horse carriage onto a country-road painting (authors' case 4)"),
    Case("glasses-lake", ("case1", "source"), ("case2", "target"), 200, (332, 270),
         what="glasses floating on case2's lake (cross pair)"),
    Case("carriage-portrait", ("case4", "source"), ("case1", "target"), 230, (395, 385),
         what="case4's carriage onto case1's portrait (cross pair)"),
    Case("boat-photo", ("case2", "source"), ("case2", "source"), 170, (372, 135),
         what="the motor boat into its own sea photo (photo to photo)"),
)  # fmt: skip


def case_dir(folder: str) -> Path:
    """The folder of a case: ``../shared/examples/<folder>``, else the bundled copy."""
    for base in (SHARED, BUNDLED):
        if (base / folder / "source.png").exists():
            return base / folder
    raise FileNotFoundError(f"case {folder} not found under {SHARED} or {BUNDLED}")


def _resized(path: Path, long_side: int, nearest: bool, mode: str) -> Image.Image:
    im = Image.open(path).convert(mode)
    w, h = im.size
    s = long_side / max(w, h)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    if size == im.size:
        return im
    return im.resize(size, Image.NEAREST if nearest else Image.BICUBIC)


def job(case: Case, canvas: int = 512):
    """The case laid out on a ``canvas``-pixel canvas (a :class:`jaxblend.io.Job`)."""
    from jaxblend.io import place

    s = canvas / 512
    size = max(8, round(case.source_size * s))
    src_dir, tgt_dir = case_dir(case.source[0]), case_dir(case.target[0])
    src = _resized(src_dir / f"{case.source[1]}.png", size, case.nearest, "RGB")
    msk = _resized(src_dir / "mask.png", size, case.nearest, "L")
    tgt = _resized(tgt_dir / f"{case.target[1]}.png", canvas, case.nearest, "RGB")
    return place(
        np.asarray(src),
        np.asarray(tgt),
        np.asarray(msk),
        center=(case.center[0] * s, case.center[1] * s),
        canvas=canvas,
        source_size=size,
    )


def authors(case: Case, canvas: int = 512) -> dict[str, np.ndarray]:
    """The authors' stage-1 and final outputs (resized to the canvas when it is not 512)."""
    out = {}
    if case.authors is None:
        return out
    d = case_dir(case.authors)
    for stage, key in (("stage1", "authors_stage1"), ("stage2", "authors_final")):
        p = d / f"reference_{stage}.png"
        if p.exists():
            im = Image.open(p).convert("RGB")
            if im.size != (canvas, canvas):
                im = im.resize((canvas, canvas), Image.BICUBIC)
            out[key] = np.asarray(im, np.float32)
    return out


def stage1(job, config, vgg, path: Path) -> np.ndarray:
    """The job's stage-1 blend (float) under ``config``, cached as ``path`` (``.npy``):
    loaded when it exists, else blended once (stage 2 off) and saved."""
    path = Path(path)
    if path.exists():
        return np.load(path)
    from jaxblend.blend import blend_job

    r = blend_job(job, config=config.replace(stage2_enabled=False), vgg=vgg)
    out = np.asarray(r.image_float)
    np.save(path, out)
    return out


def stage2_frames(st2, config, vgg, stage1, job, ref, masked: bool) -> tuple[list, float]:
    """Run stage 2 (``st2`` under ``config``) from the cached ``stage1`` blend of ``job``
    against the content reference ``ref``; returns its best iterates after every
    ``config.chunk`` evaluations and the seconds it took (what the bench scripts that
    score stage 2 chunk by chunk share)."""
    import time

    import jax.numpy as jnp

    from jaxblend.blend import _run_stage, vgg_spec

    t, s, m = (jnp.asarray(x, jnp.float32) for x in (job.target, job.source, job.mask))
    frames: list = []
    t0 = time.perf_counter()
    _run_stage(
        "stage2", st2, config, vgg_spec(vgg, config.precision), vgg.params,
        jnp.asarray(stage1), t, m, s, ref, masked=masked, batched=False, progress=None,
        frames=frames,
    )  # fmt: skip
    return frames, time.perf_counter() - t0
