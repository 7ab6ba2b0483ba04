"""What the persistent compilation cache saves: one CLI command's wall time, cold and warm.

    python bench/compile_cache.py [--repeats 2] [--commands demo demo-short poisson warmup batch]
                                  [--modes off cold warm primed] [--name compile-cache]
    python bench/compile_cache.py --render bench/results/compile-cache-cpu-<date>.json

Each command runs as ``python -m jaxblend ...`` in a fresh process, timed from outside
(interpreter start, imports, compilation or cache loads, the run and the writes), in three
modes taken in turn: ``--no-compile-cache`` (no cache), a fresh empty cache folder (cold:
compiles and writes every program) and the folder the cold run filled (warm: loads them).
The median of ``--repeats`` rounds is reported, with the folder's entries and size after
the cold run, and whether the three modes wrote byte-identical images.

Commands: ``demo`` (``jaxblend demo``: case1 on the 256² demo canvas, default budgets),
``demo-short`` (the same with ``--steps 2 2``: little besides start-up and compilation),
``poisson`` (``jaxblend poisson`` on case1 at the authors' 512² placement), ``warmup``
(``jaxblend warmup --canvas 256``: the single-blend programs of the demo's canvas) and
``batch`` (``jaxblend batch`` of four case1 jobs on a 128² canvas, 2 + 2 evaluations,
stacks of 2). A command with a warm-up (``demo-short``, ``batch``) also runs in mode
``primed``: a fresh folder filled by ``jaxblend warmup`` alone (timed apart), then the
command. ``--modes`` picks the modes.

Writes ``bench/results/<--name>-<platform>-<date>.json`` and ``.md`` (default name
``compile-cache``).
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
    "warmup": (
        ["warmup", "--canvas", "256", "--quiet"],
        "`jaxblend warmup --canvas 256` (the demo canvas's single-blend programs)",
    ),
    "batch": (
        [
            "batch",
            "{work}/jobs.jsonl",
            "--out-dir",
            "{out}",
            "--batch-size",
            "2",
            "--config",
            "{work}/batch.json",
            "--quiet",
        ],
        "`jaxblend batch` (4 case1 jobs, 128² canvas, 2 + 2 evaluations, stacks of 2)",
    ),  # fmt: skip
}
# What fills the cache in mode "primed" (then the command runs against it).
PRIMES = {
    "demo-short": ["warmup", "--canvas", "256", "--quiet"],
    "batch": ["warmup", "--manifest", "{work}/jobs.jsonl", "--batch-size", "2", "--config",
              "{work}/batch.json", "--quiet"],
}  # fmt: skip
MODES = ("off", "cold", "warm", "primed")
MODE_NAMES = {"off": "no cache", "cold": "cold cache", "warm": "warm cache",
              "primed": "after `jaxblend warmup`"}  # fmt: skip
BATCH_CONFIG = {"canvas": 128, "source_size": 75, "stage1": {"steps": 2}, "stage2": {"steps": 2}}


def _batch_files(work: Path) -> None:
    """The ``batch`` command's manifest (case1 at four placements) and configuration."""
    rows = [{"id": f"j{i}", "source": str(CASE / "source.png"), "mask": str(CASE / "mask.png"),
             "target": str(CASE / "target.png"), "center": [50 + 4 * i, 58 + 3 * i]}
            for i in range(4)]  # fmt: skip
    (work / "jobs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (work / "batch.json").write_text(json.dumps(BATCH_CONFIG))


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


def _run(args: list[str], cache: Path, work: Path) -> tuple[float, float]:
    """Wall and CPU seconds of ``python -m jaxblend ARGS`` in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "jaxblend", *args], cwd=work, env=_env(cache),
                       capture_output=True, text=True)  # fmt: skip
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise RuntimeError(f"{args[0]} exited {p.returncode}: {p.stderr[-2000:]}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run_once(name: str, mode: str, cache: Path, work: Path) -> dict:
    out = Path(tempfile.mkdtemp(prefix=f"{name}-{mode}-", dir=work))  # fresh: batch resumes
    args = [a.format(out=out, work=work) for a in COMMANDS[name][0]]
    if mode == "off":
        args.append("--no-compile-cache")
    prime = None
    if mode == "primed":
        wall, cpu = _run([a.format(work=work) for a in PRIMES[name]], cache, work)
        prime = {"seconds": wall, "cpu_seconds": cpu, "cache_entries": _cache_stats(cache)[0]}
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
    row = {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "load_before": load,
        "load_after": os.getloadavg()[0],
        "outputs_sha256": _digest(out),
        "cache_entries_after": _cache_stats(cache)[0] if cache.exists() else 0,
    }
    if prime is not None:
        row["prime"] = prime
    return row


def measure(names: list[str], repeats: int, work: Path, modes=MODES) -> list[dict]:
    rows = []
    _batch_files(work)
    for name in names:
        these = [m for m in MODES if m in modes and (m != "primed" or name in PRIMES)]
        runs: dict[str, list[dict]] = {m: [] for m in these}
        entries = size = 0
        for r in range(repeats):
            cache = work / f"cache-{name}-{r}"
            for mode in these:  # warm reuses the folder cold has just filled
                if mode == "primed":
                    cache = work / f"cache-{name}-{r}-primed"  # only the warm-up's programs
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
        digests = {res["outputs_sha256"] for m in these for res in runs[m]}
        rows.append({
            "command": name,
            "argv": COMMANDS[name][0],
            "prime": PRIMES.get(name),
            "runs": runs,
            "median_seconds": {m: statistics.median(x["seconds"] for x in runs[m]) for m in these},
            "median_cpu_seconds": {
                m: statistics.median(x["cpu_seconds"] for x in runs[m]) for m in these
            },
            "cache_entries": entries,
            "cache_bytes": size,
            "outputs_identical": len(digests) == 1,
        })  # fmt: skip
    return rows


def markdown(res: dict) -> str:
    info = res["info"]
    where = "cpu" if info["backend"] == "cpu" else info["device_kind"]
    modes = [m for m in MODES if any(m in r["runs"] for r in res["rows"])]
    loads = [x[k] for r in res["rows"] for m in r["runs"] for x in r["runs"][m]
             for k in ("load_before", "load_after")]  # fmt: skip
    described = {
        "off": "no cache (`--no-compile-cache`)",
        "cold": "cold (an empty cache folder, filled by the run)",
        "warm": "warm (the folder the cold run filled)",
        "primed": "after `jaxblend warmup` (a fresh folder filled by the warm-up command "
        "alone, timed apart; then the command)",
    }
    listed = ", ".join(described[m] for m in modes[:-1]) + f" and {described[modes[-1]]}"
    out = [
        f"# Compilation cache, {where} ({info['cpu_count']} cores), {res['date']}",
        "",
        f"{info['device']}, jax {info['jax']}, {info['platform']}. Each command in a fresh "
        "process (`python -m jaxblend ...`), wall time from outside: interpreter start, "
        "imports, compilation or cache loads, the run and the image writes; CPU: the "
        f"process's user + system seconds. Modes in turn: {listed}; median of "
        f"{res['repeats']} rounds. One-minute load average around the "
        f"runs {min(loads):.1f} to {max(loads):.1f} (the runs' own threads included; on this "
        "shared machine other work may run beside them, which stretches wall times more "
        "than CPU times).",
        "",
    ]
    head = " | ".join(f"{MODE_NAMES[m]} s (CPU s)" for m in modes)
    extra = [c for c, m in (("warm vs cold", "warm"), ("after warmup vs cold", "primed"))
             if m in modes]  # fmt: skip
    out += [
        f"| command | {head} | {' | '.join(extra + [''])}cache after cold | outputs identical |",
        "|---|" + "---:|" * (len(modes) + len(extra) + 1) + "---|",
    ]
    for r in res["rows"]:
        s, c = r["median_seconds"], r["median_cpu_seconds"]
        cells = " | ".join(f"{s[m]:.1f} ({c[m]:.1f})" if m in s else "—" for m in modes)
        gains = []
        for col in extra:
            m = "warm" if col == "warm vs cold" else "primed"
            if m in s and "cold" in s:
                gains.append(f"{1 - s[m] / s['cold']:.0%} less wall, "
                             f"{1 - c[m] / c['cold']:.0%} less CPU")  # fmt: skip
            else:
                gains.append("—")
        n = r["cache_entries"]
        label = COMMANDS[r["command"]][1]
        if r.get("prime") and "primed" in r["runs"]:
            pr = statistics.median(x["prime"]["seconds"] for x in r["runs"]["primed"])
            label += f"; warm-up itself {pr:.1f} s"
        out.append(
            f"| {label} | {cells} | {' | '.join(gains + [''])}{n} file{'s' * (n != 1)}, "
            f"{r['cache_bytes'] / 2**20:.1f} MiB | {'yes' if r['outputs_identical'] else 'NO'} |"
        )
    added = [(r["command"], x["cache_entries_after"] - x["prime"]["cache_entries"])
             for r in res["rows"] for x in r["runs"].get("primed", [])]  # fmt: skip
    if added:
        out += ["", "Cache entries the command added after the warm-up (0: the warm-up had "
                "compiled every program it ran): "
                + ", ".join(f"{c} {n}" for c, n in added) + "."]  # fmt: skip
    if res.get("notes"):
        out += ["", res["notes"]]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--commands", nargs="+", choices=tuple(COMMANDS), default=list(COMMANDS))
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--name", default="compile-cache", help="results file name before -<platform>")
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
        rows = measure(a.commands, a.repeats, Path(work), a.modes)
    res = {
        "date": now.date().isoformat(),
        "started": now.isoformat(timespec="seconds"),
        "info": info,
        "repeats": a.repeats,
        "load_average": load,
        "rows": rows,
    }
    stem = Path(a.out_dir) / f"{a.name}-{info['backend']}-{res['date']}"
    stem.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    md = markdown(res)
    stem.with_suffix(".md").write_text(md)
    print(md)
    print(f"wrote {stem}.json, {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
