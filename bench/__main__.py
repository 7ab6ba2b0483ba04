"""jaxblend's benchmark suite: ``python -m bench [--quick] [--quality]``.

Writes ``bench/results/<device>-<date>.json`` and ``.md`` and prints the device, library
versions and settings with every figure. Medians over repeats; ratios are measured in the
same run. Sections:

* ceilings — dense matmul and a representative VGG convolution, GFLOP/s;
* per_eval — seconds per objective evaluation (value and gradient) of stage 1 and stage 2
  at each canvas size, achieved GFLOP/s from the counted VGG FLOPs (forward plus
  input-gradient backward, :func:`bench.hardware.vgg16_flops`) and its fraction of the
  matmul rate; the authors' step re-expressed in PyTorch (:mod:`bench.torch_step`) on the
  same weights and canvas, and the ratio (on the GPU, in true float32, when JAX runs on
  one); bfloat16 (``--bf16``) and TensorFloat-32 (``--tf32``) convolutions beside float32;
* memory — compiled temporary + argument bytes of one evaluation per job (XLA's
  ``memory_analysis``) and the process's peak host RSS;
* quality (``--quality``) — time to quality on case1 at the authors' placement (512²):
  evaluations and seconds until ``bench/quality.py``'s figures reach the authors' stage-1
  and final figures, for each init / scales / solver / precision variant asked for.

``--quick`` (a few minutes on a 2-core CPU): 256² only, no torch at 512², no quality runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import hardware  # noqa: E402
from bench.quality import CASE1_PLACEMENT, Scorer, case_job  # noqa: E402

CASE1 = ROOT / "jaxblend" / "examples" / "case1"
RESULTS = ROOT / "bench" / "results"
# The authors' own outputs on case1, measured with bench/quality.py.
AUTHORS_STAGE1 = {"grad_err": 3.81, "style_gap": 0.361, "content_gap": 0.359}
AUTHORS_FINAL = {"grad_err": 25.6, "style_gap": 0.025, "content_gap": 0.466}


def _scaled_job(size):
    s = size / 512
    return case_job(CASE1, size, round(300 * s), (200 * s, 235 * s))


def _stage_setup(stage: int, size: int, precision: str, vgg):
    """A stage's configuration and VGG spec, and case1 at ``size`` as canvas arrays:
    ``(cfg, spec, (target, mask, source), naive paste)``."""
    from jaxblend.config import STAGE1, STAGE2
    from jaxblend.solve import VGGSpec

    job = _scaled_job(size)
    cfg = STAGE1 if stage == 1 else STAGE2
    spec = VGGSpec(vgg.arch, vgg.preprocessing, precision)
    arrays = tuple(jnp.asarray(a) for a in (job.target, job.mask, job.source))
    return cfg, spec, arrays, jnp.asarray(job.naive)


def eval_program(stage: int, size: int, precision: str, vgg):
    """The jitted value-and-gradient of a stage's objective on case1 at ``size``, and its
    arguments (the data prepared once, as in the solver)."""
    from jaxblend.solve import objective, programs

    cfg, spec, (t, m, s), ref = _stage_setup(stage, size, precision, vgg)
    data = programs(cfg, spec, stage == 1, "lbfgs", 10, False).prepare(vgg.params, t, m, s, ref)
    fn = jax.jit(jax.value_and_grad(functools.partial(objective, cfg, spec, stage == 1)))
    return fn, (ref, data)


def in_solver(stage: int, size: int, precision: str, vgg, evals: int, repeats: int = 3) -> dict:
    """Seconds per objective evaluation inside the solver's compiled ``while_loop`` (what a
    blend spends): L-BFGS from the naive paste, ``repeats`` timed runs of ``evals``
    evaluations each after three warm-up evaluations (compilation excluded); the median
    run's seconds per evaluation."""
    from jaxblend.solve import evaluations, programs

    cfg, spec, (t, m, s), ref = _stage_setup(stage, size, precision, vgg)
    p = programs(cfg, spec, stage == 1, "lbfgs", 10, False)
    data = p.prepare(vgg.params, t, m, s, ref)
    carry = jax.block_until_ready(p.advance(p.start(ref, data), data, jnp.int32(3)))
    per, runs = [], []
    for _ in range(repeats):
        n0 = int(evaluations("lbfgs", carry))
        t0 = time.perf_counter()
        carry = jax.block_until_ready(p.advance(carry, data, jnp.int32(n0 + evals)))
        sec = time.perf_counter() - t0
        n = int(evaluations("lbfgs", carry)) - n0
        if n > 0:
            per.append(sec / n)
            runs.append({"evaluations": n, "seconds": sec})
    return {"seconds": statistics.median(per), "runs": runs}


def per_eval(sizes, repeats, precisions, torch_sizes, matmul, vgg, stages=(1, 2)):
    """``matmul``: the matmul ceiling in GFLOP/s of each precision (a dict), or one number."""
    from jaxblend.weights import load_weights

    rows = []
    tw = None
    if torch_sizes:
        from bench import torch_step

        # The authors' step runs where JAX runs: on the GPU if JAX and PyTorch both see one.
        torch_device = torch_step.default_device() if jax.default_backend() == "gpu" else "cpu"
    for size in sizes:
        flops = hardware.vgg16_flops(size, size)["forward_backward_flops"]
        for precision in precisions:
            for stage in stages:
                fn, args = eval_program(stage, size, precision, vgg)
                alone, times = hardware._median_time(fn, args, repeats)
                loop = in_solver(stage, size, precision, vgg, 4, repeats)
                sec = loop["seconds"]
                ceiling = matmul[precision] if isinstance(matmul, dict) else matmul
                rows.append({
                    "impl": "jaxblend", "stage": stage, "size": size, "precision": precision,
                    "seconds": sec, "in_solver": loop, "standalone_seconds": alone,
                    "standalone_times": times, "vgg_flops": flops,
                    "gflops": flops / sec / 1e9, "matmul_fraction": flops / sec / 1e9 / ceiling,
                })  # fmt: skip
                print(f"  jaxblend stage {stage} {size}² {precision}: {sec:.3f} s/eval in the "
                      f"solver ({alone:.3f} s standalone), {flops / sec / 1e9:.0f} GFLOP/s = "
                      f"{flops / sec / 1e9 / ceiling:.0%} of {precision} matmul",
                      flush=True)  # fmt: skip
        if size in torch_sizes:
            if tw is None:
                w, _ = load_weights(ROOT / "weights" / "vgg16_imagenet_blocks1-4.safetensors")
                tw = {
                    f"{k}.{p}": np.asarray(v[p], np.float32)
                    for k, v in w["params"].items()
                    for p in ("kernel", "bias")
                }
            # On a GPU twice: TF32 off (true FP32, beside our float32 rows) and PyTorch's
            # defaults (TF32 convolutions, beside our tf32 and bfloat16 rows).
            modes = [False, True] if str(torch_device).startswith("cuda") else [False]
            for tf32 in modes:
                label = "tf32" if tf32 else "float32"
                try:
                    r = torch_step.time_authors_step(
                        tw, size, repeats=repeats, device=torch_device, tf32=tf32
                    )
                except Exception as e:  # noqa: BLE001 - the baseline must not cost the rows
                    print(f"  authors' step (PyTorch on {torch_device}, {label}) {size}²: "
                          f"failed: {e!r}", flush=True)  # fmt: skip
                    continue
                ours = next((x["seconds"] for x in rows if x["impl"] == "jaxblend"
                             and x["size"] == size and x["stage"] == 1
                             and x["precision"] == label), None)  # fmt: skip
                sp = r["seconds_per_eval"]
                rows.append({
                    "impl": "authors-torch", "stage": 1, "size": size, "precision": label,
                    "seconds": sp, "times": r["times"],
                    "torch": r["torch_version"], "threads": r["threads"],
                    "device": r["device"], "device_name": r["device_name"],
                    "torch_precision": r["precision"],
                    "speedup_of_jaxblend": sp / ours if ours else None,
                })  # fmt: skip
                vs = f"jaxblend {label} is {sp / ours:.2f}x faster" if ours else ""
                print(f"  authors' step (PyTorch on {r['device_name']}, {label}) {size}²: "
                      f"{sp:.3f} s/eval; {vs}; {r['precision']}", flush=True)  # fmt: skip
    return rows


def memory(sizes, vgg):
    rows = []
    for size in sizes:
        fn, args = eval_program(1, size, "float32", vgg)
        ma = fn.lower(*args).compile().memory_analysis()
        row = {"size": size}
        if ma is not None:
            row.update(
                temp_bytes=int(ma.temp_size_in_bytes),
                argument_bytes=int(ma.argument_size_in_bytes),
                output_bytes=int(ma.output_size_in_bytes),
            )
            row["per_job_bytes"] = row["temp_bytes"] + row["argument_bytes"]
        jax.block_until_ready(fn(*args))
        row["host_peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        for d in jax.local_devices()[:1]:
            stats = getattr(d, "memory_stats", lambda: None)()
            if stats and "peak_bytes_in_use" in stats:
                row["device_peak_bytes"] = int(stats["peak_bytes_in_use"])
        print(f"  memory {size}²: {row}", flush=True)
        rows.append(row)
    return rows


def _reached(q, goal):
    return all(q[k] <= goal[k] for k in ("style_gap", "content_gap")) and (
        q["grad_err"] <= goal["grad_err"]
    )


def time_to_quality(variants, vgg, budget1, budget2):
    from jaxblend import BlendConfig
    from jaxblend.blend import blend_job

    job = case_job(CASE1, **CASE1_PLACEMENT)
    scorer = Scorer(job, vgg)
    rows = []
    for v in variants:
        cfg = BlendConfig(canvas=512, source_size=300, chunk=10, **v).replace(
            steps1=budget1, steps2=budget2
        )
        marks: list[dict] = []
        t0 = time.perf_counter()

        def note(i, marks=marks, t0=t0):
            marks.append({**i, "t": time.perf_counter() - t0})

        r = blend_job(job, config=cfg, vgg=vgg, frames=True, progress=note)
        # Coarse scales (scales < 1) report progress but keep no frames; their evaluations
        # (each on a smaller canvas) count towards stage 1's total.
        coarse: dict[float, int] = {}
        for m in marks:
            if m["scale"] < 1.0:
                coarse[m["scale"]] = max(coarse.get(m["scale"], 0), m["evaluations"])
        fine = [m for m in marks if m["scale"] == 1.0]
        assert len(fine) == len(r.frames), (len(fine), len(r.frames))
        s1_at, fin_at, traj = None, None, []
        for m, fr in zip(fine, r.frames):
            offset = sum(coarse.values()) if m["stage"] == "stage1" else r.evaluations["stage1"]
            q = scorer(fr)
            n = offset + m["evaluations"]
            traj.append({
                "stage": m["stage"], "evaluations": n, "seconds": m["t"], "loss": m["loss"], **q
            })  # fmt: skip
            if s1_at is None and m["stage"] == "stage1" and _reached(q, AUTHORS_STAGE1):
                s1_at = {"evaluations": n, "seconds": m["t"]}
            if fin_at is None and _reached(q, {**AUTHORS_FINAL, "grad_err": np.inf}):
                fin_at = {"evaluations": n, "seconds": m["t"]}
        final = scorer(r.image)
        row = {
            "variant": v, "stage1_reached": s1_at, "final_reached": fin_at,
            "final": final, "stage1": scorer(r.stage1), "evaluations": r.evaluations,
            "seconds": r.seconds, "trajectory": traj,
        }  # fmt: skip
        print(f"  quality {v}: stage-1 goal at {s1_at}, final goal at {fin_at}; final {final}",
              flush=True)  # fmt: skip
        rows.append(row)
    return rows


def _ceilings_text(ceilings: dict) -> str:
    conv = f"VGG conv {ceilings['conv']['gflops']:.0f} GFLOP/s"
    if "matmul_by_precision" in ceilings:
        mm = ", ".join(f"{p} {r['gflops']:.0f}" for p, r in ceilings["matmul_by_precision"].items())
        n = next(iter(ceilings["matmul_by_precision"].values()))["n"]
        return f"matmul ({n}², by precision) {mm} GFLOP/s, {conv}"
    mm = ceilings["matmul"]
    return f"matmul ({mm.get('n', 2048)}², default precision) {mm['gflops']:.0f} GFLOP/s, {conv}"


def markdown(res) -> str:
    info = res["info"]
    out = [
        f"## {info['device']} — {info['date']}",
        "",
        f"jax {info['versions'].get('jax')}, jaxlib {info['versions'].get('jaxlib')}, "
        f"torch {info['versions'].get('torch')}; {info['cpu_count']} CPU cores; "
        f"{_ceilings_text(res['ceilings'])} (measured in this run).",
        "",
        "Seconds per objective evaluation (value and gradient) inside the solver's compiled "
        "loop, as a blend runs it, and of the same evaluation compiled alone; GFLOP/s from "
        "the counted VGG16 FLOPs (forward + input-gradient backward) of the in-solver time.",
        "",
        "| implementation | stage | canvas | precision | s / evaluation (in solver) | "
        "standalone | GFLOP/s | of matmul | vs authors' step |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    # Each row against the authors' step at the matching arithmetic: float32 against TF32
    # off, tf32 and bfloat16 against PyTorch's defaults (TF32 convolutions) where measured.
    torch_s = {(r["size"], r.get("precision", "float32")): r["seconds"]
               for r in res["per_eval"] if r["impl"] == "authors-torch"}  # fmt: skip

    def baseline(size, precision):
        if precision != "float32" and (size, "tf32") in torch_s:
            return torch_s[(size, "tf32")], "tf32"
        return torch_s.get((size, "float32")), "float32"

    # Files from before per-precision ceilings compared every row with one default-precision
    # matmul: right on a CPU (float32 throughout), not on a GPU (TF32 matmul), so "n/a".
    comparable = "matmul_by_precision" in res["ceilings"] or info["device"].startswith("cpu")
    for r in res["per_eval"]:
        if r["impl"] == "jaxblend":
            ratio, against = baseline(r["size"], r["precision"])
            two = any(k[1] == "tf32" for k in torch_s)
            ratio = f"{ratio / r['seconds']:.2f}x faster" if ratio else ""
            if ratio and two:
                ratio += " (TF32 on)" if against == "tf32" else " (TF32 off)"
            frac = f"{r['matmul_fraction']:.0%}" if comparable else "n/a"
            out.append(
                f"| jaxblend | {r['stage']} | {r['size']}² | {r['precision']} | "
                f"{r['seconds']:.3f} | {r['standalone_seconds']:.3f} | {r['gflops']:.0f} | "
                f"{frac} | {ratio} |"
            )
        else:
            on = r.get("device_name", "cpu")  # results written before devices were recorded
            tf32 = str(r.get("torch_precision", {}).get("tf32", "n/a"))
            if tf32.startswith("on"):
                how = "float32, PyTorch defaults: TF32 convolutions on"
            elif tf32 == "off":
                how = "float32, TF32 off"
            else:
                how = "float32"
            out.append(
                f"| authors' step, PyTorch {r['torch']} on {on} | 1 | {r['size']}² | {how} | "
                f"{r['seconds']:.3f} | | | | 1x |"
            )
    if res.get("memory"):
        out += ["", "| canvas | XLA temp + arguments per job | host peak RSS |", "|---|---|---|"]
        for m in res["memory"]:
            per = m.get("per_job_bytes")
            per = f"{per / 2**20:.0f} MiB" if per else "n/a"
            out.append(f"| {m['size']}² | {per} | {m['host_peak_rss_bytes'] / 2**20:.0f} MiB |")
    if res.get("quality"):
        out += [
            "",
            "Time to the authors' quality on case1 (512², `bench/quality.py` figures; authors: "
            "stage 1 grad_err / style_gap / content_gap 3.81 / 0.361 / 0.359, final 25.6 / "
            "0.025 / 0.466, ≈2000 evaluations). A goal is reached when every figure named is "
            "at or below the authors' (lower is better for all three); the blend is scored "
            "every 10 evaluations, so counts are rounded up to that grid. Evaluations on the "
            "coarse scale of `scales` (a quarter of the pixels) count as whole ones; seconds "
            f"include compilation. Budget {res['settings']['budget'][0]} + "
            f"{res['settings']['budget'][1]} evaluations."
            + (
                f" Quality runs carried over from `{res['settings']['quality_from']}`, same "
                "code and machine."
                if res["settings"].get("quality_from")
                else ""
            ),
            "",
            "| variant | stage-1 figures reached | final style & content reached | all three "
            "final figures reached | final grad_err / style_gap / content_gap | evaluations "
            "| seconds |",
            "|---|---|---|---|---|---|---|",
        ]
        for q in res["quality"]:

            def at(x):
                return f"{x['evaluations']} evals, {x['seconds']:.0f} s" if x else "not reached"

            f = q["final"]
            strict = next((t for t in q["trajectory"] if _reached(t, AUTHORS_FINAL)), None)
            out.append(
                f"| {json.dumps(q['variant'])} | {at(q['stage1_reached'])} | "
                f"{at(q['final_reached'])} | {at(strict)} | "
                f"{f['grad_err']:.2f} / {f['style_gap']:.3f} / "
                f"{f['content_gap']:.3f} | {sum(q['evaluations'].values())} | "
                f"{sum(q['seconds'].values()):.0f} |"
            )
        out += solver_table(res["quality"])
    if res.get("notes"):
        out += ["", res["notes"]]
    return "\n".join(out) + "\n"


def solver_table(quality) -> list[str]:
    """Solvers compared on the same runs: evaluations and seconds until each run's stage-1
    loss reaches the loss every solver of its group reached (the worst final one)."""
    groups: dict[str, list] = {}
    for q in quality:
        v = dict(q["variant"])
        solver = v.pop("solver", "lbfgs")
        if len(v.get("scales", (1.0,))) > 1:
            continue  # coarse scales have their own losses; compare single-scale runs
        groups.setdefault(json.dumps(v, sort_keys=True), []).append((solver, q))
    out = []
    for key, runs in groups.items():
        if len(runs) < 2:
            continue
        s1 = {sv: [t for t in q["trajectory"] if t["stage"] == "stage1"] for sv, q in runs}
        goal = max(min(t["loss"] for t in tr) for tr in s1.values() if tr)
        if not out:
            out += [
                "",
                "Solvers on the same stage-1 problem: objective evaluations and seconds until "
                "the loss reaches the level every solver reached (checked every 10 "
                "evaluations):",
                "",
                "| variant | solver | loss goal | evaluations | seconds |",
                "|---|---|---|---|---|",
            ]
        for sv, _ in runs:
            hit = next((t for t in s1[sv] if t["loss"] <= goal), None)
            ev, sec = (hit["evaluations"], f"{hit['seconds']:.0f}") if hit else ("—", "—")
            out.append(f"| {key} | {sv} | {goal:.4g} | {ev} | {sec} |")
    return out


def main(argv=None) -> int:
    from jaxblend import load_vgg

    ap = argparse.ArgumentParser(description="jaxblend benchmark suite")
    ap.add_argument("--quick", action="store_true", help="a few minutes on a 2-core CPU")
    ap.add_argument("--sizes", type=int, nargs="+", default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--bf16", action="store_true", help="also time bfloat16 convolutions")
    ap.add_argument(
        "--tf32", action="store_true", help="also time TensorFloat-32 convolutions (GPUs)"
    )
    ap.add_argument("--memory-sizes", type=int, nargs="*", default=None)
    ap.add_argument(
        "--stages", type=int, nargs="+", choices=(1, 2), default=[1, 2], help="stages to time"
    )
    ap.add_argument(
        "--quality", default=None, help="JSON list of BlendConfig overrides per quality run"
    )
    ap.add_argument("--budget", type=int, nargs=2, default=(100, 100), metavar=("S1", "S2"))
    ap.add_argument("--out", default=None, help="results file stem (default: device-date)")
    ap.add_argument("--render", default=None, help="rewrite the .md of a results .json")
    ap.add_argument(
        "--quality-from",
        default=None,
        help="results .json whose quality runs to carry into this run's files (named there)",
    )
    a = ap.parse_args(argv)
    if a.render:
        from bench.report import rerender

        print(rerender(a.render, markdown))
        return 0

    sizes = a.sizes or ([256] if a.quick else [256, 512])
    info = hardware.device_info()
    info["device"] = f"{jax.devices()[0].platform}-{jax.devices()[0].device_kind}".replace(" ", "_")
    info["date"] = dt.date.today().isoformat()
    print(f"device {info['device']}, {info.get('cpu_count')} cores; versions {info['versions']}")
    precisions = ["float32"] + ["bfloat16"] * a.bf16 + ["tf32"] * a.tf32
    settings = {"sizes": sizes, "repeats": a.repeats, "quick": a.quick, "budget": a.budget,
                "precisions": precisions, "stages": a.stages}  # fmt: skip
    print(f"settings {settings}", flush=True)
    vgg = load_vgg()
    res = {"info": info, "settings": settings}
    by_precision = {
        p: hardware.matmul_gflops(repeats=a.repeats + 2, precision=p) for p in precisions
    }
    res["ceilings"] = {
        "matmul": by_precision["float32"],
        "matmul_by_precision": by_precision,
        "conv": hardware.conv_gflops(repeats=a.repeats + 2),
    }
    mm = {p: r["gflops"] for p, r in by_precision.items()}
    print(f"  matmul {', '.join(f'{p} {g:.0f}' for p, g in mm.items())} GFLOP/s, "
          f"conv {res['ceilings']['conv']['gflops']:.0f} GFLOP/s")  # fmt: skip
    torch_sizes = [] if a.no_torch else [s for s in sizes if not (a.quick and s > 256)]
    stem = a.out or f"{info['device']}-{info['date']}"
    # The files are rewritten after every canvas size and section, so that a run stopped
    # by a time limit keeps what it measured.
    res["per_eval"], res["memory"] = [], []
    for size in sizes:
        ts = [size] if size in torch_sizes else []
        res["per_eval"] += per_eval([size], a.repeats, precisions, ts, mm, vgg, a.stages)
        _write(res, stem)
    mem_sizes = a.memory_sizes if a.memory_sizes is not None else ([] if a.quick else sizes)
    for size in mem_sizes:
        res["memory"] += memory([size], vgg)
        _write(res, stem)
    if a.quality:
        res["quality"] = time_to_quality(json.loads(a.quality), vgg, *a.budget)
    elif a.quality_from:
        old = json.loads(Path(a.quality_from).read_text())
        res["quality"] = old["quality"]
        res["settings"]["budget"] = old["settings"]["budget"]
        res["settings"]["quality_from"] = f"{Path(a.quality_from).name} ({old['info']['date']})"
    _write(res, stem)
    print(markdown(res))
    print(f"wrote {RESULTS / (stem + '.json')}")
    return 0


def _write(res: dict, stem: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(res, indent=1, default=str))
    (RESULTS / f"{stem}.md").write_text(markdown(res))


if __name__ == "__main__":
    sys.exit(main())
