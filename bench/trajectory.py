"""Stage 2's trajectory on the development set: every figure after each chunk of evaluations.

    python bench/trajectory.py --cases case1 case2 case4 --steps 140 \
        [--stage2 '{"content": 0.5}'] [--set '{"stage2_content": "object"}'] [--tag NAME]

Stage 1 runs once per case with the configuration (``--set``; cached under ``--cache``),
then stage 2 (``--stage2`` overrides its ``StageConfig``) runs up to ``--steps``
evaluations. After every ``chunk`` evaluations the best iterate is scored: the
independent figures of :mod:`jaxblend.metrics` (AlexNet style, ghosting, outline, seam,
LPIPS fidelity) and stage 2's own normalised style term (the value ``style_stop``
compares; 1.0 = the naive paste). The authors' final is scored beside it. This is what a
stopping rule (``StageConfig.style_stop``) or a budget is chosen from: the point of each
case's curve where its style reaches the authors' and the other figures still hold.
Writes ``bench/results/trajectory-<tag>.jsonl`` (one line per case and chunk).
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
    import jax
    import jax.numpy as jnp

    from jaxblend import BlendConfig, metrics
    from jaxblend.blend import stage2_reference, vgg_spec
    from jaxblend.solve import composite, loss_terms, prepare
    from jaxblend.vgg import load_vgg

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--canvas", type=int, default=512)
    ap.add_argument("--cases", nargs="*", default=["case1", "case2", "case4"])
    ap.add_argument("--set", default="{}", help="JSON of BlendConfig overrides")
    ap.add_argument("--stage2", default="{}", help="JSON of stage-2 StageConfig overrides")
    ap.add_argument("--steps", type=int, default=140, help="stage-2 evaluations (the cap)")
    ap.add_argument("--tag", default="default")
    ap.add_argument("--cache", default="/tmp/jaxblend-trajectory")
    a = ap.parse_args(argv)
    config = BlendConfig(canvas=a.canvas).replace(**json.loads(a.set))
    over = json.loads(a.stage2)
    for k in ("content_layers", "style_layers", "hist_layers"):
        if k in over:
            over[k] = tuple((str(n), float(w)) for n, w in over[k])
    st2 = dataclasses.replace(config.stage2, steps=a.steps, style_stop=0.0, **over)
    config = config.replace(stage2=st2)
    vgg = load_vgg(config.network)
    spec = vgg_spec(vgg, config.precision)
    cache = Path(a.cache)
    cache.mkdir(parents=True, exist_ok=True)
    log = ROOT / "bench" / "results" / f"trajectory-{a.tag}.jsonl"
    key1 = hashlib.sha256(repr(config.replace(stage2=BlendConfig().stage2)).encode()).hexdigest()
    for case in (c for c in devset.CASES if c.name in a.cases):
        job = devset.job(case, a.canvas)
        stage1 = devset.stage1(job, config, vgg, cache / f"{case.name}-{key1[:10]}.npy")
        t, s, m = (jnp.asarray(x, jnp.float32) for x in (job.target, job.source, job.mask))
        naive = composite(s, t, m)
        ref, masked = stage2_reference(config, naive, jnp.asarray(stage1))
        data = prepare(st2, spec, vgg.params, t, m, s, ref, masked=masked)
        style_term = jax.jit(
            lambda x, d, masked=masked: (
                loss_terms(st2, spec, x, d, masked=masked)["style"] / st2.style
            )
        )
        ind = metrics.Scorer(job.source, job.target, job.mask)
        theirs = devset.authors(case, a.canvas).get("authors_final")
        if theirs is not None:
            q = ind(np.asarray(theirs, np.float32))
            print(f"{case.name:8s} authors  " + " ".join(f"{k[:5]} {q[k]:.4f}" for k in KEYS))
        frames, sec = devset.stage2_frames(st2, config, vgg, stage1, job, ref, masked)
        with log.open("a") as fh:
            for i, fr in enumerate(frames):
                n = min((i + 1) * config.chunk, a.steps)
                img = np.asarray(fr, np.float32)
                q = ind(img)
                q["vgg_style"] = float(style_term(jnp.asarray(img), data))
                print(
                    f"{case.name:8s} {n:4d}     " + " ".join(f"{k[:5]} {q[k]:.4f}" for k in KEYS)
                    + f"  vggst {q['vgg_style']:.4f}",
                    flush=True,
                )  # fmt: skip
                rec = {"case": case.name, "canvas": a.canvas, "evaluations": n, "figures": q}
                rec.update(set=json.loads(a.set), stage2=json.loads(a.stage2), seconds=sec)
                fh.write(json.dumps(rec) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
