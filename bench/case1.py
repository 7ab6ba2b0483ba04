"""The default deep blend on case1 at the authors' placement, scored with bench/quality.py.

    python bench/case1.py [--steps S1 S2] [--set '{"init": "paste"}'] [--tag NAME]

Case1 as the authors ran it: canvas 512 (the 564² target resized), source and mask resized
to 300, source centre at row 200, column 235. Runs ``jaxblend.blend`` with the default
``BlendConfig`` (overrides with ``--set``), scores the stage-1 and final images and the
authors' own outputs with the same figures, and writes
``bench/results/case1-<platform>-<tag>-<date>.{json,md}`` (platform: JAX's backend,
``cpu``, ``gpu``, ...) plus the two images as PNG. Prints the command, the figures, the
evaluations and the seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import hardware  # noqa: E402
from bench.quality import CASE1_PLACEMENT, Scorer, case_job  # noqa: E402

CASE1 = ROOT / "jaxblend" / "examples" / "case1"
SHARED = ROOT.parent / "shared" / "examples" / "case1"
RESULTS = ROOT / "bench" / "results"


def main(argv=None) -> int:
    from jaxblend import BlendConfig, load_vgg
    from jaxblend.blend import blend_job
    from jaxblend.io import save_image

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, nargs=2, default=None, metavar=("S1", "S2"))
    ap.add_argument("--set", default="{}", help="JSON of BlendConfig overrides")
    ap.add_argument("--tag", default="default")
    a = ap.parse_args(argv)

    date = dt.date.today().isoformat()
    info = hardware.device_info()
    job = case_job(CASE1, **CASE1_PLACEMENT)
    vgg = load_vgg()
    cfg = BlendConfig(canvas=512, source_size=300, **json.loads(a.set))
    if a.steps:
        cfg = cfg.replace(steps1=a.steps[0], steps2=a.steps[1])
    cmd = "python bench/case1.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"{cmd}\ndevice {info['device']} ({info['cpu_count']} cores), jax "
          f"{info['versions']['jax']}\nconfig {cfg}", flush=True)  # fmt: skip
    t0 = time.perf_counter()
    r = blend_job(job, config=cfg, vgg=vgg)
    wall = time.perf_counter() - t0
    scorer = Scorer(job, vgg)
    rows = {"stage1": scorer(r.stage1), "final": scorer(r.image)}
    for name in ("stage1", "stage2"):
        p = SHARED / f"reference_{name}.png"
        if p.exists():
            rows[f"authors_{name}"] = scorer(np.asarray(Image.open(p).convert("RGB"), np.float32))
    rows["naive_paste"] = scorer(job.naive)
    stem = f"case1-{info['jax_backend']}-{a.tag}-{date}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    save_image(r.stage1, RESULTS / f"{stem}-stage1.png")
    save_image(r.image, RESULTS / f"{stem}-final.png")
    res = {
        "command": cmd, "device": info, "config": repr(cfg), "figures": rows,
        "evaluations": r.evaluations, "total_evaluations": sum(r.evaluations.values()),
        "seconds": r.seconds, "wall_seconds": wall, "losses": r.losses,
    }  # fmt: skip
    (RESULTS / f"{stem}.json").write_text(json.dumps(res, indent=1, default=str))
    kind = "" if info["jax_backend"] == "cpu" else f"{info['device_kind']}, "
    md = [
        f"Case1 at the authors' placement (512² canvas, source 300, centre 200,235) on "
        f"{info['device']} ({kind}{info['cpu_count']} cores), {date}: `{cmd.strip()}`",
        "",
        "| image | grad_err | style_gap | content_gap | evaluations | seconds |",
        "|---|---|---|---|---|---|",
    ]
    ev, sec = r.evaluations, r.seconds
    for name, q in rows.items():
        if name == "stage1":
            e, s = ev["stage1"], f"{sec['stage1']:.0f}"
        elif name == "final":
            e, s = sum(ev.values()), f"{wall:.0f}"
        else:
            e, s = ("≈2000" if name.startswith("authors") else "", "")
        label = {"stage1": "jaxblend stage 1", "final": "jaxblend final",
                 "authors_stage1": "authors' stage 1", "authors_stage2": "authors' final",
                 "naive_paste": "naive paste"}[name]  # fmt: skip
        md.append(
            f"| {label} | {q['grad_err']:.2f} | {q['style_gap']:.3f} | "
            f"{q['content_gap']:.3f} | {e} | {s} |"
        )
    text = "\n".join(md) + "\n"
    (RESULTS / f"{stem}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
