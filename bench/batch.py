"""Batch throughput at the default budget: jobs per minute and TFLOP/s against stack size.

    python bench/batch.py [--canvas 512 1024] [--sizes 1 4 16] [--batch-size auto]
                          [--then-sizes 8] [--budget default|small] [--max-stack N]
                          [--time-budget S] [--precision auto]
    python bench/batch.py --render bench/results/batch-<platform>-<date>.json

For each canvas, case1 at the authors' placement scaled to it (512: source 300 px, centre
200,235) with the default :class:`~jaxblend.BlendConfig` (``--budget default``: its
objective evaluations per stage; ``small``: 2 + 2, for a CPU), and one stack of each size
solved through the production path (:func:`jaxblend.batch._solve_stack`: the stack sharded
over the local devices, ``run_stages(batched=True)``, the results fetched and rounded)
twice: the first call includes compilation, the second is the steady state reported.
``--batch-size auto`` adds the stack :func:`jaxblend.batch.auto_batch_size` picks (per-job
memory from XLA's analysis against free device memory). Stacks above ``--max-stack``, and
every stack once ``--time-budget`` seconds have passed, are recorded as skipped.

Achieved TFLOP/s: objective evaluations (every job's, both stages) x the counted VGG16
FLOPs of one evaluation (forward + input-gradient backward to relu4_3,
:func:`bench.hardware.vgg16_flops`) / steady seconds. The Poisson start and each stage's
constants (a few forwards per job) are not counted, so this is a lower bound. It is set
against the same run's dense-matmul rate at the precision the configuration resolves to
(:func:`bench.hardware.matmul_gflops`).

Writes ``bench/results/batch-<platform>-<date>.json`` and ``.md`` after every stack.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

from bench.hardware import device_info, matmul_gflops, vgg16_flops  # noqa: E402
from jaxblend import BlendConfig, load_vgg  # noqa: E402
from jaxblend.batch import _Prepared, _solve_stack, auto_batch_size, stack_size  # noqa: E402
from jaxblend.blend import resolve_precision  # noqa: E402
from jaxblend.io import EXAMPLES_DIR, place  # noqa: E402

CASE = EXAMPLES_DIR / "case1"
RESULTS = Path(__file__).resolve().parent / "results"
BUDGETS = {"default": None, "small": (2, 2)}


def case1_job(canvas: int):
    s = canvas / 512
    return place(CASE / "source.png", CASE / "target.png", CASE / "mask.png",
                 center=(200 * s, 235 * s), canvas=canvas, source_size=round(300 * s))  # fmt: skip


def config_for(canvas: int, budget: str, precision: str) -> BlendConfig:
    cfg = BlendConfig(canvas=canvas, source_size=round(300 * canvas / 512), precision=precision)
    steps = BUDGETS[budget]
    return cfg if steps is None else cfg.replace(steps1=steps[0], steps2=steps[1])


def time_stack(cfg: BlendConfig, vgg, job, n: int, devices, repeats: int) -> dict:
    """First call (compile + run) and steady seconds of one stack of ``n`` case1 jobs."""
    part = [_Prepared(i, job, cfg, i) for i in range(n)]
    times, results = [], None
    for _ in range(1 + repeats):
        t0 = time.perf_counter()
        results = _solve_stack(cfg, vgg, part, part, devices)
        times.append(time.perf_counter() - t0)
    evals = sum(sum(r.evaluations.values()) for _, r, _ in results)
    steady = min(times[1:])
    h, w = job.target.shape[:2]
    flops = evals * vgg16_flops(h, w)["forward_backward_flops"]
    return {
        "first_s": round(times[0], 3),
        "steady_s": round(steady, 3),
        "steady_times": [round(t, 3) for t in times[1:]],
        "evaluations": evals,
        "evaluations_per_job": sorted({sum(r.evaluations.values()) for _, r, _ in results}),
        "finite": all(f for _, _, f in results),
        "jobs_per_min": round(n / steady * 60, 2),
        "evaluations_per_s": round(evals / steady, 1),
        "tflops": round(flops / steady / 1e12, 3),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--canvas", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument(
        "--then-sizes",
        type=int,
        nargs="*",
        default=[],
        help="more stacks, every canvas's, after all the first ones (time allowing)",
    )
    ap.add_argument("--batch-size", choices=("auto",), default=None,
                    help="also the stack auto_batch_size picks")  # fmt: skip
    ap.add_argument("--budget", choices=tuple(BUDGETS), default="default")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--max-stack", type=int, default=None)
    ap.add_argument("--time-budget", type=float, default=1e9, help="seconds")
    ap.add_argument("--repeats", type=int, default=1, help="steady calls per stack (min)")
    ap.add_argument("--out", default=None, help="results file stem")
    ap.add_argument("--render", default=None, help="rewrite the .md of a results .json")
    a = ap.parse_args(argv)
    if a.render:
        from bench.report import rerender

        print(rerender(a.render, markdown))
        return 0
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    info = device_info()
    print(json.dumps(info), flush=True)
    devices = tuple(jax.local_devices())
    platform = devices[0].platform
    vgg = load_vgg()
    precision = resolve_precision(a.precision, platform)
    t_start = time.perf_counter()
    peak = matmul_gflops(precision=precision, repeats=5)
    print(f"matmul peak ({precision}, {peak['n']}²): {peak['gflops']:.0f} GFLOP/s", flush=True)
    res = {
        "device": info,
        "settings": {
            "canvas": a.canvas, "sizes": a.sizes, "then_sizes": a.then_sizes,
            "batch_size": a.batch_size,
            "budget": a.budget, "precision": a.precision, "resolved_precision": precision,
            "max_stack": a.max_stack, "time_budget": a.time_budget, "repeats": a.repeats,
            "steps": [config_for(512, a.budget, a.precision).stage1.steps,
                      config_for(512, a.budget, a.precision).stage2.steps],
            "devices": len(devices), "platform": platform,
            "config": "BlendConfig() defaults (lbfgs, poisson init, VGG16 to relu4_3), "
                      "case1 at the authors' placement scaled to the canvas",
        },
        "peak": {k: peak[k] for k in ("gflops", "n", "precision", "seconds")},
        "load_average": [list(os.getloadavg())],
        "rows": [],
    }  # fmt: skip
    stem = a.out or f"batch-{jax.default_backend()}-{_dt.date.today().isoformat()}"
    plan = []  # (canvas, stack, auto): every canvas's first sizes, then the others
    for canvas in a.canvas:
        cfg = config_for(canvas, a.budget, a.precision)
        sizes = [(stack_size(n, n, len(devices)), False) for n in a.sizes]
        if a.batch_size == "auto":
            n, per_job, how = auto_batch_size(cfg, vgg, case1_job(canvas).target.shape, devices)
            res["rows"].append({"canvas": canvas, "auto_pick": n, "per_job_bytes": per_job,
                                "how": how})  # fmt: skip
            print(f"{canvas}²: auto picks {n} ({how} {per_job / 2**20:.0f} MiB per job)")
            sizes.append((n, True))
        plan += [(canvas, n, auto) for n, auto in sizes]
    for canvas in a.canvas:
        plan += [(canvas, stack_size(n, n, len(devices)), False) for n in a.then_sizes]
    for canvas, n, auto in plan:
        cfg = config_for(canvas, a.budget, a.precision)
        row = {"canvas": canvas, "stack": n, "auto": auto}
        if a.max_stack is not None and n > a.max_stack:
            row["skipped"] = f"above --max-stack {a.max_stack}"
        elif time.perf_counter() - t_start > a.time_budget:
            row["skipped"] = "time budget"
        else:
            row.update(time_stack(cfg, vgg, case1_job(canvas), n, devices, a.repeats))
            row["of_peak"] = round(row["tflops"] * 1e3 / peak["gflops"], 4)
        print(json.dumps(row), flush=True)
        res["rows"].append(row)
        res["load_average"].append(list(os.getloadavg()))
        write(res, stem)
    write(res, stem)
    print(markdown(res))
    return 0


def write(res: dict, stem: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(res, indent=1) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(res))


def markdown(res: dict) -> str:
    info, st, peak = res["device"], res["settings"], res["peak"]
    s1, s2 = st.get("steps", BUDGETS["small"])  # every file without "steps" was small
    budget = f"{s1} + {s2} ({'the default' if st['budget'] == 'default' else 'small'})"
    where = info["device_kind"] + (f" ({info['cpu_count']} cores)" if st["platform"] == "cpu"
                                   else "")  # fmt: skip
    lines = [
        f"# Batch throughput, {where}, {info['date'][:10]}",
        "",
        f"jax {info['versions']['jax']}, jaxlib {info['versions']['jaxlib']}; "
        f"{st['devices']} {st['platform']} device(s); precision {st['precision']} = "
        f"{st['resolved_precision']}; matmul peak at {peak['precision']} ({peak['n']}², "
        f"measured in this run) {peak['gflops'] / 1e3:.3g} TFLOP/s.",
        "",
        f"{st['config']}; budget {budget} evaluations per job. One stack of n copies of "
        "the job through the production path (sharded over the devices, results fetched); "
        "the first call compiles, the steady call (the least of "
        f"{st['repeats']}) gives the rates. TFLOP/s: evaluations x the VGG16 FLOPs of one "
        "(forward + input-gradient backward) / steady seconds (Poisson start and per-stage "
        "constants not counted).",
        "",
        "| canvas | stack | first call s (compile + run) | steady s | jobs/min | "
        "evaluations/s | TFLOP/s | of matmul peak |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(res["rows"], key=lambda r: (r["canvas"], r.get("stack", 0))):
        if "auto_pick" in r:
            continue
        n = f"{r['stack']} (auto)" if r.get("auto") else str(r["stack"])
        if "skipped" in r:
            lines.append(f"| {r['canvas']}² | {n} | skipped ({r['skipped']}) | | | | | |")
            continue
        lines.append(
            f"| {r['canvas']}² | {n} | {r['first_s']:.1f} | {r['steady_s']:.2f} | "
            f"{r['jobs_per_min']:.1f} | {r['evaluations_per_s']:.3g} | {r['tflops']:.3g} | "
            f"{r['of_peak']:.1%} |"
        )
    if res.get("load_average"):
        ones = [x[0] for x in res["load_average"]]
        lines += ["", f"One-minute load average during the run {min(ones):.1f} to {max(ones):.1f}."]
    autos = [r for r in res["rows"] if "auto_pick" in r]
    if autos:
        lines += [""] + [
            f"`--batch-size auto` at {r['canvas']}²: {r['auto_pick']} jobs per stack "
            f"({r['how']} {r['per_job_bytes'] / 2**20:.0f} MiB per job)."
            for r in autos
        ]
    if res.get("notes"):
        lines += ["", res["notes"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
