"""Quality of the blend on the development set: contact sheets and one table of figures.

    python bench/quality.py [--canvas 512] [--cases case1 case2 ...] [--set JSON]
        [--preset NAME] [--tag NAME]          # blend every case, write sheets and tables
    python bench/quality.py RESULT.png ... --case DIR [--canvas 512] [--source-size 300]
        [--center 200,235]                    # score images of one case

The set is ``bench/devset.py`` (the authors' case1, case2, case4 at their placements, and
cross pairs, one of them photo to photo). For every case it writes
``bench/results/quality-<case>-<tag>.png`` (target | naive | Poisson | stage 1 | final |
authors' final, and a 2x crop of the object below) and one table of all figures,
``bench/results/quality-<tag>-<date>.{md,json}``.

The independent figures are :mod:`jaxblend.metrics` (model-free ghosting, structure,
contrast, outline and seam; LPIPS fidelity and a Gram style distance on AlexNet, which the
blend does not optimise with). The older figures, on the shipped VGG16 (the blend's own
network, so not independent; kept for comparison with earlier results):

* ``grad_err``: RMS of ``Laplacian(result) − guidance`` over the mask dilated by 4 px, the
  guidance being the source's Laplacian inside the mask and the target's outside (seams;
  lower is better). Laplacian: SciPy's ``ndimage.convolve`` with the 4-neighbour kernel.
* ``style_gap``: ``Σ_l mean((G_l(result) − G_l(target))²)`` over relu1_2, relu2_2,
  relu3_3, relu4_3 with ``G = FᵀF/(H·W·C)``, divided by the same sum for the naive paste
  (1.0 = naive paste).
* ``content_gap``: ``mean((relu2_2(result·M) − relu2_2(source·M))²)`` divided by
  ``mean((relu2_2(target·M) − relu2_2(source·M))²)`` (0 = object kept, 1 = object gone).
"""

from __future__ import annotations

import argparse
import dataclasses
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


# ----------------------------------------------------------------------------- the set

#: Columns of the tables: independent figures (jaxblend.metrics) then the VGG ones.
COLUMNS = (
    ("style", "style (AlexNet)", "{:.3f}"),
    ("ghosting", "ghosting", "{:.3f}"),
    ("structure", "structure", "{:.2f}"),
    ("contrast", "contrast", "{:.2f}"),
    ("outline", "outline", "{:.2f}"),
    ("seam", "seam (grad_err)", "{:.2f}"),
    ("fidelity", "fidelity (LPIPS)", "{:.3f}"),
    ("style_gap", "style_gap (VGG)", "{:.3f}"),
    ("content_gap", "content_gap (VGG)", "{:.3f}"),
)
ROWS = ("naive", "poisson", "stage1", "final", "authors_stage1", "authors_final")
LABELS = {
    "target": "target",
    "naive": "naive paste",
    "poisson": "Poisson",
    "stage1": "jaxblend stage 1",
    "final": "jaxblend final",
    "authors_stage1": "authors' stage 1",
    "authors_final": "authors' final",
}


def _crop_box(mask: np.ndarray, side: int) -> tuple[slice, slice]:
    """A ``side``-pixel square on the object: its box's centre, clipped to the canvas."""
    ys, xs = np.nonzero(mask > 0.5)
    h, w = mask.shape
    side = min(side, h, w)
    cy, cx = (ys.min() + ys.max()) // 2, (xs.min() + xs.max()) // 2
    top = int(np.clip(cy - side // 2, 0, h - side))
    left = int(np.clip(cx - side // 2, 0, w - side))
    return slice(top, top + side), slice(left, left + side)


def contact_sheet(images: dict, mask: np.ndarray, title: str, panel: int = 256):
    """Row 1: each image at ``panel`` px; row 2: a ``panel/2`` crop of the object at 2x."""
    from PIL import Image, ImageDraw

    names = list(images)
    label_h = 18
    sheet = Image.new("RGB", (panel * len(names), 2 * panel + 2 * label_h + 4), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 2), title, fill="black")
    box = _crop_box(mask, max(16, round(panel / 2 * images[names[0]].shape[0] / 512)))
    for i, n in enumerate(names):
        im = Image.fromarray(np.clip(np.rint(images[n]), 0, 255).astype(np.uint8))
        x = i * panel
        draw.text((x + 4, label_h + 2), LABELS.get(n, n), fill="black")
        sheet.paste(im.resize((panel, panel), Image.LANCZOS), (x, 2 * label_h))
        crop = im.crop((box[1].start, box[0].start, box[1].stop, box[0].stop))
        sheet.paste(crop.resize((panel, panel), Image.NEAREST), (x, 2 * label_h + panel + 4))
    return sheet


def _table(rows: dict, columns=COLUMNS) -> list[str]:
    out = [
        "| image | " + " | ".join(c[1] for c in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for name, q in rows.items():
        cells = [fmt.format(q[key]) if key in q else "" for key, _, fmt in columns]
        out.append(f"| {LABELS.get(name, name)} | " + " | ".join(cells) + " |")
    return out


def run_set(cases, config, canvas: int, tag: str, out_dir: Path, vgg=None) -> dict:
    """Blend every case with ``config``, score everything, write sheets and tables."""
    import datetime as dt
    import time

    from bench import devset, hardware
    from jaxblend import metrics
    from jaxblend.blend import blend_job
    from jaxblend.poisson import blend_job as poisson_job
    from jaxblend.vgg import load_vgg

    vgg = vgg or load_vgg(config.network)  # the network the configuration names
    ref_vgg = vgg if config.network == "vgg16" else load_vgg("vgg16")  # style_gap's network
    date = dt.date.today().isoformat()
    info = hardware.device_info()
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict = {"config": repr(config), "canvas": canvas, "date": date, "cases": {}}
    results["device"] = info
    for case in cases:
        job = devset.job(case, canvas)
        t0 = time.perf_counter()
        r = blend_job(job, config=config, vgg=vgg)
        wall = time.perf_counter() - t0
        images = {"target": job.target, "naive": job.naive, "poisson": poisson_job(job)}
        images.update(stage1=r.stage1, final=r.image)
        images.update(devset.authors(case, canvas))
        ind = metrics.Scorer(job.source, job.target, job.mask)
        vs = Scorer(job, ref_vgg)
        rows = {}
        for n in ROWS:
            if n in images:
                img = np.asarray(images[n], np.float32)
                v = vs(img)
                rows[n] = {**ind(img), "style_gap": v["style_gap"], "content_gap": v["content_gap"]}
        stem = f"quality-{case.name}-{tag}"
        sheet_names = [n for n in ("target", *ROWS[:4], "authors_final") if n in images]
        title = f"{case.name}: {case.what} - {canvas}px canvas, {tag}, {date}"
        contact_sheet({n: images[n] for n in sheet_names}, job.mask, title).save(
            out_dir / f"{stem}.png", optimize=True
        )
        results["cases"][case.name] = {
            "what": case.what,
            "figures": rows,
            "evaluations": r.evaluations,
            "seconds": wall,
        }
        print(f"== {case.name} ({wall:.0f} s, {sum(r.evaluations.values())} evaluations)")
        print("\n".join(_table(rows)), flush=True)
    return results


FINAL_GOALS = ("style", "ghosting", "outline", "seam", "fidelity")
STAGE1_GOALS = ("seam", "style_gap", "content_gap")


def summary(results: dict) -> list[str]:
    """Per case, the final and stage 1 against the authors' where they exist (✓ = no
    worse: lower is better for every figure compared)."""
    out = [
        "Summary: jaxblend's final / the authors' final (✓ where ours is no worse; lower is "
        "better for all of these), stage 1 likewise, and the structure kept inside the object "
        "(1 = all, higher is better, not a goal).",
        "",
        "| case | " + " | ".join(f"final {k}" for k in FINAL_GOALS)
        + " | " + " | ".join(f"stage 1 {k}" for k in STAGE1_GOALS) + " | structure |",
        "|---|" + "---|" * (len(FINAL_GOALS) + len(STAGE1_GOALS) + 1),
    ]  # fmt: skip
    for name, c in results["cases"].items():
        f = c["figures"]
        cells = []
        for ours, theirs, keys in (
            ("final", "authors_final", FINAL_GOALS),
            ("stage1", "authors_stage1", STAGE1_GOALS),
        ):
            for k in keys:
                a = f[ours][k]
                if theirs in f:
                    b = f[theirs][k]
                    cells.append(f"{a:.3g} / {b:.3g} {'✓' if a <= b else '✗'}")
                else:
                    cells.append(f"{a:.3g}")
        st = f"{f['final']['structure']:.2f}"
        if "authors_final" in f:
            st += f" / {f['authors_final']['structure']:.2f}"
        out.append(f"| {name} | " + " | ".join(cells) + f" | {st} |")
    return out


AGREEMENT = ("style", "ghosting", "outline", "seam", "fidelity", "style_gap", "content_gap")


def agreement(results: dict, within: float = 0.15) -> list[str]:
    """Per case and stage, how far each figure of ours lies from the same figure of the
    authors' published output: ``|ours − theirs| / theirs`` (✓ within ``within``). The
    check of a reproduction (the ``authors`` preset), shown for every run."""
    rows = []
    for name, c in results["cases"].items():
        f = c["figures"]
        for ours, theirs, label in (
            ("stage1", "authors_stage1", "stage 1"),
            ("final", "authors_final", "final"),
        ):
            if theirs not in f:
                continue
            cells = []
            for k in AGREEMENT:
                a, b = f[ours][k], f[theirs][k]
                rel = abs(a - b) / max(abs(b), 1e-12)
                cells.append(f"{a:.3g} / {b:.3g} ({rel:.0%} {'✓' if rel <= within else '✗'})")
            rows.append(f"| {name} | {label} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return [
        f"Agreement with the authors' published outputs: ours / theirs (relative difference; "
        f"✓ within {within:.0%}).",
        "",
        "| case | stage | " + " | ".join(AGREEMENT) + " |",
        "|---|---|" + "---|" * len(AGREEMENT),
        *rows,
        "",
    ]


def write_report(results: dict, tag: str, out_dir: Path, command: str) -> Path:
    info = results["device"]
    md = [
        f"# Quality on the development set, {tag} ({results['date']})",
        "",
        f"`{command}` on {info['device']} ({info['cpu_count']} cores), jax "
        f"{info['versions']['jax']}; canvas {results['canvas']}²; config `{results['config']}`.",
        "",
        "Figures (`jaxblend.metrics`, independent of the VGG the blend optimises): style = "
        "AlexNet Gram distance to the target (naive paste 1.0, lower = more of the scene's "
        "style); ghosting = target structure seen through the object (0 best); structure = "
        "source structure kept (1 = all); contrast = luminance contrast kept; outline = line "
        "or halo along the mask edge (grey levels, 0 best); seam = grad_err (RMS Laplacian "
        "error near the mask); fidelity = LPIPS to the naive paste on the object's box (0 "
        "best). style_gap / content_gap: the older VGG16 figures (the blend's own network).",
        "",
    ]
    md += summary(results) + [""] + agreement(results)
    for name, c in results["cases"].items():
        ev = c["evaluations"]
        md += [
            f"## {name}: {c['what']}",
            "",
            f"{sum(ev.values())} evaluations ({ev}), {c['seconds']:.0f} s. "
            f"Contact sheet: `quality-{name}-{tag}.png`.",
            "",
            *_table(c["figures"]),
            "",
        ]
    path = out_dir / f"quality-{tag}-{results['date']}.md"
    path.write_text("\n".join(md))
    (out_dir / f"quality-{tag}-{results['date']}.json").write_text(
        json.dumps(results, indent=1, default=str)
    )
    return path


def main(argv=None) -> int:
    from PIL import Image

    from bench import devset

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="*", help="score these images on --case (no blend)")
    ap.add_argument("--case", default=None, help="folder of a case, for scoring files")
    ap.add_argument("--canvas", type=int, default=512)
    ap.add_argument("--source-size", type=int, default=300)
    ap.add_argument("--center", default="200,235")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--cases", nargs="*", default=None, help="development cases to run")
    ap.add_argument(
        "--set",
        default="{}",
        help='JSON of BlendConfig overrides; "stage1"/"stage2" take a dict of that stage\'s fields',
    )
    ap.add_argument("--preset", default=None, help="a named preset instead of the defaults")
    ap.add_argument("--tag", default="default")
    ap.add_argument("--out-dir", default=str(ROOT_RESULTS))
    ap.add_argument("--render", default=None, help="re-render the .md of a results .json")
    a = ap.parse_args(argv)
    if a.render:
        res = json.loads(Path(a.render).read_text())
        cmd = res.get("command", "python bench/quality.py " + " ".join(argv or sys.argv[1:]))
        print(write_report(res, res.get("tag", a.tag), Path(a.render).parent, cmd))
        return 0
    if a.results:
        from jaxblend import metrics

        center = tuple(float(v) for v in a.center.split(","))
        job = case_job(a.case, a.canvas, a.source_size, center)
        vs, ind = Scorer(job), metrics.Scorer(job.source, job.target, job.mask)
        for path in a.results:
            img = np.asarray(Image.open(path).convert("RGB"), np.float32)
            q = {**ind(img), **vs(img)}
            print(json.dumps({"result": path, **q}) if a.json else f"{path}: {q}")
        return 0
    from jaxblend import BlendConfig

    if a.preset:
        from jaxblend.presets import preset

        cfg = preset(a.preset)
    else:
        cfg = BlendConfig()
    over = json.loads(a.set)
    for stage in ("stage1", "stage2"):  # {"stage2": {"style": 300}}: fields of one stage
        if isinstance(over.get(stage), dict):
            over[stage] = dataclasses.replace(getattr(cfg, stage), **over[stage])
    cfg = cfg.replace(canvas=a.canvas, **over)
    cases = [c for c in devset.CASES if not a.cases or c.name in a.cases]
    command = "python bench/quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    res = run_set(cases, cfg, a.canvas, a.tag, Path(a.out_dir))
    res.update(command=command.strip(), tag=a.tag)
    print(write_report(res, a.tag, Path(a.out_dir), command.strip()))
    return 0


ROOT_RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"

if __name__ == "__main__":
    sys.exit(main())
