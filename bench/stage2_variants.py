"""Stage-2 variants on the development set, scored every chunk, with AlexNet's layers apart.

    python bench/stage2_variants.py --cases case1 case4 --steps 60 --tag NAME \
        --stage2 '{"smooth": "auto", "grad": 15.0}'

Stage 1 runs once per case with the defaults (cached under ``--cache``, as
``bench/calibrate_set.py`` does); stage 2 runs with ``--stage2`` overriding its
``StageConfig`` (``--set`` the ``BlendConfig``, both stages: stage 1 is cached per
``--set``) for ``--steps`` evaluations. After every
``chunk`` evaluations the best iterate is scored with :mod:`jaxblend.metrics` and the
style distance's five AlexNet layers (relu1 … relu5, each divided by the naive paste's)
are printed apart, with the authors' final beside them: which layer a variant wins or
loses. One line per case and chunk is appended to
``bench/results/stage2-variants.jsonl``; the iterates at 40, 50, 60, … evaluations are
saved under ``--images`` as ``<tag>-<case>-<evaluations>.png`` to look at.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import devset  # noqa: E402

KEYS = ("style", "ghosting", "outline", "seam", "fidelity")


def main(argv=None) -> int:
    import jax.numpy as jnp

    from jaxblend import BlendConfig, metrics
    from jaxblend.blend import stage2_reference
    from jaxblend.io import save_image
    from jaxblend.solve import composite
    from jaxblend.vgg import load_vgg

    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", nargs="*", default=["case1", "case2", "case4"])
    ap.add_argument("--canvas", type=int, default=512)
    ap.add_argument("--stage2", default="{}", help="JSON of stage-2 StageConfig overrides")
    ap.add_argument("--set", default="{}", help="JSON of BlendConfig overrides")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--tag", default="variant")
    ap.add_argument("--cache", default="/tmp/jaxblend-calibrate")
    ap.add_argument("--images", default="/tmp/jaxblend-stage2-variants")
    a = ap.parse_args(argv)
    vgg = load_vgg()
    # --set changes the whole configuration, stage 1 (cached per --set) included.
    cfg0 = BlendConfig(canvas=a.canvas).replace(**json.loads(a.set))
    over = json.loads(a.stage2)
    for k in ("content_layers", "style_layers", "hist_layers"):
        if k in over:
            over[k] = tuple((str(n), float(w)) for n, w in over[k])
    st2 = dataclasses.replace(cfg0.stage2, steps=a.steps, **over)
    cfg = cfg0.replace(stage2=st2)
    cache, images = Path(a.cache), Path(a.images)
    cache.mkdir(parents=True, exist_ok=True)
    images.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(json.dumps(json.loads(a.set), sort_keys=True).encode()).hexdigest()
    digest = digest[:8]
    log = ROOT / "bench" / "results" / "stage2-variants.jsonl"
    for case in (c for c in devset.CASES if c.name in a.cases):
        job = devset.job(case, a.canvas)
        stage1 = devset.stage1(job, cfg0, vgg, cache / f"{case.name}-{a.canvas}-{digest}.npy")
        t, s, m = (jnp.asarray(x, jnp.float32) for x in (job.target, job.source, job.mask))
        naive = composite(s, t, m)
        ref, masked = stage2_reference(cfg, naive, jnp.asarray(stage1))
        ind = metrics.Scorer(job.source, job.target, job.mask)
        layers = ind.style_layers

        def line(label, q, ly, name=case.name):
            return (f"{name:8s} {label:>7s}  " + " ".join(f"{k[:5]} {q[k]:.4f}" for k in KEYS)
                    + "  alexnet " + " ".join(f"{x:.3f}" for x in ly))  # fmt: skip

        theirs = devset.authors(case, a.canvas).get("authors_final")
        if theirs is not None:
            print(
                line(
                    "authors",
                    ind(np.asarray(theirs, np.float32)),
                    layers(np.asarray(theirs, np.float32)),
                )
            )
        frames, sec = devset.stage2_frames(st2, cfg, vgg, stage1, job, ref, masked)
        with log.open("a") as fh:
            for i, fr in enumerate(frames):
                n = min((i + 1) * cfg.chunk, a.steps)
                img = np.clip(np.rint(np.asarray(fr, np.float32)), 0, 255)
                q, ly = ind(img), layers(img)
                print(line(str(n), q, ly), flush=True)
                rec = {"tag": a.tag, "case": case.name, "canvas": a.canvas, "evaluations": n}
                rec.update(stage2=json.loads(a.stage2), set=json.loads(a.set), figures=q)
                rec.update(alexnet_layers=ly, seconds=sec)
                fh.write(json.dumps(rec) + "\n")
                if n >= 40 and n % 10 == 0:
                    save_image(img.astype(np.uint8), images / f"{a.tag}-{case.name}-{n}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
