"""Cost of one objective evaluation: today's default stages against jaxblend 0.1's, one run.

    python bench/eval_cost.py [--size 512] [--evals 6] [--repeats 3]

For each stage, the default configuration and the ``v0.1`` preset's run L-BFGS inside the
solver's compiled loop on case1 at the authors' placement (scaled to ``--size``), timed in
alternation (``--repeats`` rounds of ``--evals`` evaluations each, after warm-up;
compilation excluded); the median seconds per evaluation and the ratio new / v0.1 are
written to ``bench/results/eval-cost-<platform>-<date>.{json,md}``.
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

from bench import devset, hardware  # noqa: E402


def main(argv=None) -> int:
    import jax
    import jax.numpy as jnp

    from jaxblend import BlendConfig
    from jaxblend.blend import vgg_spec
    from jaxblend.presets import preset
    from jaxblend.solve import composite, evaluations, programs
    from jaxblend.vgg import load_vgg

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--evals", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    vgg = load_vgg()
    job = devset.job(devset.CASES[0], a.size)
    t, s, m = (jnp.asarray(x, jnp.float32) for x in (job.target, job.source, job.mask))
    naive = composite(s, t, m)
    info = hardware.device_info()
    configs = {"default": BlendConfig(), "v0.1": preset("v0.1")}
    rows = []
    for stage in (1, 2):
        runs = {}
        for name, cfg in configs.items():
            st = cfg.stage1 if stage == 1 else cfg.stage2
            masked = stage == 1 or cfg.stage2_content == "source"
            p = programs(st, vgg_spec(vgg, "float32"), masked, cfg.solver, cfg.history, False)
            data = p.prepare(vgg.params, t, m, s, naive)
            carry = jax.block_until_ready(p.advance(p.start(naive, data), data, jnp.int32(3)))
            runs[name] = [p, data, carry, []]
        for _ in range(a.repeats):
            for r in runs.values():
                p, data, carry, per = r
                n0 = int(evaluations("lbfgs", carry))
                t0 = time.perf_counter()
                carry = jax.block_until_ready(p.advance(carry, data, jnp.int32(n0 + a.evals)))
                n = int(evaluations("lbfgs", carry)) - n0
                if n > 0:
                    per.append((time.perf_counter() - t0) / n)
                r[2] = carry
        med = {k: float(np.median(v[3])) if v[3] else float("nan") for k, v in runs.items()}
        rows.append({"stage": stage, **med, "ratio": med["default"] / med["v0.1"]})
        print(rows[-1], flush=True)
    date = dt.date.today().isoformat()
    stem = f"eval-cost-{info['jax_backend']}-{date}"
    out = ROOT / "bench" / "results"
    cmd = "python bench/eval_cost.py " + " ".join(argv if argv is not None else sys.argv[1:])
    (out / f"{stem}.json").write_text(json.dumps({"command": cmd, "device": info, "rows": rows}))
    md = [
        f"# Evaluation cost, default vs v0.1 ({date})",
        "",
        f"`{cmd.strip()}` on {info['device']} ({info['cpu_count']} cores): case1 at "
        f"{a.size}², seconds per objective evaluation inside the solver's loop, median of "
        f"{a.repeats} alternating runs of {a.evals} evaluations.",
        "",
        "| stage | default s/eval | v0.1 s/eval | default / v0.1 |",
        "|---|---:|---:|---:|",
        *[
            f"| {r['stage']} | {r['default']:.3f} | {r['v0.1']:.3f} | {r['ratio']:.2f} |"
            for r in rows
        ],
        "",
    ]
    (out / f"{stem}.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
