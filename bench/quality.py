"""Quality figures of a blend result on a case, all on the canvas with the shipped VGG16.

    python bench/quality.py RESULT.png [RESULT2.png ...] --case DIR \
        [--canvas 512] [--source-size 300] [--center 200,235]

* ``grad_err``: RMS of ``Laplacian(result) − guidance`` over the mask dilated by 4 px, the
  guidance being the source's Laplacian inside the mask and the target's outside (seams;
  lower is better). Laplacian: SciPy's ``ndimage.convolve`` with the 4-neighbour kernel.
* ``style_gap``: ``Σ_l mean((G_l(result) − G_l(target))²)`` over relu1_2, relu2_2,
  relu3_3, relu4_3 with ``G = FᵀF/(H·W·C)``, divided by the same sum for the naive paste
  (1.0 = naive paste).
* ``content_gap``: ``mean((relu2_2(result·M) − relu2_2(source·M))²)`` divided by
  ``mean((relu2_2(target·M) − relu2_2(source·M))²)`` (0 = object kept, 1 = object gone).

The defaults are case1's placement as the authors ran it. The figures use NumPy/SciPy for
everything but the VGG activations.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STYLE = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
KERNEL = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], np.float64)

# Case1 as the authors ran it (shared/examples/case1/README.md).
CASE1_PLACEMENT = {"canvas": 512, "source_size": 300, "center": (200, 235)}


def _lap(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return np.stack([ndimage.convolve(x[..., c], KERNEL, mode="nearest") for c in range(3)], -1)


def _gram(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, np.float64)
    h, w, c = f.shape
    f = f.reshape(h * w, c)
    return f.T @ f / (h * w * c)


class Scorer:
    """Computes the three figures for results on one job (constants computed once)."""

    def __init__(self, job, vgg=None):
        import jax

        from jaxblend.vgg import features, load_vgg

        self.job = job
        self.vgg = vgg or load_vgg("vgg16")
        self._feat = jax.jit(lambda p, x: features(p, x, STYLE))
        m = job.mask > 0
        self.mask = m
        disk = np.hypot(*np.mgrid[-4:5, -4:5]) <= 4
        self.region = ndimage.binary_dilation(m, structure=disk)
        self.guide = _lap(job.source) * m[..., None] + _lap(job.target) * (~m[..., None])
        self.t_grams = {k: _gram(v) for k, v in self.features(job.target).items()}
        mm = m[..., None].astype(np.float32)
        self.src_c = self.features(job.source * mm)["relu2_2"]
        tgt_c = self.features(job.target * mm)["relu2_2"]
        self.content_den = float(np.mean((tgt_c - self.src_c) ** 2))
        self.style_den = self._style(self.features(job.naive))

    def features(self, image) -> dict:
        out = self._feat(self.vgg.params, np.asarray(image, np.float32))
        return {k: np.asarray(v, np.float64) for k, v in out.items()}

    def _style(self, feats: dict) -> float:
        return float(sum(np.mean((_gram(feats[k]) - self.t_grams[k]) ** 2) for k in STYLE))

    def __call__(self, result) -> dict:
        r = np.asarray(result, np.float64)
        if r.shape != self.job.target.shape:
            raise ValueError(f"result is {r.shape}, the canvas is {self.job.target.shape}")
        d = (_lap(r) - self.guide)[self.region]
        grad_err = float(np.sqrt(np.mean(d**2)))
        style_gap = self._style(self.features(r)) / self.style_den
        mm = self.mask[..., None].astype(np.float32)
        rc = self.features(r * mm)["relu2_2"]
        content_gap = float(np.mean((rc - self.src_c) ** 2)) / self.content_den
        return {"grad_err": grad_err, "style_gap": style_gap, "content_gap": content_gap}


def case_job(case: str | Path, canvas=512, source_size=300, center=(200, 235)):
    from jaxblend.io import place

    case = Path(case)
    return place(
        case / "source.png",
        case / "target.png",
        case / "mask.png",
        center=center,
        canvas=canvas,
        source_size=source_size,
    )


def main(argv=None) -> int:
    from PIL import Image

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+")
    ap.add_argument("--case", required=True)
    ap.add_argument("--canvas", type=int, default=512)
    ap.add_argument("--source-size", type=int, default=300)
    ap.add_argument("--center", default="200,235")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    center = tuple(float(v) for v in a.center.split(","))
    scorer = Scorer(case_job(a.case, a.canvas, a.source_size, center))
    for path in a.results:
        img = np.asarray(Image.open(path).convert("RGB"), np.float32)
        q = scorer(img)
        if a.json:
            print(json.dumps({"result": path, **q}))
        else:
            print(
                f"{path}: grad_err {q['grad_err']:.2f}  style_gap {q['style_gap']:.3f}  "
                f"content_gap {q['content_gap']:.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
