"""Batch-blending throughput: jobs per minute against stack size, and a manifest end to end.

    python bench/batch.py [--sizes 1 2 4 8] [--steps 3 3] [--budget 300] [--tiny-jobs 200]

Part 1: case1 on a 256-pixel canvas (source 150 px), the default configuration except the
budget (``--steps``, objective evaluations per stage), one stack of each size solved with
:func:`jaxblend.blend.run_stages` (``batched=True``) twice: the first call includes
compilation, the second is the steady-state rate reported as jobs/min. Sizes left when
``--budget`` seconds have passed are recorded as skipped.

Part 2: a generated manifest of ``--tiny-jobs`` jobs on a 32-pixel canvas (case1 shrunk,
VGG blocks 1–2, 4 stage-1 evaluations, stage 2 off, lbfgs solver) through
:func:`jaxblend.batch.run_manifest` end to end (compilation, PNG writes and the results log
included), stack 8.

Writes ``bench/results/batch-<platform>-<date>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

from bench.hardware import device_info  # noqa: E402
from jaxblend import BlendConfig, load_vgg  # noqa: E402
from jaxblend.batch import run_manifest  # noqa: E402
from jaxblend.blend import run_stages  # noqa: E402
from jaxblend.io import EXAMPLES_DIR, place  # noqa: E402

CASE = EXAMPLES_DIR / "case1"
SHALLOW = (("relu1_2", 1.0), ("relu2_2", 1.0))
TINY_JSON = {
    "canvas": 32, "source_size": 18, "init": "noise", "chunk": 100, "stage2_enabled": False,
    "solver": "lbfgs",
    "stage1": {"grad": 1.0, "content": 1e-3, "style": 3e-4, "hist": 1e-4, "tv": 1e-6,
               "steps": 4, "style_layers": [list(x) for x in SHALLOW],
               "hist_layers": [["relu2_2", 1.0]]},
}  # fmt: skip


def stack_rates(sizes, steps, budget, vgg, record) -> list[dict]:
    cfg = BlendConfig(canvas=256, source_size=150).replace(steps1=steps[0], steps2=steps[1])
    job = place(CASE / "source.png", CASE / "target.png", CASE / "mask.png",
                center=(100, 118), canvas=256, source_size=150)  # fmt: skip
    rows, t_start = [], time.perf_counter()
    for n in sizes:
        if time.perf_counter() - t_start > budget:
            rows.append({"stack": n, "skipped": "time budget"})
            record(rows)
            continue
        t, s, m = (np.stack([getattr(job, a)] * n) for a in ("target", "source", "mask"))
        seeds = np.arange(n, dtype=np.uint32)
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            out = run_stages(cfg, vgg, t, s, m, seed=seeds, batched=True)
            np.asarray(out["image"])
            times.append(time.perf_counter() - t0)
        ev = {k: int(np.asarray(v).max()) for k, v in out["evaluations"].items()}
        rate = round(n / times[1] * 60, 2)
        rows.append({"stack": n, "first_s": round(times[0], 2), "steady_s": round(times[1], 2),
                     "jobs_per_min": rate, "evaluations_max": ev})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
        record(rows)
    return rows


def manifest_run(n_jobs: int, stack: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        Image.open(CASE / "target.png").convert("RGB").resize((48, 48)).save(d / "t.png")
        Image.open(CASE / "source.png").convert("RGB").resize((24, 24)).save(d / "s.png")
        Image.open(CASE / "mask.png").convert("L").resize((24, 24)).save(d / "m.png")
        (d / "c.json").write_text(json.dumps(TINY_JSON))
        rows = [{"id": f"job{i:04d}", "source": "s.png", "mask": "m.png", "target": "t.png",
                 "center": f"{13 + i % 6},{13 + (i // 6) % 6}", "seed": i}
                for i in range(n_jobs)]  # fmt: skip
        (d / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        t0 = time.perf_counter()
        rc = run_manifest(d / "m.jsonl", d / "out", batch_size=stack, config_path=d / "c.json",
                          quiet=True)  # fmt: skip
        dt = time.perf_counter() - t0
        recs = (d / "out" / "results.jsonl").read_text().splitlines()
        ok = sum(json.loads(r)["status"] == "ok" for r in recs)
    return {"jobs": n_jobs, "stack": stack, "exit": rc, "ok": ok, "seconds": round(dt, 2),
            "jobs_per_min": round(ok / dt * 60, 1)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--steps", type=int, nargs=2, default=[3, 3])
    ap.add_argument("--budget", type=float, default=300.0)
    ap.add_argument("--tiny-jobs", type=int, default=200)
    ap.add_argument("--tiny-stack", type=int, default=8)
    ap.add_argument("--render", default=None, help="rewrite the .md of a results .json")
    a = ap.parse_args()
    if a.render:
        from bench.report import rerender

        print(rerender(a.render, markdown))
        return
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    info = device_info()
    print(json.dumps(info), flush=True)
    vgg = load_vgg()
    settings = {"canvas": 256, "source_size": 150, "config": "BlendConfig() defaults "
                "(lbfgs solver, poisson init, VGG16 to relu4_3)", "steps": a.steps,
                "devices": len(jax.local_devices())}  # fmt: skip
    man: dict = {}
    stacks: list = []
    man = manifest_run(a.tiny_jobs, a.tiny_stack)  # first: cheap, and always recorded
    print(json.dumps(man), flush=True)
    write(info, settings, stacks, man, a)
    stacks = stack_rates(a.sizes, a.steps, a.budget, vgg,
                         lambda rows: write(info, settings, rows, man, a))  # fmt: skip


def write(info, settings, stacks, man, a) -> None:
    date = _dt.date.today().isoformat()
    res = {"device": info, "settings": settings, "stacks": stacks, "manifest": man,
           "manifest_config": TINY_JSON}  # fmt: skip
    out = Path(__file__).parent / "results" / f"batch-{jax.default_backend()}-{date}"
    out.parent.mkdir(exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res), flush=True)


def markdown(res: dict) -> str:
    """The results file's table: Part 1 (stack rates), Part 2 (the tiny manifest)."""
    info, settings, man = res["device"], res["settings"], res["manifest"]
    steps = settings["steps"]
    lines = [
        f"# Batch throughput, {info['device_kind']} ({info['cpu_count']} cores), "
        f"{info['date'][:10]}",
        "",
        f"jax {info['versions']['jax']}, jaxlib {info['versions']['jaxlib']}, "
        f"optax {info['versions']['optax']}, jaxopt {info['versions']['jaxopt']}; "
        f"{settings['devices']} device(s).",
        "",
        f"Part 1: case1 at 256² (source 150 px), {settings['config']}, "
        f"steps {steps[0]}+{steps[1]} evaluations; one stack via run_stages(batched=True).",
        "",
        "| stack | first call s (compile+run) | steady s | jobs/min |",
        "|---:|---:|---:|---:|",
    ]
    for r in res["stacks"]:
        if "skipped" in r:
            lines.append(f"| {r['stack']} | skipped ({r['skipped']}) | | |")
        else:
            lines.append(f"| {r['stack']} | {r['first_s']} | {r['steady_s']} | "
                         f"{r['jobs_per_min']} |")  # fmt: skip
    lines += [
        "",
        f"Part 2: {man['jobs']} tiny jobs (32² canvas, blocks 1–2, 4 evaluations, stage 1, "
        f"lbfgs) through run_manifest, stack {man['stack']}: {man['ok']} ok in "
        f"{man['seconds']} s = **{man['jobs_per_min']} jobs/min** (exit {man['exit']}; "
        "compilation, PNG writes and the fsynced log included).",
        "",
    ]
    if res.get("notes"):
        lines += [res["notes"], ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
