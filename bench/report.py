"""Regenerate the README's measured sections from the latest files in ``bench/results/``.

    python bench/report.py

Each section of README.md between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` is
replaced by the newest ``bench/results/<prefix>*.md`` written by a bench script:

* ``perf``: ``python -m bench`` (``<device>-<date>.md``);
* ``case1``: ``bench/case1.py`` (``case1-*.md``);
* ``poisson``: ``bench/poisson.py`` (``poisson-*.md``);
* ``batch``: ``bench/batch.py`` (``batch-*.md``).

Every figure in those sections therefore comes from a results file, with its device and date.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SECTIONS = {
    "perf": lambda p: not p.name.startswith(("case1-", "poisson-", "batch-", "calibrate")),
    "case1": lambda p: p.name.startswith("case1-"),
    "poisson": lambda p: p.name.startswith("poisson-"),
    "batch": lambda p: p.name.startswith("batch-"),
}


def latest(pred) -> Path | None:
    def date(p: Path) -> str:
        m = re.search(r"\d{4}-\d{2}-\d{2}", p.name)
        return m.group(0) if m else ""

    files = sorted((p for p in RESULTS.glob("*.md") if pred(p)), key=lambda p: (date(p), p.name))
    return files[-1] if files else None


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()
    for name, pred in SECTIONS.items():
        src = latest(pred)
        pat = re.compile(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)", re.S)
        if not pat.search(text):
            continue
        body = (
            f"*From `bench/results/{src.name}`.*\n\n{src.read_text().strip()}\n"
            if src
            else "*Not measured yet.*\n"
        )
        text = pat.sub(lambda m, b=body: m.group(1) + b + m.group(2), text)
        print(f"{name}: {src.name if src else 'none'}")
    readme.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
