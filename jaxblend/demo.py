"""The bundled example: case1 of the authors' repository, blended end to end.

``jaxblend demo`` lays the glasses of ``examples/case1`` onto the painted portrait at the
authors' placement (scaled to the demo canvas), runs Poisson editing and both deep-blend
stages, and writes the result and a side-by-side figure
(source | target | naive paste | Poisson | stage 1 | final).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jaxblend.config import BlendConfig
from jaxblend.io import EXAMPLES_DIR, load_image, place, save_image, to_uint8

CASE1 = EXAMPLES_DIR / "case1"
# The authors' placement on their 512 canvas: source 300 px, centre (row 200, col 235).
AUTHORS = {"canvas": 512, "source_size": 300, "center": (200, 235)}
# The demo's canvas: the authors' own, where the defaults were calibrated (on a smaller
# canvas the same defaults stylise thin objects such as the glasses more than they
# should); about two minutes on a 2-core CPU.
DEMO_CANVAS = AUTHORS["canvas"]


def demo_placement(canvas: int = DEMO_CANVAS) -> dict:
    """The authors' case1 placement scaled to a ``canvas``-pixel canvas."""
    s = canvas / AUTHORS["canvas"]
    row, col = AUTHORS["center"]
    return {
        "canvas": canvas,
        "source_size": round(AUTHORS["source_size"] * s),
        "center": (row * s, col * s),
    }


def figure(panels: list[tuple[str, np.ndarray]], path: str | Path) -> Path:
    """Save labelled panels side by side (all resized to the first panel's height)."""
    h = panels[0][1].shape[0]
    ims = []
    for _, a in panels:
        im = Image.fromarray(to_uint8(a))
        w = round(im.width * h / im.height)
        ims.append(im.resize((w, h), Image.BICUBIC) if im.height != h else im)
    pad, label_h = 6, 18
    width = sum(im.width for im in ims) + pad * (len(ims) + 1)
    canvas = Image.new("RGB", (width, h + label_h + 2 * pad), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    x = pad
    for (name, _), im in zip(panels, ims):
        canvas.paste(im, (x, pad + label_h))
        draw.text((x + 2, pad), name, fill="black", font=font)
        x += im.width + pad
    return save_image(np.asarray(canvas), path)


def run_demo(
    out_dir: str | Path = "demo_out",
    *,
    steps: list[int] | None = None,
    canvas: int = DEMO_CANVAS,
    progress=None,
) -> list[Path]:
    """Blend case1 and write ``result.png``, ``stage1.png``, ``poisson.png``, ``figure.png``.

    ``progress`` is the blend's progress callback; a :class:`jaxblend.progress.BlendProgress`
    also gets a line for each phase.
    """
    from jaxblend.blend import blend_job
    from jaxblend.poisson import poisson_solve
    from jaxblend.progress import BlendProgress
    from jaxblend.vgg import load_vgg

    out = Path(out_dir)
    pl = demo_placement(canvas)
    cfg = BlendConfig(canvas=pl["canvas"], source_size=pl["source_size"])
    if steps:
        cfg = cfg.replace(steps1=steps[0], steps2=steps[-1])
    job = place(
        CASE1 / "source.png",
        CASE1 / "target.png",
        CASE1 / "mask.png",
        center=pl["center"],
        canvas=cfg.canvas,
        source_size=cfg.source_size,
    )
    phases = isinstance(progress, BlendProgress)
    if phases:
        progress.phase("Poisson start: solving (compiled on first use of this canvas size)")
    poisson = np.asarray(poisson_solve(job.target, job.source, job.mask, mode="normal"))
    vgg = load_vgg()
    if phases:
        progress.phase("loaded weights: vgg16")
        progress.expect(cfg)
    result = blend_job(job, config=cfg, vgg=vgg, progress=progress)
    if phases:
        progress.phase(f"writing {out}/")
    paths = [
        save_image(result.image, out / "result.png"),
        save_image(result.stage1, out / "stage1.png"),
        save_image(poisson, out / "poisson.png"),
    ]
    src = np.asarray(load_image(CASE1 / "source.png"), np.float32)
    paths.append(
        figure(
            [
                ("source", src),
                ("target", job.target),
                ("naive paste", job.naive),
                ("Poisson", poisson),
                ("stage 1", result.stage1),
                ("final", result.image),
            ],
            out / "figure.png",
        )
    )
    return paths
