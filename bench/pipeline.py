"""A manifest end to end against the pure device rate: does host work hide behind compute?

    python bench/pipeline.py [--jobs 160] [--canvas 64] [--steps 2 2] [--stack 8]
    python bench/pipeline.py --render bench/results/pipeline-<platform>-<date>.json

Real jobs: the case images of ``jaxblend/examples/case1`` and ``../shared/examples``
(case1, case2, case4, where present: PNGs decoded and resized for every job), the object
at half the canvas's side and at varied placements (seeded), the default configuration
except the canvas and the budget (``--steps``, evaluations per stage). After one stack has
compiled every program (untimed), in this order:

* device: every job placed beforehand (untimed), then only the stacks solved
  (:func:`jaxblend.batch._solve_stack`: arrays to the devices, both stages, results fetched
  and rounded to uint8) -- the rate with no decoding, placing or writing at all;
* pipeline: :func:`jaxblend.batch.run_manifest` with ``--workers`` host threads (decoding
  and placing the next stack, encoding and writing the previous one while a stack
  computes), from the manifest to the PNGs and the fsynced ``results.jsonl``;
* serial: the same with ``workers=0`` (each step after the other, as before the pipeline).

Writes ``bench/results/pipeline-<platform>-<date>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402

from bench.hardware import device_info  # noqa: E402
from jaxblend import load_vgg  # noqa: E402
from jaxblend.batch import (  # noqa: E402
    _prepare_one,
    _solve_stack,
    default_workers,
    load_config,
    read_manifest,
    run_manifest,
)

RESULTS = ROOT / "bench" / "results"
CASES = [ROOT / "jaxblend" / "examples" / "case1"] + [
    ROOT.parent / "shared" / "examples" / c for c in ("case1", "case2", "case4")
]


def make_manifest(
    folder: Path, n: int, canvas: int, steps: tuple[int, int], seed: int = 0, name: str = "jobs"
):
    """``n`` jobs over the available cases at seeded placements; returns the manifest path."""
    cases = [c for c in CASES if all((c / f).exists() for f in ("source.png", "mask.png",
                                                                  "target.png"))]  # fmt: skip
    ss = canvas // 2
    rng = np.random.default_rng(seed)
    lo, hi = ss / 2 + 1, canvas - ss / 2 - 1
    rows = []
    for i in range(n):
        c = cases[i % len(cases)]
        r, col = rng.uniform(lo, hi, 2).round(1)
        rows.append({"id": f"job{i:04d}", "source": str(c / "source.png"),
                     "mask": str(c / "mask.png"), "target": str(c / "target.png"),
                     "center": [float(r), float(col)], "seed": i})  # fmt: skip
    cfg = {"canvas": canvas, "source_size": ss, "stage1": {"steps": steps[0]},
           "stage2": {"steps": steps[1]}}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(cfg))
    m = folder / f"{name}.jsonl"
    m.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return m, [str(c.relative_to(ROOT.parent)) for c in cases]


def image_sides(cases: list[str]) -> list[int]:
    """Smallest and largest side of the cases' images (what each job decodes)."""
    from PIL import Image

    sides = []
    for c in cases:
        for f in ("source.png", "mask.png", "target.png"):
            with Image.open(ROOT.parent / c / f) as im:
                sides += list(im.size)
    return [min(sides), max(sides)]


def device_rate(manifest: Path, config_path: Path, stack: int, vgg) -> dict:
    """Seconds to solve every stack of the manifest's jobs, laid out beforehand."""
    config = load_config(config_path)
    jobs = read_manifest(manifest)
    t0 = time.perf_counter()
    ready = [_prepare_one(i, j, config) for i, j in enumerate(jobs)]
    layout_s = time.perf_counter() - t0
    devs = tuple(jax.local_devices())
    t0 = time.perf_counter()
    done = 0
    for k in range(0, len(ready), stack):
        part = ready[k : k + stack]
        padded = part + [part[-1]] * (stack - len(part))
        done += len(_solve_stack(part[0].config, vgg, part, padded, devs))
    dt = time.perf_counter() - t0
    return {"jobs": done, "seconds": round(dt, 2), "jobs_per_min": round(done / dt * 60, 1),
            "layout_seconds_serial": round(layout_s, 2)}  # fmt: skip


def manifest_rate(manifest: Path, config_path: Path, stack: int, out: Path, workers: int):
    t0 = time.perf_counter()
    rc = run_manifest(manifest, out, batch_size=stack, config_path=config_path, quiet=True,
                      workers=workers)  # fmt: skip
    dt = time.perf_counter() - t0
    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    ok = sum(r["status"] == "ok" for r in recs)
    return {"workers": workers, "exit": rc, "ok": ok, "seconds": round(dt, 2),
            "jobs_per_min": round(ok / dt * 60, 1)}  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=160)
    ap.add_argument("--canvas", type=int, default=64)
    ap.add_argument("--steps", type=int, nargs=2, default=[2, 2])
    ap.add_argument("--stack", type=int, default=8)
    ap.add_argument("--workers", type=int, default=None, help="default: one per core, <= 8")
    ap.add_argument("--out", default=None, help="results file stem")
    ap.add_argument("--render", default=None, help="rewrite the .md of a results .json")
    a = ap.parse_args(argv)
    if a.render:
        from bench.report import rerender

        print(rerender(a.render, markdown))
        return 0
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    info = device_info()
    workers = default_workers() if a.workers is None else a.workers
    vgg = load_vgg()
    res: dict = {"device": info, "load_before": list(os.getloadavg())}
    with tempfile.TemporaryDirectory(prefix="jaxblend-pipeline-") as d:
        d = Path(d)
        m, cases = make_manifest(d, a.jobs, a.canvas, tuple(a.steps))
        cfg = d / "config.json"
        res["settings"] = {"jobs": a.jobs, "canvas": a.canvas, "steps": a.steps,
                           "stack": a.stack, "workers": workers, "cases": cases,
                           "devices": len(jax.local_devices()),
                           "image_sides": image_sides(cases)}  # fmt: skip
        warm, _ = make_manifest(d, a.stack, a.canvas, tuple(a.steps), seed=1, name="warm")
        t0 = time.perf_counter()
        run_manifest(warm, d / "warm", batch_size=a.stack, config_path=cfg, quiet=True)
        res["compile_seconds"] = round(time.perf_counter() - t0, 1)
        print(f"compiled in {res['compile_seconds']} s", flush=True)
        res["device_only"] = device_rate(m, cfg, a.stack, vgg)
        print("device", res["device_only"], flush=True)
        res["pipeline"] = manifest_rate(m, cfg, a.stack, d / "threads", workers)
        print("pipeline", res["pipeline"], flush=True)
        res["serial"] = manifest_rate(m, cfg, a.stack, d / "serial", 0)
        print("serial", res["serial"], flush=True)
        same = all((d / "threads" / f"job{i:04d}.png").read_bytes()
                   == (d / "serial" / f"job{i:04d}.png").read_bytes()
                   for i in range(a.jobs))  # fmt: skip
        res["outputs_identical"] = same
    res["load_after"] = list(os.getloadavg())
    stem = a.out or f"pipeline-{jax.default_backend()}-{_dt.date.today().isoformat()}"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(res, indent=1) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(res))
    print(markdown(res))
    return 0


def markdown(res: dict) -> str:
    info, st = res["device"], res["settings"]
    dev, pipe, ser = res["device_only"], res["pipeline"], res["serial"]
    where = info["device_kind"] + (
        f" ({info['cpu_count']} cores)" if info["jax_backend"] == "cpu" else ""
    )
    steps = st["steps"]
    lo, hi = st.get("image_sides", (350, 696))  # the files of 2026-12-02 predate the field
    sides = f"{lo}–{hi}"
    lines = [
        f"# Manifest pipeline, {where}, {info['date'][:10]}",
        "",
        f"jax {info['versions']['jax']}; {st['devices']} device(s). {st['jobs']} real jobs "
        f"({', '.join(st['cases'])}: PNGs of {sides} px decoded and resized per job) at "
        f"seeded placements, canvas {st['canvas']}², object {st['canvas'] // 2} px, default "
        f"configuration at {steps[0]} + {steps[1]} evaluations, stacks of {st['stack']}; "
        f"programs compiled beforehand ({res['compile_seconds']} s, untimed). Load average "
        f"{res['load_before'][0]:.1f} before, {res['load_after'][0]:.1f} after (a shared "
        "machine).",
        "",
        "| run | what is timed | seconds | jobs/min | of device rate |",
        "|---|---|---:|---:|---:|",
        f"| device only | stacks solved from arrays in memory (placing them took "
        f"{dev['layout_seconds_serial']} s more, untimed) | {dev['seconds']} | "
        f"{dev['jobs_per_min']} | 100% |",
        f"| pipeline, {pipe['workers']} host threads | manifest to PNGs and fsynced log | "
        f"{pipe['seconds']} | {pipe['jobs_per_min']} | "
        f"{pipe['jobs_per_min'] / dev['jobs_per_min']:.0%} |",
        f"| serial (workers=0) | the same, one step after the other | {ser['seconds']} | "
        f"{ser['jobs_per_min']} | {ser['jobs_per_min'] / dev['jobs_per_min']:.0%} |",
        "",
        f"Pipeline and serial runs wrote {'identical' if res['outputs_identical'] else 'DIFFERENT'}"
        f" PNGs ({pipe['ok']} and {ser['ok']} ok).",
    ]
    if res.get("notes"):
        lines += ["", res["notes"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
