"""Stage-2 variants against the authors' finals and the defaults: one Markdown table.

    python bench/variants_table.py --tags tone10s15 luma10s15 --name 2026-12-04

Reads ``bench/results/stage2-variants.jsonl`` (written by ``bench/stage2_variants.py``) and
the newest ``bench/results/quality-default-*.json`` (``bench/quality.py --tag default``:
the defaults' finals and the authors' published finals, scored with the same
:mod:`jaxblend.metrics`). For each tag, case and ``--evals`` count it lists the five final
figures, each marked ✓ where it is no worse than the authors' final (lower is better for
all five), with the default final's figure beside it, and counts the failed checks.
Writes ``bench/results/stage2-variants-<name>.md`` and prints it. With ``--sheet
CASE:TAG@N,TAG@N,...`` (repeatable) it also writes a contact sheet per case,
``stage2-variants-<name>-<case>.png`` (``bench/quality.py``'s layout: the target and each
variant's saved iterate ``<images>/<TAG>-<CASE>-<N>.png``, with a 2x crop of the object),
to look at the variants side by side.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
KEYS = ("style", "ghosting", "outline", "seam", "fidelity")


def newest_quality(results: Path = RESULTS) -> Path:
    """The newest ``quality-default-*.json``: the JSON beside the file ``bench/report.py``
    takes for the README's quality section."""
    from bench.report import SECTIONS, latest

    md = latest(SECTIONS["quality"], results)
    if md is None or not md.with_suffix(".json").exists():
        raise SystemExit("no bench/results/quality-default-*.json: run bench/quality.py first")
    return md.with_suffix(".json")


def table(rows: list[dict], quality: dict, tags: list[str], evals: tuple[int, ...]) -> str:
    """The Markdown table of ``rows`` (jsonl records) for ``tags`` at ``evals``."""
    cases = quality["cases"]
    head = "| tag | case | evals | " + " | ".join(KEYS) + " | structure | failed |"
    out = [head, "|" + "---|" * (len(KEYS) + 5)]
    seen = set()
    for tag in tags:
        for r in rows:
            key = (tag, r["case"], r["evaluations"])
            if r["tag"] != tag or r["evaluations"] not in evals or key in seen:
                continue
            seen.add(key)
            figs = cases.get(r["case"], {}).get("figures", {})
            theirs, ours = figs.get("authors_final"), figs.get("final")
            cells, failed = [], 0
            for k in KEYS:
                v = r["figures"][k]
                mark = ""
                if theirs is not None:
                    ok = v <= theirs[k]
                    failed += not ok
                    mark = " ✓" if ok else " ✗"
                base = f" (default {ours[k]:.3g})" if ours else ""
                cells.append(f"{v:.3g}{mark}{base}")
            n_fail = str(failed) if theirs is not None else "–"
            out.append(
                f"| {tag} | {r['case']} | {r['evaluations']} | " + " | ".join(cells)
                + f" | {r['figures']['structure']:.2f} | {n_fail} |"
            )  # fmt: skip
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tags", nargs="+", required=True)
    ap.add_argument("--evals", nargs="+", type=int, default=[50, 60])
    ap.add_argument("--name", required=True, help="the results file's suffix, e.g. a date")
    ap.add_argument("--jsonl", default=str(RESULTS / "stage2-variants.jsonl"))
    ap.add_argument("--sheet", action="append", default=[], metavar="CASE:TAG@N,...")
    ap.add_argument("--images", default="/tmp/jaxblend-stage2-variants")
    a = ap.parse_args(argv)
    rows = [json.loads(line) for line in Path(a.jsonl).read_text().splitlines() if line]
    qpath = newest_quality()
    quality = json.loads(qpath.read_text())
    missing = [t for t in a.tags if not any(r["tag"] == t for r in rows)]
    if missing:
        print(f"error: no rows for tag(s) {missing} in {a.jsonl}", file=sys.stderr)
        return 2
    text = (
        f"# Stage-2 variants against the authors' finals ({a.name})\n\n"
        f"`python bench/variants_table.py --tags {' '.join(a.tags)} --name {a.name}`: rows of "
        f"`bench/results/stage2-variants.jsonl` (`bench/stage2_variants.py`, from the default "
        f"stage 1 unless the tag's `set` changes it), each final figure marked ✓ where it is "
        f"no worse than the authors' final and the default final's beside it, both from "
        f"`{qpath.name}`. Lower is better for all five.\n\n"
        + table(rows, quality, a.tags, tuple(a.evals))
        + "\n"
    )
    path = RESULTS / f"stage2-variants-{a.name}.md"
    path.write_text(text)
    print(text)
    for spec in a.sheet:
        case, _, show = spec.partition(":")
        out = sheet(case, [v for v in show.split(",") if v], Path(a.images), a.name)
        if out is None:
            return 2
        print(f"wrote {out}")
    return 0


def sheet(case: str, show: list[str], images: Path, name: str) -> Path | None:
    """The contact sheet of ``case``'s variants ``show`` (``TAG@N``); None when one is missing."""
    from PIL import Image

    from bench import devset
    from bench.quality import contact_sheet

    found = [c for c in devset.CASES if c.name == case]
    if not found:
        print(f"error: unknown case {case!r}", file=sys.stderr)
        return None
    job = devset.job(found[0], 512)
    panels = {"target": np.asarray(job.target, np.float32)}
    for spec in show:
        tag, _, n = spec.partition("@")
        f = images / f"{tag}-{case}-{n}.png"
        if not f.exists():
            print(
                f"error: {f} not found: run bench/stage2_variants.py --tag {tag}", file=sys.stderr
            )
            return None
        panels[f"{tag} ({n} evals)"] = np.asarray(Image.open(f).convert("RGB"), np.float32)
    im = contact_sheet(panels, np.asarray(job.mask), f"{case}: stage-2 variants, {name}")
    path = RESULTS / f"stage2-variants-{name}-{case}.png"
    im.save(path)
    return path


if __name__ == "__main__":
    sys.exit(main())
