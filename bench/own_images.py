"""The README's "Your own images" pictures, made with the same commands a user types.

    python bench/own_images.py [--out docs/own_images] [--steps S1 S2]

A stand-in for a user's product photo: case1's glasses cut out with the shipped mask and
put on a plain white background, cropped to the glasses and saved as JPEG
(``glasses.jpg``). Then, through the command line (``jaxblend.cli.main``, the code behind
``jaxblend``):

1. ``jaxblend mask --source glasses.jpg -o glasses_mask.png`` — the plain-background
   method; writes the mask and its preview overlay (``mask_preview.png``);
2. ``jaxblend place ... -o placement.png`` — the placement preview and its manifest line;
3. ``jaxblend blend ... -o result.png`` — the deep blend on the demo's canvas (``DEMO_CANVAS``),
   at the authors' case1 placement scaled to it.

Writes the three pictures and ``commands.txt`` (each command and what it
printed on stdout) into ``--out``; the commands run in a temporary folder. The
blend runs the default budgets (40 + 50 evaluations) unless ``--steps`` says otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxblend.demo import AUTHORS, DEMO_CANVAS  # noqa: E402

CASE1 = ROOT / "jaxblend" / "examples" / "case1"
CROP = (240, 50, 420, 490)  # rows top..bottom, cols left..right of case1's 500² source
WHITE = (246, 246, 244)
# The authors' case1 placement (jaxblend.demo.AUTHORS: the 500² source resized to 300 on a
# 512 canvas, its centre at row 200, col 235), on the demo's canvas.
CANVAS = DEMO_CANVAS
FULL, CENTRE = AUTHORS["source_size"], AUTHORS["center"]


def product_photo(path: Path) -> tuple[tuple[int, int], int]:
    """Write the stand-in photo; return the crop's centre on the canvas and its long side
    there, so that the glasses land where the authors put them."""
    src = np.asarray(Image.open(CASE1 / "source.png").convert("RGB"), np.float32)
    m = np.asarray(Image.open(CASE1 / "mask.png").convert("L"), np.float32)[..., None] / 255
    photo = src * m + np.asarray(WHITE, np.float32) * (1 - m)
    t, left, b, r = CROP
    Image.fromarray(np.round(photo[t:b, left:r]).astype(np.uint8)).save(path, quality=90)
    half = CANVAS / AUTHORS["canvas"]
    s = FULL / src.shape[0] * half  # source pixels -> canvas pixels
    top0, left0 = CENTRE[0] * half - FULL * half / 2, CENTRE[1] * half - FULL * half / 2
    centre = (round(top0 + (t + b) / 2 * s), round(left0 + (left + r) / 2 * s))
    return centre, round(max(b - t, r - left) * s)


def run(argv: list[str], log: list[str]) -> str:
    """Run one ``jaxblend`` command in this process; keep its command line and stdout."""
    from jaxblend.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(argv)
    text = out.getvalue()
    log.append("$ jaxblend " + " ".join(argv) + "\n" + text)
    print(log[-1], end="", flush=True)
    if rc != 0:
        raise SystemExit(f"jaxblend {argv[0]} failed with status {rc}")
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "own_images"))
    ap.add_argument("--steps", type=int, nargs="+", default=None)
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log: list[str] = []
    here = Path.cwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # relative names, so the commands read as a user would type them
        try:
            centre, size = product_photo(Path("glasses.jpg"))
            shutil.copy(CASE1 / "target.png", "portrait.png")
            run(["mask", "--source", "glasses.jpg", "-o", "glasses_mask.png",
                 "--preview", "mask_preview.png"], log)  # fmt: skip
            place = ["--source", "glasses.jpg", "--mask", "glasses_mask.png",
                     "--target", "portrait.png", "--canvas", str(CANVAS),
                     "--center", f"{centre[0]},{centre[1]}",
                     "--source-size", str(size)]  # fmt: skip
            run(["place", *place, "-o", "placement.png"], log)
            steps = ["--steps", *map(str, args.steps)] if args.steps else []
            run(["blend", *place, *steps, "-o", "result.png"], log)
            for name in ("mask_preview.png", "placement.png", "result.png"):
                shutil.copy(name, out / name)
        finally:
            os.chdir(here)
    (out / "commands.txt").write_text("".join(log))
    for p in sorted(out.iterdir()):
        print(f"{p.relative_to(ROOT) if p.is_relative_to(ROOT) else p}: {p.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
