"""Calibrate the style refinement (stage 2) on the whole development set.

    python bench/calibrate_set.py --canvas 256 --variants '[{"style": 3e-2}, {...}]' \
        [--base '{"normalize": true}'] [--steps2 30] [--cases case1 case2 ...]

Stage 1 runs once per case with the defaults (cached under ``--cache``); each variant is a
JSON object of ``StageConfig`` fields overriding the default stage 2 (``--base`` first),
and may carry ``"stage2_content"``. Every final is scored with :mod:`jaxblend.metrics` and
the VGG figures; a line per variant and case is appended to
``bench/results/calibrate-set.jsonl`` and the finals are saved under ``--images`` as
``<variant index>-<case>.png`` to look at.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import devset  # noqa: E402
from bench.quality import Scorer  # noqa: E402

KEYS = ("style", "ghosting", "structure", "contrast", "outline", "seam", "fidelity")


def main(argv=None) -> int:
    import jax.numpy as jnp

    from jaxblend import BlendConfig, metrics
    from jaxblend.blend import _run_stage, stage2_reference, vgg_spec
    from jaxblend.io import save_image
    from jaxblend.solve import composite
    from jaxblend.vgg import load_vgg

    ap = argparse.ArgumentParser()
    ap.add_argument("--canvas", type=int, default=256)
    ap.add_argument("--variants", required=True)
    ap.add_argument("--base", default="{}")
    ap.add_argument("--steps2", type=int, default=None)
    ap.add_argument("--cases", nargs="*", default=None)
    ap.add_argument("--cache", default="/tmp/jaxblend-calibrate")
    ap.add_argument("--images", default="/tmp/jaxblend-calibrate/finals")
    ap.add_argument("--stage1", default="{}", help="JSON of stage-1 overrides (cache key)")
    a = ap.parse_args(argv)
    vgg = load_vgg()
    s1 = json.loads(a.stage1)
    cfg0 = BlendConfig(canvas=a.canvas)
    cfg0 = cfg0.replace(stage1=dataclasses.replace(cfg0.stage1, **s1))
    cache, images = Path(a.cache), Path(a.images)
    cache.mkdir(parents=True, exist_ok=True)
    images.mkdir(parents=True, exist_ok=True)
    variants = json.loads(a.variants)
    base = json.loads(a.base)
    log = ROOT / "bench" / "results" / "calibrate-set.jsonl"
    cases = [c for c in devset.CASES if not a.cases or c.name in a.cases]
    summary: dict[int, list] = {i: [] for i in range(len(variants))}
    for case in cases:
        job = devset.job(case, a.canvas)
        digest = hashlib.sha256(json.dumps(s1, sort_keys=True).encode()).hexdigest()[:8]
        key = f"{case.name}-{a.canvas}-{digest}"
        stage1 = devset.stage1(job, cfg0, vgg, cache / f"{key}.npy")
        ind = metrics.Scorer(job.source, job.target, job.mask)
        vs = Scorer(job, vgg)
        t, s, m = (jnp.asarray(x, jnp.float32) for x in (job.target, job.source, job.mask))
        naive = composite(s, t, m)
        for i, v in enumerate(variants):
            v = {**base, **v}
            content = v.pop("stage2_content", cfg0.stage2_content)
            steps = a.steps2 or v.pop("steps", cfg0.stage2.steps)
            v.pop("steps", None)
            for k in ("content_layers", "style_layers", "hist_layers"):
                if k in v:  # JSON lists -> the hashable tuples StageConfig holds
                    v[k] = tuple((str(n), float(w)) for n, w in v[k])
            st2 = dataclasses.replace(cfg0.stage2, steps=steps, **v)
            cfg = cfg0.replace(stage2=st2, stage2_content=content)
            t0 = time.perf_counter()
            ref, masked = stage2_reference(cfg, naive, jnp.asarray(stage1))
            img, n, *_ = _run_stage(
                "stage2", st2, cfg, vgg_spec(vgg, cfg.precision), vgg.params,
                jnp.asarray(stage1), t, m, s, ref, masked=masked,
                batched=False, progress=None, frames=None,
            )  # fmt: skip
            img = np.clip(np.rint(np.asarray(img)), 0, 255).astype(np.uint8)
            sec = time.perf_counter() - t0
            q = ind(img.astype(np.float32))
            g = vs(img.astype(np.float32))
            q.update(style_gap=g["style_gap"], content_gap=g["content_gap"])
            save_image(img, images / f"{i}-{case.name}.png")
            summary[i].append(q)
            print(
                f"{case.name:18s} v{i} " + " ".join(f"{k[:5]} {q[k]:.3f}" for k in KEYS)
                + f"  ({int(n)} evals, {sec:.0f} s) {json.dumps(variants[i])}",
                flush=True,
            )  # fmt: skip
            with log.open("a") as fh:
                rec = {"canvas": a.canvas, "case": case.name, "stage1": s1, "base": base}
                rec.update(variant=variants[i], steps2=steps, figures=q, seconds=sec)
                fh.write(json.dumps(rec) + "\n")
    print("mean over cases:")
    for i, rows in summary.items():
        mean = {k: float(np.mean([r[k] for r in rows])) for k in KEYS}
        print(f"v{i} " + " ".join(f"{k[:5]} {mean[k]:.3f}" for k in KEYS), json.dumps(variants[i]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
