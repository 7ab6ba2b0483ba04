"""Ahead-of-time compilation: put a blend's programs in the persistent compilation cache.

A process's first blend of a canvas shape (and, for batches, a stack size) spends most of
its time compiling: every stage's programs, the Poisson start, the small programs around
them. :func:`warmup` compiles all of them for the shapes asked for, by running the real
driver (:func:`jaxblend.blend.run_stages`) on a synthetic job of that shape with a budget of
one objective evaluation per stage (``run_stages(..., limit=1)``: the configuration, and
so every program, stays the blend's). The compiled programs do not depend on the budget
(it is an argument of the solver loop, not a constant in it), so with the persistent cache on
(:func:`jaxblend.enable_compilation_cache`; ``jaxblend warmup`` turns it on) a later
process with the same configuration, shapes, jaxlib and device loads every program instead
of compiling it. Within one process the programs stay compiled in memory as well.

Running instead of only lowering and compiling costs a few evaluations more (milliseconds
on an accelerator, about a second at 512² on a CPU) and guarantees that the cached
programs are exactly those a blend runs, shardings and all.

Example::

    jaxblend warmup --canvas 512                # jaxblend blend / jaxblend.blend at 512²
    jaxblend warmup --canvas 512 --stack 16     # jaxblend batch, stacks of 16
    jaxblend warmup --manifest jobs.jsonl --batch-size 16   # what that batch will run
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from jaxblend.blend import NonFiniteWarning, run_stages
from jaxblend.config import BlendConfig
from jaxblend.errors import InputError, JaxblendError
from jaxblend.io import Job, place

__all__ = ["warmup", "warmup_manifest"]


def synthetic_job(shape: tuple[int, int]) -> Job:
    """A job of canvas ``shape`` (height, width): a noise scene and an elliptical object
    in the middle, half the short side across (the programs depend only on the shape)."""
    h, w = int(shape[0]), int(shape[1])
    if min(h, w) < 8:
        raise InputError(f"canvas must be at least 8 x 8, got {h} x {w}")
    rng = np.random.default_rng(0)
    target = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    side = max(4, min(h, w) // 2)
    source = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:side, :side]
    r = (side - 1) / 2
    mask = ((((yy - r) / (0.45 * side)) ** 2 + ((xx - r) / (0.45 * side)) ** 2) <= 1) * 255
    return place(source, target, mask.astype(np.uint8), center=(h / 2, w / 2), canvas=max(h, w))


def warmup(
    config: BlendConfig | None = None,
    *,
    shape: tuple[int, int] = (512, 512),
    stacks: Sequence[int] | None = None,
    vgg: Any = None,
    devices: Sequence | None = None,
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """Compile the programs a blend of canvas ``shape`` runs (see the module docstring).

    Args:
      config: the blends' :class:`BlendConfig` (default ``BlendConfig()``); its budgets
        and seed do not matter.
      shape: the canvas, ``(height, width)`` (a 512 canvas and a square target: 512 x 512).
      stacks: ``None``: the single-job programs (:func:`jaxblend.blend`,
        ``jaxblend blend``); stack sizes: the programs :mod:`jaxblend.batch` runs for
        stacks of those sizes, sharded over ``devices`` (rounded up to a multiple of
        their count, as a batch does).
      vgg: a loaded VGG (default: ``config.network``).
      devices: the devices a batch shards over (default ``jax.local_devices()``).
      log: called with a line per warmed program set.

    Returns:
      one row per program set: ``{"shape", "stack", "seconds"}`` (``stack`` ``None`` for
      the single-job programs); ``seconds`` is compiling (or loading from the cache) plus
      the one-evaluation run.
    """
    from jaxblend.batch import _Prepared, _solve_stack, stack_size
    from jaxblend.vgg import load_vgg

    config = BlendConfig() if config is None else config
    vgg = load_vgg(config.network) if vgg is None else vgg
    job = synthetic_job(shape)
    devs = tuple(jax.local_devices() if devices is None else devices)
    rows = []
    for n in [None] if stacks is None else list(stacks):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonFiniteWarning)
            if n is None:  # what blend_job runs
                run_stages(config, vgg, job.target, job.source, job.mask, limit=1)
            else:  # what a batch bucket runs (its configuration has seed 0)
                b = stack_size(int(n), int(n), len(devs))
                cfg = config.replace(seed=0)
                part = [_Prepared(i, job, cfg, i) for i in range(b)]
                _solve_stack(cfg, vgg, part, part, devs, limit=1)
        dt = time.perf_counter() - t0
        rows.append({"shape": list(job.target.shape[:2]), "stack": n, "seconds": dt})
        if log is not None:
            what = "single blend" if n is None else f"stack of {b}"
            log(f"warmed {what} at {job.target.shape[0]}x{job.target.shape[1]} in {dt:.1f} s")
    return rows


def warmup_manifest(
    manifest: Any,
    *,
    batch_size: int | str | None = None,
    config_path: Any = None,
    precision: str | None = None,
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """Warm up what ``jaxblend batch MANIFEST --batch-size B --config C`` will run: every
    bucket (canvas shape and configuration) of the manifest's jobs, at the stack sizes the
    batch gives it (full stacks and, for a bucket that never fills one, its padded size).
    Each job is placed to learn its canvas shape (images are decoded, nothing is blended).
    With several processes (``jax.process_count() > 1``) only this process's share;
    ``precision`` overrides the configuration's.
    """
    from jaxblend.batch import (
        _layout,
        auto_batch_size,
        job_config,
        load_config,
        read_manifest,
        stack_size,
    )
    from jaxblend.vgg import load_vgg

    config = load_config(config_path)
    if precision is not None:
        config = config.replace(precision=precision)
    jobs = read_manifest(manifest)
    n_proc, me = jax.process_count(), jax.process_index()
    if n_proc > 1:
        jobs = [j for i, j in enumerate(jobs) if i % n_proc == me]
    devs = tuple(jax.local_devices())
    buckets: dict[tuple, int] = {}
    for j in jobs:
        try:
            cfg = job_config(config, j)
            key = (cfg.replace(seed=0), _layout(j, cfg).target.shape[:2])
        except (JaxblendError, TypeError, ValueError):
            continue  # the batch records it as failed; nothing to compile
        buckets[key] = buckets.get(key, 0) + 1
    vgg = load_vgg(config.network)
    rows: list[dict] = []
    for (cfg, shape), count in buckets.items():
        if isinstance(batch_size, str) and batch_size.strip().lower() == "auto":
            size: int | None = auto_batch_size(cfg, vgg, (*shape, 3), devs)[0]
        else:
            size = None if batch_size is None else int(batch_size)
        full = stack_size(size, 8 * len(devs), len(devs))
        sizes = {full} if count >= full else {stack_size(size, count, len(devs))}
        rows += warmup(cfg, shape=shape, stacks=sorted(sizes), vgg=vgg, devices=devs, log=log)
    return rows


def parse_canvas(text: str) -> tuple[int, int]:
    """``"512"`` -> ``(512, 512)``, ``"384x512"`` -> ``(384, 512)`` (height x width)."""
    parts = str(text).lower().replace("×", "x").split("x")
    try:
        hw = [int(v) for v in parts]
    except ValueError:
        hw = []
    if len(hw) not in (1, 2) or min(hw) < 8:
        raise InputError(f"canvas must be N or HxW with sides of at least 8, got {text!r}")
    return (hw[0], hw[-1])


def warmup_cli(args: Any) -> int:
    """``jaxblend warmup``: the command line's call (arguments parsed by :mod:`jaxblend.cli`)."""
    import sys

    from jaxblend.batch import load_config

    def say(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    if args.manifest:
        if args.stack:
            raise InputError("give --stack or --manifest, not both")
        rows = warmup_manifest(
            args.manifest,
            batch_size=args.batch_size,
            config_path=args.config,
            precision=args.precision,
            log=say,
        )
    else:
        config = load_config(args.config)
        if args.precision:
            config = config.replace(precision=args.precision)
        rows = warmup(config, shape=parse_canvas(args.canvas), stacks=args.stack, log=say)
    cache = (
        jax.config.jax_compilation_cache_dir if jax.config.jax_enable_compilation_cache else None
    )
    print(
        f"warmed {len(rows)} program set{'s' * (len(rows) != 1)} in "
        f"{time.perf_counter() - t0:.1f} s; compilation cache: {cache or 'off'}"
    )
    return 0
