"""Regenerate the README's measured sections from the latest files in ``bench/results/``.

    python bench/report.py

Each section of README.md between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` is
replaced by the newest (by the date in its name, then by name) ``bench/results/*.md`` that
the section takes. Sections are per platform, so a GPU run does not replace the CPU figures:

* ``perf`` / ``perf-gpu``: ``python -m bench`` (``cpu-<date>.md`` / ``gpu-<name>-<date>.md``);
* ``case1`` / ``case1-gpu``: ``bench/case1.py`` (``case1-*.md`` without ``gpu`` in the name,
  which includes the older ``case1-default-<date>.md`` / ``case1-gpu-*.md``);
* ``poisson`` / ``poisson-gpu``: ``bench/poisson.py`` (``poisson-cpu-*`` / ``poisson-gpu-*``);
* ``batch`` / ``batch-gpu``: ``bench/batch.py`` (``batch-cpu-*`` / ``batch-gpu-*``);
* ``cache``: ``bench/compile_cache.py`` (``compile-cache-cpu-*``);
* ``warmup``: ``bench/compile_cache.py --name compile-warmup`` (``compile-warmup-cpu-*``);
* ``quality`` / ``quality-authors``: ``bench/quality.py`` (``--tag default`` /
  ``--preset authors --tag authors``);
* ``pipeline`` / ``pipeline-gpu``: ``bench/pipeline.py`` (``pipeline-cpu-*`` /
  ``pipeline-gpu-*``);
* ``window``: ``bench/window_cost.py`` (``window-cost-cpu-*``).

Every figure in those sections therefore comes from a results file, with its device and date.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SECTIONS: dict[str, Callable[[str], bool]] = {
    "perf": lambda n: n.startswith("cpu-"),
    "perf-gpu": lambda n: n.startswith("gpu-"),
    "case1": lambda n: n.startswith("case1-") and "gpu" not in n,
    "case1-gpu": lambda n: n.startswith("case1-gpu-"),
    "poisson": lambda n: n.startswith("poisson-cpu-"),
    "poisson-gpu": lambda n: n.startswith("poisson-gpu-"),
    "batch": lambda n: n.startswith("batch-cpu-"),
    "batch-gpu": lambda n: n.startswith("batch-gpu-"),
    "cache": lambda n: n.startswith("compile-cache-cpu-"),
    "warmup": lambda n: n.startswith("compile-warmup-cpu-"),
    "pipeline": lambda n: n.startswith("pipeline-cpu-"),
    "pipeline-gpu": lambda n: n.startswith("pipeline-gpu-"),
    "quality": lambda n: n.startswith("quality-default-"),
    # The two-stage run (--tag authors), not the stage-1-only one (--tag authors-s1).
    "quality-authors": lambda n: n.startswith("quality-authors-") and "-s1-" not in n,
    "window": lambda n: n.startswith("window-cost-cpu-"),
    "eval-cost": lambda n: n.startswith("eval-cost-cpu-"),
}


def latest(pred: Callable[[str], bool], results: Path = RESULTS) -> Path | None:
    """The newest ``results/*.md`` whose file name ``pred`` accepts: by date, then name."""

    def date(p: Path) -> str:
        m = re.search(r"\d{4}-\d{2}-\d{2}", p.name)
        return m.group(0) if m else ""

    files = sorted(
        (p for p in results.glob("*.md") if pred(p.name)), key=lambda p: (date(p), p.name)
    )
    return files[-1] if files else None


def pick(results: Path = RESULTS) -> dict[str, Path | None]:
    """The results file each README section takes (None where there is none)."""
    return {name: latest(pred, results) for name, pred in SECTIONS.items()}


def rerender(results_json: str | Path, markdown) -> str:
    """Rewrite the ``.md`` beside a results ``.json`` with a bench script's ``markdown``
    (the ``--render`` option of every bench script); returns the new text."""
    src = Path(results_json)
    text = markdown(json.loads(src.read_text()))
    src.with_suffix(".md").write_text(text)
    return text


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()
    for name, src in pick().items():
        tag = re.escape(name)
        pat = re.compile(rf"(<!-- bench:{tag} -->\n).*?(<!-- /bench:{tag} -->)", re.S)
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
