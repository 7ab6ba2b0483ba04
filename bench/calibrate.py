"""Calibrate loss weights on case1: quality figures along the optimisation trajectory.

    python bench/calibrate.py --stage1 '{"grad": 1, "style": 3e-4, "content": 1e-3}' \
        --steps1 100 [--stage2 '{...}' --steps2 100] [--init poisson] [--canvas 512]

Runs the blend at the authors' case1 placement (scaled to ``--canvas``) and prints
``bench/quality.py``'s three figures for a frame every ``--chunk`` evaluations, so one run
shows the whole trade-off between seams, style and content. Appends a JSON line per run
to ``bench/results/calibrate.jsonl``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.quality import Scorer, case_job  # noqa: E402

CASE1 = Path(__file__).resolve().parents[1] / "jaxblend" / "examples" / "case1"


def main(argv=None) -> int:
    from jaxblend import BlendConfig, load_vgg
    from jaxblend.blend import blend_job
    from jaxblend.config import STAGE1, STAGE2

    ap = argparse.ArgumentParser()
    ap.add_argument("--stage1", default="{}", help="JSON overrides of the stage-1 weights")
    ap.add_argument("--stage2", default=None, help="JSON overrides of stage 2 (else off)")
    ap.add_argument("--steps1", type=int, default=100)
    ap.add_argument("--steps2", type=int, default=100)
    ap.add_argument("--init", default="poisson")
    ap.add_argument("--solver", default="jaxopt")
    ap.add_argument("--canvas", type=int, default=512)
    ap.add_argument("--chunk", type=int, default=10)
    ap.add_argument("--precision", default="float32")
    ap.add_argument("--stage2-content", default="source", choices=("source", "stage1"))
    a = ap.parse_args(argv)

    s = a.canvas / 512
    job = case_job(CASE1, a.canvas, round(300 * s), (200 * s, 235 * s))
    vgg = load_vgg()
    scorer = Scorer(job, vgg)
    s1 = dataclasses.replace(STAGE1, steps=a.steps1, **json.loads(a.stage1))
    s2 = dataclasses.replace(STAGE2, steps=a.steps2, **json.loads(a.stage2 or "{}"))
    cfg = BlendConfig(
        stage1=s1, stage2=s2, canvas=a.canvas, init=a.init, solver=a.solver,
        stage2_enabled=a.stage2 is not None, chunk=a.chunk, precision=a.precision,
        stage2_content=a.stage2_content,
    )  # fmt: skip
    marks: list[dict] = []
    t0 = time.perf_counter()

    def progress(info):
        marks.append({**info, "seconds": time.perf_counter() - t0})

    r = blend_job(job, config=cfg, vgg=vgg, progress=progress, frames=True)
    rows = []
    total = 0
    prev_stage = None
    for m, fr in zip(marks, r.frames):
        if m["stage"] != prev_stage and prev_stage is not None:
            total += r.evaluations[prev_stage]
        prev_stage = m["stage"]
        q = scorer(fr)
        row = {"stage": m["stage"], "evals": total + m["evaluations"], "seconds": m["seconds"], **q}
        rows.append(row)
        print(
            f"{row['stage']} evals {row['evals']:4d} {row['seconds']:7.1f}s  grad_err "
            f"{q['grad_err']:6.2f} style_gap {q['style_gap']:.3f} content_gap "
            f"{q['content_gap']:.3f}",
            flush=True,
        )
    from jaxblend.io import save_image

    save_image(r.stage1, Path(f"/tmp/calibrate-stage1-{a.canvas}.png"))
    final = scorer(r.image)
    print("final", json.dumps(final), "evaluations", r.evaluations, "seconds", r.seconds)
    out = Path(__file__).parent / "results" / "calibrate.jsonl"
    with out.open("a") as f:
        rec = {"config": repr(cfg), "rows": rows, "final": final}
        rec.update(evaluations=r.evaluations, seconds=r.seconds)
        f.write(json.dumps(rec) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
