"""Cost of one stage-1 evaluation, windowed (jaxblend.window) against the full canvas.

    python bench/window_cost.py [--sizes 512 1024] [--object 200] [--repeats 3]
                                [--full-max 1024]

For each canvas size and each object (case1's boat, its long side ``--object`` px, and a
``--object``² square of the same source) placed at the canvas centre, the default stage 1
(:data:`jaxblend.config.STAGE1`) is evaluated — value and gradient, one jitted program
with the job's data as arguments — on the full canvas (``window=None``; up to
``--full-max`` only, since it costs seconds to minutes per evaluation on a CPU) and on the
window :func:`jaxblend.window.plan` picks (forced, ``max_fraction=1``, where it would
fall back). Reported: the median seconds of ``--repeats`` evaluations after compilation,
XLA's memory analysis of each program (arguments + temporaries + outputs: a peak-memory
estimate), the window, what the solver would use by default (``auto``), the relative
difference of the two objective values, and the issue's two figures (1024² over 512² per
evaluation of the default path; full over windowed at 1024²). Writes
``bench/results/window-cost-<platform>-<date>.{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import hardware  # noqa: E402

CASE1 = ROOT / "jaxblend" / "examples" / "case1"


def _jobs(size: int, obj: int):
    """``{name: (target, source, mask)}`` on a ``size``² canvas, the object at the centre."""
    from PIL import Image

    from jaxblend.io import place

    m = np.asarray(Image.open(CASE1 / "mask.png").convert("L")) > 127
    ys, xs = np.nonzero(m)
    extent = max(np.ptp(ys), np.ptp(xs)) + 1
    src_size = round(obj * m.shape[0] / extent)  # the boat's long side = obj px
    c = (size // 2, size // 2)
    job = place(
        CASE1 / "source.png", CASE1 / "target.png", CASE1 / "mask.png",
        center=c, canvas=size, source_size=src_size,
    )  # fmt: skip
    square = np.zeros((size, size), np.float32)
    square[c[0] - obj // 2 : c[0] - obj // 2 + obj, c[1] - obj // 2 : c[1] - obj // 2 + obj] = 1
    sq = place(
        CASE1 / "source.png", CASE1 / "target.png", np.full((500, 500), 255, np.uint8),
        center=c, canvas=size, source_size=obj,
    )  # fmt: skip
    return {
        "case1": (job.target, job.source, job.mask),
        "square": (sq.target, sq.source, square),
    }


def _box(mask) -> tuple[int, int]:
    ys, xs = np.nonzero(np.asarray(mask))
    return int(np.ptp(ys)) + 1, int(np.ptp(xs)) + 1


def _build(cfg, spec, params, t, s, m, geom):
    """The compiled evaluation of one job (window ``geom`` or the full canvas), its
    arguments, compile seconds and XLA's memory estimate."""
    import jax
    import jax.numpy as jnp

    from jaxblend.solve import composite, objective, prepare

    naive = composite(s, t, m)
    prep = jax.jit(lambda p, t, m, s, r: prepare(cfg, spec, p, t, m, s, r, window=geom))
    data = jax.block_until_ready(prep(params, t, m, s, naive))
    vg = jax.jit(jax.value_and_grad(lambda x, d: objective(cfg, spec, True, x, d)))
    x = naive + jnp.asarray(np.random.default_rng(0).normal(0, 5, naive.shape), jnp.float32)
    t0 = time.perf_counter()
    compiled = vg.lower(x, data).compile()
    compile_s = time.perf_counter() - t0
    try:
        ma = compiled.memory_analysis()
        mem = int(ma.temp_size_in_bytes + ma.argument_size_in_bytes + ma.output_size_in_bytes)
    except Exception:  # noqa: BLE001 - no memory analysis on this backend
        mem = None
    v, _ = jax.block_until_ready(compiled(x, data))  # warm-up
    return {"run": lambda: compiled(x, data), "compile_s": compile_s, "memory_bytes": mem,
            "value": float(v), "runs": []}  # fmt: skip


def _time_all(entries: list[dict], repeats: int) -> None:
    """``repeats`` rounds, each evaluating every entry once (in alternation, so a load
    change on a shared machine hits all of them alike); median seconds per entry."""
    import jax

    for _ in range(repeats):
        for e in entries:
            t0 = time.perf_counter()
            jax.block_until_ready(e["run"]())
            e["runs"].append(time.perf_counter() - t0)
    for e in entries:
        e["seconds"] = float(np.median(e["runs"]))
        del e["run"]


def main(argv=None) -> int:
    import jax.numpy as jnp

    from jaxblend import window
    from jaxblend.blend import vgg_spec
    from jaxblend.config import STAGE1
    from jaxblend.vgg import load_vgg

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--object", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--full-max", type=int, default=1024)
    ap.add_argument("--note", default="", help="a remark for the report (e.g. machine load)")
    a = ap.parse_args(argv)
    vgg = load_vgg()
    spec = vgg_spec(vgg, "float32")
    cfg = STAGE1
    info = hardware.device_info()
    rows, entries = [], []
    for size in a.sizes:
        for name, (t, s, m) in _jobs(size, a.object).items():
            t, s, m = (jnp.asarray(v, jnp.float32) for v in (t, s, m))
            auto = window.plan(cfg, vgg.arch, np.asarray(m))
            geom = window.plan(cfg, vgg.arch, np.asarray(m), max_fraction=1.0)
            row = {
                "canvas": size,
                "object": name,
                "box": _box(m),
                "window": list(geom.size) if geom else None,
                "window_share": geom.size[0] * geom.size[1] / size**2 if geom else 1.0,
                "auto": "window" if auto else "full",
            }
            row["windowed"] = _build(cfg, spec, vgg.params, t, s, m, geom)
            entries.append(row["windowed"])
            if size <= a.full_max:
                row["full"] = _build(cfg, spec, vgg.params, t, s, m, None)
                entries.append(row["full"])
            rows.append(row)
            print(f"compiled {size}² {name}", flush=True)
    _time_all(entries, a.repeats)
    for row in rows:
        w = row["windowed"]
        if "full" in row:
            f = row["full"]
            row["value_rel_diff"] = abs(w["value"] - f["value"]) / abs(f["value"])
            row["speedup"] = f["seconds"] / w["seconds"]
        row["auto_seconds"] = (
            w["seconds"] if row["auto"] == "window" else row.get("full", {}).get("seconds")
        )
        print(json.dumps(row), flush=True)
    date = dt.date.today().isoformat()
    stem = f"window-cost-{info['jax_backend']}-{date}"
    out = ROOT / "bench" / "results"
    cmd = "python bench/window_cost.py " + " ".join(argv if argv is not None else sys.argv[1:])
    by = {(r["canvas"], r["object"]): r for r in rows}
    targets = []
    for obj in ("case1", "square"):
        lo, hi = by.get((512, obj)), by.get((1024, obj))
        if lo and hi and lo["auto_seconds"] and hi["auto_seconds"]:
            targets.append(
                {
                    "object": obj,
                    "ratio_1024_over_512": hi["auto_seconds"] / lo["auto_seconds"],
                    "speedup_1024": hi.get("speedup"),
                }
            )
    (out / f"{stem}.json").write_text(
        json.dumps({"command": cmd, "device": info, "rows": rows, "targets": targets}, indent=1)
    )

    def mb(r, k):
        v = r.get(k, {}).get("memory_bytes") if k in r else None
        return f"{v / 2**20:.0f}" if v else "–"

    def sec(r, k):
        return f"{r[k]['seconds']:.2f}" if k in r else "–"

    md = [
        f"# Windowed stage-1 evaluation cost ({date})",
        "",
        f"`{cmd.strip()}` on {info['device']} ({info['cpu_count']} cores)"
        + (f"; {a.note}" if a.note else "")
        + ". Default stage 1 "
        "(content relu2_2+relu3_3, style relu1_2..relu4_3, normalised), one value and "
        f"gradient, jitted, median of {a.repeats} rounds after compilation (each round runs "
        "every program once, in alternation). Memory: XLA's memory analysis of the compiled "
        "evaluation (arguments + temporaries + outputs). `auto`: what the solver runs by "
        "default (the window only below 60% of the canvas).",
        "",
        "| canvas | object | box (px) | window | window/canvas | auto | full s | window s "
        "| full / window | full MiB | window MiB | value rel. diff |",
        "|---:|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        w = "×".join(map(str, r["window"])) if r["window"] else "–"
        sp = f"{r['speedup']:.2f}" if "speedup" in r else "–"
        rel = f"{r['value_rel_diff']:.1e}" if "value_rel_diff" in r else "–"
        md.append(
            f"| {r['canvas']}² | {r['object']} | {r['box'][0]}×{r['box'][1]} | {w} | "
            f"{r['window_share']:.2f} | {r['auto']} | {sec(r, 'full')} | "
            f"{sec(r, 'windowed')} | {sp} | {mb(r, 'full')} | {mb(r, 'windowed')} | {rel} |"
        )
    md += ["", "Issue targets (the default path, `auto`):", ""]
    for tg in targets:
        sp = f"{tg['speedup_1024']:.2f}×" if tg["speedup_1024"] else "–"
        md.append(
            f"- {tg['object']}: 1024² / 512² per evaluation = {tg['ratio_1024_over_512']:.2f} "
            f"(target ≤ 1.3); full / windowed at 1024² = {sp} (target ≥ 3)"
        )
    md.append("")
    (out / f"{stem}.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
