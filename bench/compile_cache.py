"""What the persistent compilation cache saves: one CLI command's wall time, cold and warm.

    python bench/compile_cache.py [--repeats 2] [--commands demo demo-short poisson]
    python bench/compile_cache.py --render bench/results/compile-cache-cpu-<date>.json

Each command runs as ``python -m jaxblend ...`` in a fresh process, timed from outside
(interpreter start, imports, compilation or cache loads, the run and the writes), in three
modes taken in turn: ``--no-compile-cache`` (no cache), a fresh empty cache folder (cold:
compiles and writes every program) and the folder the cold run filled (warm: loads them).
The median of ``--repeats`` rounds is reported, with the folder's entries and size after
the cold run, and whether the three modes wrote byte-identical images.

Commands: ``demo`` (``jaxblend demo``: case1 on the 256² demo canvas, default budgets),
``demo-short`` (the same with ``--steps 2 2``: little besides start-up and compilation) and
``poisson`` (``jaxblend poisson`` on case1 at the authors' 512² placement).

Writes ``bench/results/compile-cache-<platform>-<date>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))  # bench.report, when run as a script
CASE = ROOT / "jaxblend" / "examples" / "case1"
PLACED = ["--source", str(CASE / "source.png"), "--mask", str(CASE / "mask.png"),
          "--target", str(CASE / "target.png")]  # fmt: skip
COMMANDS = {
    "demo": (["demo", "--quiet", "-o", "{out}"], "`jaxblend demo` (256² canvas, default budgets)"),
    "demo-short": (
        ["demo", "--quiet", "--steps", "2", "2", "-o", "{out}"],
        "`jaxblend demo --steps 2 2` (2 + 2 evaluations)",
    ),
    "poisson": (
        [
            "poisson",
            *PLACED,
            "--center",
            "200,235",
            "--canvas",
            "512",
            "--source-size",
            "300",
            "-o",
            "{out}/poisson.png",
        ],
        "`jaxblend poisson` (case1, 512² canvas)",
    ),  # fmt: skip
}
MODES = ("off", "cold", "warm")
INFO = (
    "import jax, json, os, platform; d = jax.devices()[0]; print(json.dumps({"
    "'backend': jax.default_backend(), 'device': str(d), 'device_kind': d.device_kind, "
    "'jax': jax.__version__, 'cpu_count': os.cpu_count(), 'platform': platform.platform()}))"
)


def _env(cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "JAXBLEND_COMPILE_CACHE"}
    env["JAXBLEND_CACHE_DIR"] = str(cache)
    return env


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*.png")):
        h.update(p.relative_to(folder).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _cache_stats(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def run_once(name: str, mode: str, cache: Path, work: Path) -> dict:
    out = work / f"{name}-{mode}"
    out.mkdir(parents=True, exist_ok=True)
    args = [a.format(out=out) for a in COMMANDS[name][0]]
    if mode == "off":
        args.append("--no-compile-cache")
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "jaxblend", *args], cwd=work, env=_env(cache),
                       capture_output=True, text=True)  # fmt: skip
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise RuntimeError(f"{name} ({mode}) exited {p.returncode}: {p.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "load_before": load,
        "load_after": os.getloadavg()[0],
        "outputs_sha256": _digest(out),
    }


def measure(names: list[str], repeats: int, work: Path) -> list[dict]:
    rows = []
    for name in names:
        runs: dict[str, list[dict]] = {m: [] for m in MODES}
        entries = size = 0
        for r in range(repeats):
            cache = work / f"cache-{name}-{r}"
            for mode in MODES:  # warm reuses the folder cold has just filled
                res = run_once(name, mode, cache, work)
                runs[mode].append(res)
                print(
                    f"{name} {mode} #{r + 1}: {res['seconds']:.1f} s wall, "
                    f"{res['cpu_seconds']:.1f} s CPU, load {res['load_before']:.1f}",
                    flush=True,
                )
                if mode == "off":
                    assert not cache.exists() or not any(cache.iterdir()), "off wrote entries"
                if mode == "cold":
                    entries, size = _cache_stats(cache)
        digests = {res["outputs_sha256"] for m in MODES for res in runs[m]}
        rows.append({
            "command": name,
            "argv": COMMANDS[name][0],
            "runs": runs,
            "median_seconds": {m: statistics.median(x["seconds"] for x in runs[m]) for m in MODES},
            "median_cpu_seconds": {
                m: statistics.median(x["cpu_seconds"] for x in runs[m]) for m in MODES
            },
            "cache_entries": entries,
            "cache_bytes": size,
            "outputs_identical": len(digests) == 1,
        })  # fmt: skip
    return rows


def markdown(res: dict) -> str:
    info = res["info"]
    where = "cpu" if info["backend"] == "cpu" else info["device_kind"]
    loads = [x[k] for r in res["rows"] for m in MODES for x in r["runs"][m]
             for k in ("load_before", "load_after")]  # fmt: skip
    out = [
        f"# Compilation cache, {where} ({info['cpu_count']} cores), {res['date']}",
        "",
        f"{info['device']}, jax {info['jax']}, {info['platform']}. Each command in a fresh "
        "process (`python -m jaxblend ...`), wall time from outside: interpreter start, "
        "imports, compilation or cache loads, the run and the image writes; CPU: the "
        "process's user + system seconds. Modes in turn: no cache (`--no-compile-cache`), "
        "cold (an empty cache folder, filled by the run) and warm (the folder the cold run "
        f"filled); median of {res['repeats']} rounds. One-minute load average around the "
        f"runs {min(loads):.1f} to {max(loads):.1f} (the runs' own threads included; on this "
        "shared machine other work may run beside them, which stretches wall times more "
        "than CPU times).",
        "",
        "| command | no cache s (CPU s) | cold cache s (CPU s) | warm cache s (CPU s) "
        "| warm vs cold | cache after cold | outputs identical |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in res["rows"]:
        s, c = r["median_seconds"], r["median_cpu_seconds"]
        cells = " | ".join(f"{s[m]:.1f} ({c[m]:.1f})" for m in MODES)
        n = r["cache_entries"]
        out.append(
            f"| {COMMANDS[r['command']][1]} | {cells} | {1 - s['warm'] / s['cold']:.0%} less "
            f"wall, {1 - c['warm'] / c['cold']:.0%} less CPU | {n} file{'s' * (n != 1)}, "
            f"{r['cache_bytes'] / 2**20:.1f} MiB | {'yes' if r['outputs_identical'] else 'NO'} |"
        )
    if res.get("notes"):
        out += ["", res["notes"]]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--commands", nargs="+", choices=tuple(COMMANDS), default=list(COMMANDS))
    ap.add_argument("--out-dir", default=str(RESULTS))
    ap.add_argument("--render", default=None, help="rewrite the .md of a results .json")
    a = ap.parse_args(argv)
    if a.render:
        from bench.report import rerender

        print(rerender(a.render, markdown))
        return 0
    info = json.loads(
        subprocess.run(
            [sys.executable, "-c", INFO],
            capture_output=True,
            text=True,
            check=True,
        ).stdout  # fmt: skip
    )
    now = _dt.datetime.now(_dt.timezone.utc)
    load = list(os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="jaxblend-cache-bench-") as work:
        rows = measure(a.commands, a.repeats, Path(work))
    res = {
        "date": now.date().isoformat(),
        "started": now.isoformat(timespec="seconds"),
        "info": info,
        "repeats": a.repeats,
        "load_average": load,
        "rows": rows,
    }
    stem = Path(a.out_dir) / f"compile-cache-{info['backend']}-{res['date']}"
    stem.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    md = markdown(res)
    stem.with_suffix(".md").write_text(md)
    print(md)
    print(f"wrote {stem}.json, {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
