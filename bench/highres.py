"""A deep blend into a 4096 x 3072 target: seconds per stage, evaluations, peak memory.

    python bench/highres.py [--width 4096] [--height 3072] [--object 400]
                            [--steps1 40] [--steps2 50] [--note TEXT]

The case: case4's target (``../shared/examples/case4``, or the copy shipped in
``jaxblend/examples``) upsampled to ``--width`` x ``--height`` with PIL bicubic; case4's
source and mask resized so that the object's long side is ``--object`` px, its centre at
case4's placement scaled to the canvas (the authors' (382, 320) on 512). The default
configuration (:class:`jaxblend.BlendConfig`, ``canvas`` = the long side) with stage 2's
region bounded (``--reach``, default 0.5: ``R`` twice the object per axis, a 960 x 1024
stage-2 window, 7058 MiB peak resident; ``--reach 1``: a 1408² window, 11096 MiB, the
compiled stage-2 iteration alone holding 4.7 GiB of temporaries; the library's default 0
repaints the whole canvas), through the public :func:`jaxblend.blend`: stage 1 runs on
the window of the mask's box, stage 2 on the window of its bounded rectangle ``R``
(``StageConfig.reach``). Peak memory is the
process's maximum resident set (``resource.getrusage``). Writes
``bench/results/highres-<platform>-<date>.{json,md,png}``: a contact sheet (target | naive |
stage 1 | final, downscaled, with ``R`` and the mask's box outlined on a copy below the
final, and the object at 1:1 from the naive paste, stage 1 and the final).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import hardware  # noqa: E402

CASE = next(
    p
    for p in (
        ROOT.parent / "shared" / "examples" / "case4",
        ROOT / "jaxblend" / "examples" / "case4",
    )
    if (p / "target.png").exists()
)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(width: int, height: int, obj: int):
    """``(target, source, mask, center, source_size)`` of the case."""
    from PIL import Image

    target = np.asarray(
        Image.open(CASE / "target.png").convert("RGB").resize((width, height), Image.BICUBIC)
    )
    m = np.asarray(Image.open(CASE / "mask.png").convert("L")) > 127
    ys, xs = np.nonzero(m)
    extent = max(np.ptp(ys), np.ptp(xs)) + 1
    source_size = round(obj * max(m.shape) / extent)
    center = (round(382 / 512 * height), round(320 / 512 * width))
    return target, CASE / "source.png", CASE / "mask.png", center, source_size


def _outline(img: np.ndarray, box, color, width: int) -> None:
    (y0, x0), (y1, x1) = box
    y1, x1 = y1 - 1, x1 - 1
    img[y0 : y0 + width, x0 : x1 + 1] = color
    img[y1 - width + 1 : y1 + 1, x0 : x1 + 1] = color
    img[y0 : y1 + 1, x0 : x0 + width] = color
    img[y0 : y1 + 1, x1 - width + 1 : x1 + 1] = color


def contact_sheet(panels: dict, crops: dict, boxes: dict, path: Path, side: int = 1024) -> None:
    """Top row: the panels downscaled to ``side`` px wide; below: the final with ``R``
    (red) and the mask's box (blue) outlined, and the 1:1 crops."""
    from PIL import Image, ImageDraw

    def small(a):
        im = Image.fromarray(a)
        return im.resize((side, round(im.height * side / im.width)), Image.LANCZOS)

    row = [small(a) for a in panels.values()]
    marked = np.array(panels["final"])
    lw = max(2, marked.shape[1] // 512)
    _outline(marked, boxes["R"], (255, 0, 0), lw)
    _outline(marked, boxes["box"], (0, 0, 255), lw)
    second = [small(marked)] + [Image.fromarray(c) for c in crops.values()]
    h1 = row[0].height + 24
    h2 = max(im.height for im in second) + 24
    w = max(side * len(row), sum(im.width for im in second))
    sheet = Image.new("RGB", (w, h1 + h2), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (name, im) in enumerate(zip(panels, row, strict=True)):
        sheet.paste(im, (i * side, 24))
        draw.text((i * side + 4, 4), name, fill="black")
    x = 0
    names = ["final: R (red), mask box (blue)"] + [f"{k} 1:1" for k in crops]
    for name, im in zip(names, second, strict=True):
        sheet.paste(im, (x, h1 + 24))
        draw.text((x + 4, h1 + 4), name, fill="black")
        x += im.width
    sheet.save(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=4096)
    ap.add_argument("--height", type=int, default=3072)
    ap.add_argument("--object", type=int, default=400)
    ap.add_argument("--steps1", type=int, default=None)
    ap.add_argument("--steps2", type=int, default=None)
    ap.add_argument(
        "--reach", type=float, default=0.5, help="stage 2's StageConfig.reach (0: whole canvas)"
    )
    ap.add_argument("--stage2", default="{}", help="JSON of stage-2 StageConfig overrides")
    ap.add_argument("--note", default="")
    ap.add_argument("--tag", default="")
    args = ap.parse_args(argv)

    import jax
    import jax.numpy as jnp

    import jaxblend
    from jaxblend import window
    from jaxblend.io import place

    target, source, mask, center, source_size = build(args.width, args.height, args.object)
    config = jaxblend.BlendConfig(canvas=max(args.width, args.height), source_size=source_size)
    over = json.loads(args.stage2)
    config = config.replace(stage2=dataclasses.replace(config.stage2, reach=args.reach, **over))
    if args.steps1 or args.steps2:
        config = config.replace(
            steps1=args.steps1 or config.stage1.steps, steps2=args.steps2 or config.stage2.steps
        )
    vgg = jaxblend.load_vgg()
    job = place(source, target, mask, center=center, canvas=config.canvas, source_size=source_size)
    m = jnp.asarray(job.mask)
    geoms = {s: window.plan(getattr(config, s), vgg.arch, job.mask) for s in ("stage1", "stage2")}
    r0, r1 = (np.asarray(v).tolist() for v in window.changed_box(config.stage2, m))
    b0, b1 = (np.asarray(v).tolist() for v in window.changed_box(config.stage1, m))
    rss0 = _rss_mib()
    t = time.perf_counter()
    res = jaxblend.blend(source, target, mask, center=center, config=config, vgg=vgg)
    wall = time.perf_counter() - t
    rss = _rss_mib()
    naive = np.clip(job.naive, 0, 255).round().astype(np.uint8)
    h, w = job.mask.shape
    pad = 100
    cy0, cx0 = max(b0[0] - pad, 0), max(b0[1] - pad, 0)
    cy1, cx1 = min(b1[0] + pad, h), min(b1[1] + pad, w)
    crop = (slice(cy0, cy1), slice(cx0, cx1))
    date = dt.date.today().isoformat()
    platform = jax.default_backend()
    stem = f"highres-{platform}{args.tag}-{date}"
    out_dir = ROOT / "bench" / "results"
    png = out_dir / f"{stem}.png"
    contact_sheet(
        {"target": target, "naive": naive, "stage 1": res.stage1, "final": res.image},
        {"naive": naive[crop], "stage 1": res.stage1[crop], "final": res.image[crop]},
        {"R": (r0, r1), "box": (b0, b1)},
        png,
    )
    outside = np.ones((h, w), bool)
    outside[r0[0] : r1[0], r0[1] : r1[1]] = False
    changed_outside = int(np.abs(res.image.astype(int) - target.astype(int))[outside].max())
    record = {
        "date": date,
        "hardware": hardware.describe() if hasattr(hardware, "describe") else platform,
        "note": args.note,
        "canvas": [h, w],
        "object_box": [b1[0] - b0[0], b1[1] - b0[1]],
        "source_size": source_size,
        "center": list(center),
        "reach": config.stage2.reach,
        "R": [r0, r1],
        "R_fraction": (r1[0] - r0[0]) * (r1[1] - r0[1]) / (h * w),
        "windows": {k: (None if g is None else list(g.size)) for k, g in geoms.items()},
        "evaluations": res.evaluations,
        "seconds": {k: round(v, 1) for k, v in res.seconds.items()},
        "wall_seconds": round(wall, 1),
        "peak_rss_mib": round(rss, 0),
        "rss_before_blend_mib": round(rss0, 0),
        "max_change_outside_R": changed_outside,
        "losses": res.losses,
        "png": png.name,
    }
    (out_dir / f"{stem}.json").write_text(json.dumps(record, indent=1) + "\n")
    lines = [
        f"# Deep blend at {w}×{h} ({date})",
        "",
        f"`python bench/highres.py {' '.join(argv if argv is not None else sys.argv[1:])}` "
        f"on {record['hardware']}. {args.note}",
        "",
        f"case4's target upsampled (PIL bicubic) to {w}×{h}; case4's source with the "
        f"object's box {record['object_box'][0]}×{record['object_box'][1]} px "
        f"(long side {args.object}), centre {tuple(center)}; default configuration, "
        f"public `jaxblend.blend`.",
        "",
        "| | stage 1 | stage 2 |",
        "|---|---:|---:|",
        f"| window (px) | {record['windows']['stage1']} | {record['windows']['stage2']} |",
        f"| evaluations | {res.evaluations.get('stage1')} | {res.evaluations.get('stage2')} |",
        f"| seconds (incl. prepare, compile, start) | {record['seconds'].get('stage1')} | "
        f"{record['seconds'].get('stage2')} |",
        "",
        f"- bounded region R (reach {config.stage2.reach}): rows {r0[0]}–{r1[0]}, columns "
        f"{r0[1]}–{r1[1]}, {record['R_fraction']:.1%} of the canvas; largest change outside "
        f"R: {changed_outside} grey levels (0 = the target bit for bit)",
        f"- peak RSS: {rss:.0f} MiB (before the blend: {rss0:.0f} MiB); wall {wall:.0f} s",
        f"- contact sheet: `{png.name}`",
        "",
    ]
    (out_dir / f"{stem}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
