"""Progress on stderr: a line per phase and a bar per stage, with an honest ETA.

:class:`BlendProgress` is the ``progress`` callback of :func:`jaxblend.blend_job` plus
:meth:`BlendProgress.phase` for the steps around it (loading weights, the Poisson start,
writing). The first update of a stage comes after its compilation (or its load from the
compilation cache) and first chunk of evaluations, so it shows the time taken and no ETA;
from the second update on, the ETA is the evaluations left times the seconds per
evaluation measured since the first update, compilation excluded.

On a terminal the bar is rewritten in place (``\\r``); elsewhere (a log file, a pipe, CI)
every update is a plain line of its own.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["BlendProgress", "StatusLine", "run_blend", "stage_plan"]


class StatusLine:
    """One status line: rewritten in place on a terminal, a new line per update otherwise.

    Args:
      stream: where to write (default ``sys.stderr``).
      tty: force terminal behaviour on or off (default: ``stream.isatty()``).
    """

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if tty is None:
            try:
                tty = bool(self.stream.isatty())
            except (AttributeError, ValueError):
                tty = False
        self.tty = tty
        self._shown = 0  # length of the in-place line on screen (0: none)

    def update(self, text: str) -> None:
        """Show ``text`` as the current status."""
        if self.tty:
            pad = " " * max(0, self._shown - len(text))
            self.stream.write(f"\r{text}{pad}")
            self._shown = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        """Print ``text`` on a line of its own (ending a status line on screen first)."""
        self.end()
        self.stream.write(text + "\n")
        self.stream.flush()

    def end(self) -> None:
        """Finish the in-place line, so that what follows starts on a fresh line."""
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = 0


def stage_plan(config: Any) -> list[tuple[str, float, int]]:
    """The ``(stage, scale, budget)`` runs of a blend, in order, as
    :func:`jaxblend.blend.run_stages` makes them (coarse scales share stage 1's budget)."""
    n = len(config.scales)
    steps1 = int(config.stage1.steps)
    share = max(1, steps1 // n)
    plan = [("stage1", float(s), share) for s in config.scales[:-1]]
    plan.append(("stage1", 1.0, max(1, steps1 - share * (n - 1))))
    if config.stage2_enabled:
        plan.append(("stage2", 1.0, int(config.stage2.steps)))
    return plan


def _secs(x: float) -> str:
    return f"{x:.1f}s" if x < 10 else f"{x:.0f}s"


def _label(stage: str, scale: float) -> str:
    return stage if scale == 1.0 else f"{stage} (scale {scale:g})"


class BlendProgress:
    """Phase lines and per-stage bars of a blend on stderr.

    Call :meth:`expect` with the blend's configuration before the blend (it prints the
    first stage's "compiling" line and lets each finished stage announce the next), pass
    the object as ``progress=`` to :func:`jaxblend.blend_job`, and :meth:`phase` for
    anything else. ``quiet=True`` prints nothing.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        tty: bool | None = None,
        quiet: bool = False,
        width: int = 24,
    ) -> None:
        self.line = StatusLine(stream, tty)
        self.quiet = quiet
        self.width = width
        self.t_start = time.perf_counter()
        self.plan: list[tuple[str, float, int]] = []
        self.chunk = 10
        self._key: tuple[str, float] | None = None
        self._announced: set[tuple[str, float]] = set()
        self._rates: dict[float, float] = {}  # seconds per evaluation, by scale
        self._last = self.t_start  # time of the latest update
        self._reset(None)

    def _reset(self, key: tuple[str, float] | None, t0: float | None = None) -> None:
        self._key = key
        self._t0 = time.perf_counter() if t0 is None else t0
        self._first: tuple[float, int] | None = None  # time and count of the first update
        self._n = 0
        self._budget = 0
        self._closed = False

    def _say(self, text: str) -> None:
        if not self.quiet:
            self.line.note(f"[{time.perf_counter() - self.t_start:6.1f}s] {text}")

    def phase(self, text: str) -> None:
        """Print a phase line, ``[elapsed] text``."""
        self._say(text)

    def expect(self, config: Any) -> None:
        """Plan the stages of a blend with ``config`` and announce the first."""
        self.plan = stage_plan(config)
        self.chunk = int(config.chunk)
        self._announce(0)

    def _announce(self, i: int) -> None:
        if i >= len(self.plan):
            return
        stage, scale, budget = self.plan[i]
        key = (stage, scale)
        if key in self._announced:
            return
        self._announced.add(key)
        first = min(self.chunk, budget)
        self._say(
            f"{_label(stage, scale)}: compiling (or loading from the compilation cache), then "
            f"the first {first} of {budget} evaluations"
        )
        self._reset(key)

    def _finish(self, announce: bool = True) -> None:
        if self._key is None or self._closed:
            return
        self._closed = True
        if self._first is None:
            return
        stage, scale = self._key
        dt = self._last - self._t0
        early = "" if self._n >= self._budget else f" (stopped before the budget of {self._budget})"
        rate = self._rates.get(scale)
        per = f", {rate:.3g} s per evaluation after compiling" if rate else ""
        self._say(f"{_label(stage, scale)} done: {self._n} evaluations in {dt:.1f}s{per}{early}")
        keys = [(s, c) for s, c, _ in self.plan]
        if announce and self._key in keys:
            self._announce(keys.index(self._key) + 1)

    def __call__(self, info: dict) -> None:
        """The ``progress`` callback: ``{"stage", "scale", "evaluations", "budget", "loss"}``."""
        key = (str(info.get("stage")), float(info.get("scale", 1.0)))
        if key != self._key:
            # A stage that stopped before its budget: the next one began at the last update.
            self._finish(announce=False)
            self._announced.add(key)
            self._reset(key, t0=self._last)
        now = self._last = time.perf_counter()
        n, budget = int(info["evaluations"]), max(1, int(info["budget"]))
        self._n, self._budget = n, budget
        dt = now - self._t0
        if self._first is None:
            self._first = (now, n)
            hint = self._rates.get(key[1])
            eta = f"eta ~{_secs((budget - n) * hint)}" if hint and n < budget else "eta measuring"
            timing = f"{dt:.1f}s incl. compiling"
        else:
            t1, n1 = self._first
            if n > n1:
                self._rates[key[1]] = (now - t1) / (n - n1)
            rate = self._rates.get(key[1])
            eta = f"eta {_secs((budget - n) * rate)}" if rate else "eta measuring"
            timing = f"{dt:.1f}s, {rate:.3g} s/eval" if rate else f"{dt:.1f}s"
        if n >= budget:
            eta = "done"
        if not self.quiet:
            fill = int(min(1.0, n / budget) * self.width)
            bar = "#" * fill + "." * (self.width - fill)
            self.line.update(
                f"{_label(*key)} [{bar}] {n}/{budget} evals  loss {info['loss']:.4g}  "
                f"{timing}  {eta}"
            )
        if n >= budget:
            self._finish()

    def close(self) -> None:
        """End the bar line (call before printing anything else, e.g. after Ctrl-C)."""
        if not self.quiet:
            self.line.end()


def run_blend(
    job: Any,
    *,
    config: Any,
    vgg: Any,
    progress: BlendProgress | None = None,
    frames: bool = False,
) -> Any:
    """:func:`jaxblend.blend_job` with a phase line for each step.

    With ``init="poisson"`` the Poisson start is solved (and compiled) first, under its
    own phase line; the blend's own call then finds the compiled program in memory and
    costs one more solve of a fraction of a second. Returns the :class:`BlendResult`.
    """
    from jaxblend.blend import blend_job

    if progress is not None:
        if config.init == "poisson":
            import jax.numpy as jnp

            from jaxblend.poisson import poisson_solve

            progress.phase("Poisson start: solving (compiled on first use of this canvas size)")
            arrays = (jnp.asarray(a, jnp.float32) for a in (job.target, job.source, job.mask))
            poisson_solve(*arrays, mode="normal").block_until_ready()
        progress.expect(config)
    return blend_job(job, config=config, vgg=vgg, progress=progress, frames=frames)
