"""High-throughput batch blending: stacked, ``vmap``-ped, sharded jobs and a resumable runner.

:func:`blend_batch` lays every job out on its canvas (:func:`jaxblend.io.place`), groups
jobs that share a canvas shape and an effective configuration (the seed excepted: seeds are
per job, passed as an array) into buckets, splits each bucket into stacks of
``batch_size`` jobs and solves every stack with :func:`jaxblend.blend.run_stages`
(``batched=True``): one ``vmap``-ped compiled program per stage. A short final stack is
padded with copies of its last job (dropped afterwards) so it reuses the compiled programs.

Devices: the job axis of a stack is sharded over the local devices
(``Mesh(devices, ("jobs",))``, ``NamedSharding(mesh, P("jobs"))``; VGG parameters
replicated), and the stack size is rounded up to a multiple of the device count.

Several processes or hosts: call :func:`init_distributed` (``jax.distributed.initialize``;
``jaxblend batch --distributed`` or ``--coordinator HOST:PORT --num-processes N
--process-id I``) in every process first; :func:`run_manifest` then gives process ``p`` of
``n`` the jobs ``i`` with ``i % n == p`` (and each process shards its stacks over its own
local devices). The processes may share ``out_dir``: each appends whole lines to
``results.jsonl`` with single ``O_APPEND`` writes.

Host work runs beside the devices: worker threads decode and place the next stack's jobs
and write the previous stack's images while a stack computes (see :func:`run_manifest`).

:func:`run_manifest` drives a manifest (JSON Lines or CSV) to a folder of PNGs plus
``results.jsonl``, resumable after a kill at any moment.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import difflib
import functools
import io as _io
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxblend import validate
from jaxblend.blend import BlendResult, NonFiniteWarning, _scalar_losses, run_stages
from jaxblend.config import KEEP_TARGET, BlendConfig, StageConfig
from jaxblend.errors import InputError, JaxblendError, OutputError, RunError
from jaxblend.io import Job, place, save_image, to_uint8

__all__ = ["blend_batch", "init_distributed", "load_config", "read_manifest", "run_manifest"]

AUTO_CAP = 64  # largest stack "auto" picks
# Largest stack "auto" picks on a CPU (more when there are more host devices): past it a
# stack ran no faster per job (2 cores, 256²: 12.9 jobs/min at 4, 11.3 at 8 in
# bench/results/batch-cpu-2026-11-25.md; 12.6, 13.8, 12.4 at 1, 2, 4 in batch-cpu-2026-12-02).
AUTO_CPU_STACK = 4
RESULTS = "results.jsonl"


# --------------------------------------------------------------------------- jobs


def _side(v: Any, key: str, lo: int) -> Any:
    """A job's ``canvas``/``source_size`` value checked: an integer, ``None`` if unset, or
    (``canvas`` only) :data:`KEEP_TARGET`."""
    if key == "canvas" and v == KEEP_TARGET:
        return v
    return None if v is None or v == "" else validate.integer(v, key, lo, validate.MAX_SIDE)


def _field(job: Any, key: str, default: Any = None) -> Any:
    if isinstance(job, dict):
        return job.get(key, default)
    return getattr(job, key, default)


def _steps(value: Any) -> tuple[int, int] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    if isinstance(value, (int, float)) or not isinstance(value, (list, tuple)):
        value = [value]
    if not 1 <= len(value) <= 2:
        raise InputError(f"steps must be N or [N1, N2] of positive integers, got {value!r}")
    hint = "give N or [N1, N2]"
    vals = [validate.integer(v, "steps", 1, validate.MAX_STEPS, hint) for v in value]
    return vals[0], vals[-1]


def _unknown(keys: Iterable[str], known: Sequence[str], where: str, what: str = "field") -> None:
    """Refuse keys outside ``known``, naming the closest known one (difflib)."""
    for k in keys:
        if k in known:
            continue
        close = difflib.get_close_matches(str(k).strip().lower(), known, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InputError(f"{where}: unknown {what} {k!r}{hint}; known: {', '.join(known)}")


def job_config(config: BlendConfig, job: Any) -> BlendConfig:
    """The effective configuration of one job: ``config`` with the job's overrides."""
    changes: dict[str, Any] = {}
    for key, lo in (("canvas", 8), ("source_size", 1)):
        v = _side(_field(job, key), key, lo)
        if v is not None:  # KEEP_TARGET: the target's own size, not resized
            changes[key] = None if v == KEEP_TARGET else v
    init = _field(job, "init")
    if init:
        changes["init"] = str(init)
    steps = _steps(_field(job, "steps"))
    if steps is not None:
        changes["steps1"], changes["steps2"] = steps
    return config.replace(**changes) if changes else config


def _seed(config: BlendConfig, job: Any) -> int:
    s = _field(job, "seed")
    return config.seed if s is None or s == "" else validate.seed(s)


def _layout(job: Any, cfg: BlendConfig) -> Job:
    center = _field(job, "center")
    try:
        return place(
            _field(job, "source"), _field(job, "target"), _field(job, "mask"), center=center,
            canvas=cfg.canvas, source_size=cfg.source_size,
            mask_threshold=_field(job, "mask_threshold", 0) or 0,
            value_range=_field(job, "value_range"),
        )  # fmt: skip
    except JaxblendError:
        raise
    except MemoryError:
        raise InputError("its images are too large to lay out in memory") from None
    except Exception as e:  # noqa: BLE001 - anything else the inputs can cause is the job's
        raise InputError(f"invalid job inputs ({type(e).__name__}: {_one_line(e)})") from None


def _one_line(e: Any, limit: int = 500) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: The fields of a job: a manifest line, or a dict passed to :func:`blend_batch`.
JOB_FIELDS = (
    "id", "source", "mask", "target", "center", "center_row", "center_col", "canvas",
    "source_size", "steps", "init", "seed", "mask_threshold",
)  # fmt: skip


def check_job(config: BlendConfig, job: Any) -> tuple[BlendConfig, int]:
    """A job's effective configuration and seed, every field checked (no image is read:
    only that the files exist); raises :class:`InputError` naming the problem."""
    if isinstance(job, dict):
        _unknown(job.keys(), (*JOB_FIELDS, "value_range"), "job")
    for key in ("source", "target"):
        if _field(job, key) is None:
            raise InputError(f"missing {key}")
    validate.center(_field(job, "center"))
    t = _field(job, "mask_threshold")
    if t not in (None, ""):
        if validate.number(t, "mask_threshold", 0, 255) >= 255:
            raise InputError(f"mask_threshold must be in [0, 255), got {t!r}")
    for key in ("source", "mask", "target"):
        v = _field(job, key)
        if isinstance(v, (str, os.PathLike)):
            p = Path(v)
            if not p.exists():
                raise InputError(f"{key} file not found: {p}")
            if p.is_dir():
                raise InputError(f"{key} {p} is a folder; give an image file")
    return job_config(config, job), _seed(config, job)


# --------------------------------------------------------------------------- devices


@functools.lru_cache(maxsize=8)
def _mesh(devices: tuple) -> Mesh:
    return Mesh(np.asarray(devices), ("jobs",))


def _replicated_vgg(vgg: Any, devices: tuple) -> Any:
    key = (id(vgg.params), devices)
    hit = _REPLICATED.get(key)
    if hit is None:
        sharding = NamedSharding(_mesh(devices), P())
        hit = vgg._replace(params=jax.device_put(vgg.params, sharding))
        _REPLICATED.clear()  # keep one copy of the parameters per process
        _REPLICATED[key] = hit
    return hit


_REPLICATED: dict = {}


def _put_stack(arrays: Sequence[np.ndarray], devices: tuple) -> list[jax.Array]:
    sharding = NamedSharding(_mesh(devices), P("jobs"))
    return [jax.device_put(a, sharding) for a in arrays]


def stack_size(batch_size: int | None, n_jobs: int, n_devices: int) -> int:
    """Jobs per stack: ``batch_size`` (default: all ``n_jobs``, at most 8 per device)
    rounded up to a multiple of the device count."""
    b = min(n_jobs, 8 * n_devices) if batch_size is None else int(batch_size)
    if b < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    return math.ceil(b / n_devices) * n_devices


# --------------------------------------------------------------------------- solving


@dataclasses.dataclass
class _Prepared:
    index: int
    job: Job
    config: BlendConfig  # seed normalised to 0: the bucket key with the canvas shape
    seed: int


def _prepare_one(i: int, j: Any, config: BlendConfig) -> _Prepared | Exception:
    """Decode and place job ``i`` (host work only: safe on a worker thread). Whatever goes
    wrong is this job's error (returned, never raised)."""
    try:
        cfg, seed = check_job(config, j)
        return _Prepared(i, _layout(j, cfg), cfg.replace(seed=0), seed)
    except JaxblendError as e:
        return e
    except Exception as e:  # noqa: BLE001 - no exception type escapes per-job handling
        return InputError(f"invalid job settings ({type(e).__name__}: {_one_line(e)})")


def default_workers() -> int:
    """Host threads of the pipeline: one per CPU core, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


def _layouts(
    jobs: Sequence[Any], config: BlendConfig, pool: ThreadPoolExecutor | None, ahead: int
) -> Iterator[tuple[int, _Prepared | Exception]]:
    """``(index, prepared job or error)`` in job order; with a pool, up to ``ahead`` jobs
    are decoded and placed on its threads ahead of the consumer (while a stack computes)."""
    if pool is None:
        for i, j in enumerate(jobs):
            yield i, _prepare_one(i, j, config)
        return
    pending: collections.deque = collections.deque()
    todo = iter(enumerate(jobs))
    for i, j in todo:
        pending.append((i, pool.submit(_prepare_one, i, j, config)))
        if len(pending) >= ahead:
            break
    while pending:
        i, fut = pending.popleft()
        nxt = next(todo, None)
        if nxt is not None:
            pending.append((nxt[0], pool.submit(_prepare_one, nxt[0], nxt[1], config)))
        yield i, fut.result()


def _solve_stack(cfg, vgg, part, padded, devices, limit=None):
    arrays = [np.stack([getattr(p.job, a) for p in padded]) for a in ("target", "source", "mask")]
    seeds = np.asarray([p.seed for p in padded], np.uint32)
    t, s, m, sd = _put_stack([*arrays, seeds], devices)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonFiniteWarning)
        out = run_stages(
            cfg, _replicated_vgg(vgg, devices), t, s, m, seed=sd, batched=True, limit=limit
        )
    image = np.asarray(out["image"])
    stage1 = np.asarray(out["stage1"])
    finite = np.asarray(out["finite"])
    evals = {k: np.asarray(v) for k, v in out["evaluations"].items()}
    share = {k: v / len(part) for k, v in out["seconds"].items()}
    results = []
    for i, p in enumerate(part):
        r = BlendResult(
            image=to_uint8(image[i]),
            stage1=to_uint8(stage1[i]),
            losses=_scalar_losses(out["losses"], i),
            evaluations={k: int(v[i]) for k, v in evals.items()},
            seconds=dict(share),
            placement=p.job.placement,
            image_float=image[i],
        )
        results.append((p.index, r, bool(finite[i])))
    return results


def _iter_batch(
    jobs: Sequence[Any],
    config: BlendConfig,
    *,
    batch_size: int | None,
    vgg: Any,
    devices: Sequence | None,
    workers: int | None = None,
) -> Iterator[list[tuple[int, BlendResult | Exception, bool]]]:
    """Yield ``[(job index, result or error, finite), ...]`` as each stack finishes (a
    job that cannot be placed: as soon as its layout fails).

    Jobs are decoded and placed on ``workers`` host threads (default
    :func:`default_workers`; 0: in this thread), a stack ahead of the device; a bucket
    (canvas shape and configuration) is solved as soon as it holds a full stack, and what
    is left of each bucket at the end is padded to that bucket's full stack size (so it
    reuses its programs), or, for a bucket that never filled one, to
    :func:`stack_size` of its jobs.
    """
    from jaxblend.vgg import load_vgg

    devs = tuple(jax.local_devices() if devices is None else devices)
    n_dev = len(devs)
    cap = stack_size(batch_size, 8 * n_dev, n_dev)
    workers = default_workers() if workers is None else int(workers)
    pool = ThreadPoolExecutor(workers, "jaxblend-layout") if workers > 0 else None
    buckets: dict[tuple, list[_Prepared]] = {}
    full: dict[tuple, int] = {}

    def solve(members: list[_Prepared], b: int) -> list:
        """Solve one stack; whatever fails (memory, the device, ...) is each member's error."""
        nonlocal vgg
        try:
            if vgg is None:
                vgg = load_vgg(config.network)
            # The host devices of a CPU share one RAM: the whole stack counts there.
            per_device = b if devs[0].platform == "cpu" else math.ceil(b / n_dev)
            validate.blend_memory(
                members[0].config, members[0].job.target.shape[:2], vgg, device=devs[0],
                stack=per_device, option="canvas",
            )  # fmt: skip
            padded = members + [members[-1]] * (b - len(members))
            return _solve_stack(members[0].config, vgg, members, padded, devs)
        except Exception as e:  # noqa: BLE001 - no exception type escapes per-job handling
            err: Exception = e
            if not isinstance(e, JaxblendError):
                memory = isinstance(e, MemoryError) or "memory" in str(e).lower()
                hint = "; lower the batch size or the canvas" if memory else ""
                err = RunError(f"its stack failed ({type(e).__name__}: {_one_line(e)}){hint}")
            return [(p.index, err, True) for p in members]

    try:
        for i, p in _layouts(jobs, config, pool, ahead=cap + 2 * max(workers, 1)):
            if isinstance(p, Exception):
                yield [(i, p, True)]
                continue
            key = (p.config, p.job.target.shape)
            members = buckets.setdefault(key, [])
            members.append(p)
            if len(members) == cap:
                del buckets[key]
                full[key] = cap
                yield solve(members, cap)
        for key, members in buckets.items():
            yield solve(members, full.get(key) or stack_size(batch_size, len(members), n_dev))
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def blend_batch(
    jobs: Iterable[Any],
    config: BlendConfig | None = None,
    *,
    batch_size: int | None = None,
    vgg: Any = None,
    progress: Callable[[dict], None] | None = None,
    devices: Sequence | None = None,
    workers: int | None = None,
) -> list[BlendResult | Exception]:
    """Blend many jobs, stacked per canvas shape and configuration, on all local devices.

    Args:
      jobs: dicts (or objects with these attributes) with ``source``, ``mask``, ``target``
        (paths, PIL images or arrays) and ``center`` ``(row, col)``; optional per-job
        overrides ``canvas``, ``source_size``, ``steps`` (N or ``[N1, N2]``), ``init`` and
        ``seed``.
      config: the shared :class:`BlendConfig` (default ``BlendConfig()``).
      batch_size: jobs per stack (default: the bucket, at most 8 per device); rounded up to
        a multiple of the device count, short stacks padded.
      vgg: a loaded VGG (default the shipped VGG16).
      progress: called with ``{"done", "total", "seconds"}`` after each stack.
      devices: devices to shard the job axis over (default ``jax.local_devices()``).
      workers: host threads that decode and place the next stack's jobs while a stack
        computes (default :func:`default_workers`; 0: no threads).

    Returns:
      one entry per job, in order: a :class:`~jaxblend.blend.BlendResult`, or the
      exception that stopped that job (nothing is raised for one job's failure): an
      :class:`~jaxblend.errors.InputError` for its fields, images or placement (an
      unknown field names the closest known one), a canvas too large for memory, or a
      :class:`~jaxblend.errors.RunError` when its stack's solve failed (every member of
      that stack gets it). A job whose objective became non-finite keeps its best finite
      iterate and is reported with a :class:`~jaxblend.blend.NonFiniteWarning` naming it.

    Each stack is one ``vmap`` of :func:`jaxblend.blend.run_stages`, so a job's result
    equals :func:`jaxblend.blend.blend_job` on it with the same budget and seed.
    """
    jobs = list(jobs)
    config = BlendConfig() if config is None else config
    out: list[BlendResult | Exception | None] = [None] * len(jobs)
    t0, done = time.perf_counter(), 0
    stream = _iter_batch(
        jobs, config, batch_size=batch_size, vgg=vgg, devices=devices, workers=workers
    )
    for chunk in stream:
        for i, r, finite in chunk:
            out[i] = r
            if not finite:
                warnings.warn(
                    f"job {i}: the objective became non-finite; kept the best finite iterate",
                    NonFiniteWarning,
                    stacklevel=2,
                )
        done += len(chunk)
        if progress is not None:
            progress({"done": done, "total": len(jobs), "seconds": time.perf_counter() - t0})
    return out  # type: ignore[return-value]


# --------------------------------------------------------------------------- files


def _layers(value: Any, where: str) -> tuple[tuple[str, float], ...]:
    try:
        return tuple((str(n), float(w)) for n, w in value)
    except (TypeError, ValueError):
        raise InputError(f"{where} must be a list of [layer, weight] pairs") from None


def _stage(value: Any, base: StageConfig, where: str) -> StageConfig:
    if not isinstance(value, dict):
        raise InputError(f"{where} must be an object of StageConfig fields")
    names = sorted(f.name for f in dataclasses.fields(StageConfig))
    _unknown(value.keys(), names, f"{where}", "setting")
    changes = {}
    for k, v in value.items():
        changes[k] = _layers(v, f"{where}.{k}") if k.endswith("_layers") else v
    try:
        return dataclasses.replace(base, **changes)
    except InputError as e:
        raise InputError(f"{where}: {e}") from None
    except (TypeError, ValueError) as e:
        raise InputError(f"bad {where} settings ({e})") from None


def load_config(path: str | os.PathLike | None) -> BlendConfig:
    """A :class:`BlendConfig` from a JSON file of its fields (``stage1``/``stage2`` as
    objects of :class:`StageConfig` fields, layer lists as ``[[name, weight], ...]``);
    ``"preset": NAME`` starts from that :mod:`jaxblend.presets` configuration instead of
    the defaults (the other fields change it). An unknown setting is refused, naming the
    closest known one."""
    if path is None:
        return BlendConfig()
    p = Path(path)
    try:
        data = json.loads(p.read_bytes().decode("utf-8-sig"))
    except FileNotFoundError:
        raise InputError(f"config file not found: {p}") from None
    except IsADirectoryError:
        raise InputError(f"config file {p} is a folder; give a .json file") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise InputError(f"config file {p} is not valid JSON ({_one_line(e)})") from None
    if not isinstance(data, dict):
        raise InputError(f"config file {p} must hold a JSON object of BlendConfig settings")
    names = sorted([f.name for f in dataclasses.fields(BlendConfig)] + ["preset"])
    _unknown(data.keys(), names, f"{p}", "setting")
    base = BlendConfig()
    if "preset" in data:
        from jaxblend.presets import PRESETS

        name = data["preset"]
        if not isinstance(name, str) or name not in PRESETS:
            raise InputError(f"preset in {p} must be one of {', '.join(PRESETS)}; got {name!r}")
        base = PRESETS[name]
    changes: dict[str, Any] = {}
    for k, v in data.items():
        if k == "preset":
            continue
        if k in ("stage1", "stage2"):
            changes[k] = _stage(v, getattr(base, k), k)
        elif k == "scales":
            try:
                changes[k] = tuple(float(s) for s in v) if isinstance(v, list) else v
            except (TypeError, ValueError):
                raise InputError(f"scales in {p} must be a list of numbers, got {v!r}") from None
        else:
            changes[k] = v
    for k in ("canvas", "source_size", "seed", "history", "chunk"):
        v = changes.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise InputError(f"{k} in {p} must be an integer, got {v!r}")
    for s in ("stage1", "stage2"):
        st = changes.get(s)
        if st is not None:
            for f in ("grad", "content", "style", "hist", "tv", "steps"):
                v = getattr(st, f)
                if not isinstance(v, (int, float)) or isinstance(v, bool):
                    raise InputError(f"{s}.{f} in {p} must be a number")
    try:
        return dataclasses.replace(base, **changes)
    except InputError as e:
        raise InputError(f"{p}: {e}") from None
    except (TypeError, ValueError) as e:
        raise InputError(f"bad settings in {p} ({e})") from None


def _center(row: dict, where: str) -> Any:
    """The raw centre of a manifest row (checked with the other values)."""
    c = row.get("center")
    if c in (None, "") and row.get("center_row") not in (None, ""):
        c = (row.get("center_row"), row.get("center_col"))
    if c in (None, ""):
        raise InputError(f'{where}: missing center ("row,col" or center_row/center_col)')
    return c


def _values(row: dict, base: Path) -> dict:
    """A manifest row's values, converted and checked (raises :class:`InputError`)."""
    job: dict[str, Any] = {}
    for k in ("source", "mask", "target"):
        v = row.get(k)
        if v in (None, "") and k == "mask":
            job[k] = None  # the source's alpha channel is the mask
        elif not isinstance(v, str):
            raise InputError(f"{k} must be a file name, got {v!r}")
        else:
            job[k] = base / v.strip()
    c = _center(row, "")
    if isinstance(c, list):
        c = tuple(c)
    center = validate.center(c)
    job["center"] = center
    for k, lo in (("canvas", 8), ("source_size", 1)):
        v = _side(row.get(k), k, lo)
        if v is not None:
            job[k] = v
    if row.get("seed") not in (None, ""):
        job["seed"] = validate.seed(row["seed"])
    t = row.get("mask_threshold")
    if t not in (None, ""):
        job["mask_threshold"] = validate.number(t, "mask_threshold", 0, 255)
        if job["mask_threshold"] >= 255:
            raise InputError(f"mask_threshold must be in [0, 255), got {t!r}")
    if row.get("init") not in (None, ""):
        job["init"] = str(row["init"]).strip()
    if row.get("steps") not in (None, ""):
        job["steps"] = _steps(row["steps"])
    job_config(BlendConfig(), job)  # init, steps and sizes as BlendConfig takes them
    return job


def _csv_rows(text: str, path: Path) -> list[tuple[str, dict]]:
    """Rows of a CSV manifest as saved by a spreadsheet: a UTF-8 byte-order mark (already
    dropped), spaces after the commas, CRLF line ends, ``;`` or tab as the separator when
    the header has no comma, trailing empty columns and empty rows."""
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    sep = (
        ","
        if "," in first or not (";" in first or "\t" in first)
        else (";" if ";" in first else "\t")
    )
    reader = csv.reader(_io.StringIO(text, newline=""), delimiter=sep, skipinitialspace=True)
    header: list[str] | None = None
    rows: list[tuple[str, dict]] = []
    try:
        for cells in reader:
            cells = [c.strip() for c in cells]
            if not any(cells):
                continue
            if header is None:
                while cells and not cells[-1]:
                    cells.pop()  # a spreadsheet's empty columns after the last field
                header = cells
                if any(not h for h in header):
                    raise InputError(f"{path.name}: the header has an empty column name")
                dup = [h for h in header if header.count(h) > 1]
                if dup:
                    raise InputError(f"{path.name}: column {dup[0]!r} appears twice in the header")
                _unknown(header, JOB_FIELDS, f"{path.name} header", "column")
                continue
            where = f"{path.name} line {reader.line_num}"
            extra = cells[len(header) :]
            if any(extra):
                raise InputError(
                    f"{where}: {len(cells)} values but {len(header)} header columns (a comma "
                    "inside a value needs quotes)"
                )
            cells = cells[: len(header)] + [""] * (len(header) - len(cells))
            rows.append((where, dict(zip(header, cells))))
    except csv.Error as e:
        raise InputError(f"{path.name}: not a readable CSV file ({e})") from None
    if header is None:
        raise InputError(f"{path.name}: empty CSV manifest (need a header line)")
    return rows


def _json_rows(text: str, path: Path) -> list[tuple[str, dict]]:
    if text.lstrip().startswith("["):
        raise InputError(
            f"{path.name} holds a JSON array, but a manifest is JSON Lines: one job object per "
            "line, no enclosing [ ] and no commas between lines; write each {...} on a line "
            "of its own (a .jsonl file)"
        )
    rows: list[tuple[str, dict]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path.name} line {n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            hint = ""
            if line.rstrip().endswith(","):
                hint = "; JSON Lines has no commas between lines"
            elif line.strip() in ("{", "}") or line.startswith((" ", "\t")):
                hint = "; each job must be a whole JSON object on one line"
            raise InputError(f"{where}: not valid JSON ({e.msg}){hint}") from None
        except (ValueError, RecursionError) as e:
            raise InputError(f"{where}: not valid JSON ({_one_line(e)})") from None
        if not isinstance(row, dict):
            raise InputError(f"{where}: expected a JSON object {{...}}, got {type(row).__name__}")
        _unknown(row.keys(), JOB_FIELDS, where, "field")
        rows.append((where, row))
    return rows


def read_manifest(manifest: str | os.PathLike, *, strict: bool = True) -> list[dict]:
    """Read a JSON Lines (``.jsonl``/``.json``) or CSV (``.csv``) manifest, one job a line.

    Fields: ``id, source, mask, target, center`` (``"row,col"``, ``[row, col]`` or
    ``center_row``/``center_col``) and optional ``canvas, source_size, steps, init, seed,
    mask_threshold``; ``mask`` may be left out for a source with an alpha channel (the
    alpha is the mask). Paths are relative to the manifest's folder. CSV files may come
    from a spreadsheet (byte-order mark, spaces after commas, CRLF, ``;`` separators).

    Raises :class:`InputError` (one line) for a manifest that cannot be used as it is: not
    found, not JSON Lines (a JSON array gets a hint) or CSV, no jobs, a missing or duplicate
    id, an unknown field (the message names the closest known one: a typo such as
    ``canvs`` is never ignored), or a missing source, target or centre. A bad value (a
    seed outside ``0..2**32-1``, ``steps: 0``, a centre that is not two finite numbers,
    ...) raises too when ``strict``; with ``strict=False`` that job comes back as ``{"id":
    ..., "error": message}`` instead, for :func:`run_manifest` to record while the other
    jobs run.
    """
    path = Path(manifest)
    if not path.exists():
        raise InputError(f"manifest not found: {path}")
    if path.is_dir():
        raise InputError(f"manifest {path} is a folder; give a .jsonl or .csv file")
    ext = path.suffix.lower()
    if ext not in (".jsonl", ".json", ".ndjson", ".csv"):
        raise InputError(f"manifest must be .jsonl or .csv, got {path.name}")
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a spreadsheet's byte-order mark
    except UnicodeDecodeError:
        raise InputError(
            f"manifest {path} is not UTF-8 text; save it as UTF-8 (a spreadsheet's 'CSV UTF-8')"
        ) from None
    except OSError as e:
        raise InputError(f"cannot read manifest {path} ({e.strerror or e})") from None
    rows = _csv_rows(text, path) if ext == ".csv" else _json_rows(text, path)
    if not rows:
        raise InputError(f"manifest {path} holds no jobs")
    jobs, seen = [], set()
    for where, row in rows:
        jid = row.get("id")
        if jid is None or str(jid).strip() == "":
            raise InputError(f"{where}: missing id")
        jid = str(jid).strip()
        bad_name = any(c in jid for c in '/\\:*?"<>|') or any(ord(c) < 32 for c in jid)
        if bad_name or jid.startswith(".") or jid == RESULTS or len(jid) > 200:
            raise InputError(f"{where}: id {jid!r} cannot be a file name")
        if jid in seen:
            raise InputError(f"{where}: duplicate id {jid!r}")
        seen.add(jid)
        for k in ("source", "target"):
            if row.get(k) in (None, ""):
                raise InputError(f"{where}: missing {k}")
        _center(row, where)
        try:
            job = {"id": jid, **_values(row, path.parent)}
        except InputError as e:
            if strict:
                raise InputError(f"{where}: {e}") from None
            job = {"id": jid, "error": f"{where}: {e}"}
        jobs.append(job)
    return jobs


def _decodes(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
        return True
    except Exception:  # noqa: BLE001 - any failure means "redo this job"
        return False


def _read_results(path: Path) -> dict[str, dict]:
    """Last record per id of ``results.jsonl``; a torn last line (a kill mid-write) is cut."""
    if not path.exists():
        return {}
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):  # torn tail: drop it so the next append starts a fresh line
        with open(path, "r+b") as f:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
    out = {}
    for line in data[:end].splitlines():
        try:
            rec = json.loads(line)
            out[str(rec["id"])] = rec
        except (ValueError, KeyError, TypeError):
            continue
    return out


def _append(path: Path, records: list[dict]) -> None:
    if not records:
        return
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, text)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:  # a full disk: the run cannot record, so it stops (one line)
        raise OutputError(f"cannot record results in {path} ({e.strerror or e})") from None


def _record(jid: str, r: Any, finite: bool, out: Path | None) -> dict:
    if isinstance(r, Exception):
        return {"id": jid, "status": "failed", "output": None, "error": _one_line(r, 2000),
                "losses": None, "evaluations": None, "seconds": None}  # fmt: skip
    return {
        "id": jid,
        "status": "ok" if finite else "nonfinite",
        "output": str(out),
        "error": None if finite else "objective became non-finite; best finite iterate kept",
        "losses": r.losses,
        "evaluations": r.evaluations,
        "seconds": round(float(sum(r.seconds.values())), 4),
    }


class _Progress:
    def __init__(self, total: int, quiet: bool) -> None:
        from jaxblend.progress import StatusLine

        self.total, self.quiet, self.done = total, quiet, 0
        self.t0 = time.perf_counter()
        self.line = StatusLine()  # in place on a terminal, a line per update elsewhere

    def __call__(self, n: int) -> None:
        self.done += n
        if self.quiet:
            return
        dt = time.perf_counter() - self.t0
        rate = self.done / dt * 60 if dt > 0 else 0.0
        left = self.total - self.done
        eta = left / rate * 60 if rate > 0 else float("nan")
        self.line.update(
            f"batch {self.done}/{self.total} jobs  {rate:6.1f} jobs/min  {dt:6.1f}s  "
            f"eta {eta:6.1f}s"
        )


def _available_bytes(device: Any) -> int:
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory stats
        stats = None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def _per_job_bytes(cfg: BlendConfig, vgg: Any, shape: tuple, mask: Any = None) -> tuple[int, str]:
    """Bytes one job adds to a stack: compile each stage's iteration for a stack of one
    and read XLA's memory analysis (arguments + temporaries, minus the shared parameters);
    the larger stage counts. With the job's ``mask`` (canvas ``H x W``) each stage's
    program is the one the job runs, windowed where :func:`jaxblend.window.plan` finds a
    window (a large canvas with a small object costs far less than its canvas); without
    it, the full canvas's."""
    from jaxblend import window
    from jaxblend.blend import stage2_reference, vgg_spec
    from jaxblend.solve import programs
    from jaxblend.vgg import _needed_convs

    h, w = shape[:2]
    f32 = np.float32
    img = jax.ShapeDtypeStruct((1, h, w, 3), f32)
    msk = jax.ShapeDtypeStruct((1, h, w), f32)
    spec = vgg_spec(vgg, cfg.precision)
    tree = vgg.params.get("params", vgg.params)
    stages = [(cfg.stage1, True)]
    if cfg.stage2_enabled:
        stages.append((cfg.stage2, stage2_reference(cfg, None, None)[1]))
    until = jax.ShapeDtypeStruct((1,), np.int32)  # a budget per job of the stack
    best = 0
    try:
        for stage, masked in stages:
            geom = None if mask is None else window.plan(stage, spec.arch, np.asarray(mask))
            p = programs(stage, spec, masked, cfg.solver, cfg.history, True, geom)
            data = jax.eval_shape(p.prepare, vgg.params, img, msk, img, img)
            x0 = jax.eval_shape(p.variable, img, data)
            carry = jax.eval_shape(p.start, x0, data)
            # XLA drops the parameters the objective never reads (convolutions past the
            # deepest layer used); subtract only those it keeps, which a stack shares.
            layers = stage.layers()
            used = _needed_convs(layers, vgg.arch)[1] if layers else ()
            param_bytes = sum(
                x.size * x.dtype.itemsize for k in used for x in jax.tree_util.tree_leaves(tree[k])
            )
            m = p.advance.lower(carry, data, until).compile().memory_analysis()
            total = int(m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes)
            best = max(best, total - param_bytes)
        return max(1, best), "measured"
    except Exception:  # noqa: BLE001 - no memory analysis on this backend
        acts = sum(h * w * 64 * 4 * 2 for _ in range(4))  # rough: a few block-1 activations
        return acts * 4 + 2 * cfg.history * h * w * 3 * 4, "estimated"


def auto_batch_size(
    cfg: BlendConfig, vgg: Any, shape: tuple, devices: Sequence, mask: Any = None
) -> tuple[int, int, str]:
    """The largest stack that fits in half the free memory of a device (at most
    ``AUTO_CAP``), a multiple of the device count; also the per-job bytes and how they
    were found. On CPU the host devices share one RAM, and the stack is at most
    ``AUTO_CPU_STACK`` (or the device count): the cores, not memory, set the rate there."""
    per_job, how = _per_job_bytes(cfg, vgg, shape, mask)
    dev = devices[0]
    free = _available_bytes(dev) // 2
    if dev.platform == "cpu":  # memory is rarely the limit there: the cores are
        per_stack = min(free // per_job, max(len(devices), AUTO_CPU_STACK))
    else:
        per_stack = (free // per_job) * len(devices)
    n = int(max(1, min(AUTO_CAP, per_stack)))
    return max(len(devices), n - n % len(devices)), per_job, how


def init_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> tuple[int, int]:
    """Join a multi-process run (``jax.distributed.initialize``) before any computation.

    Each argument falls back to ``$JAXBLEND_COORDINATOR`` (``host:port`` of process 0),
    ``$JAXBLEND_NUM_PROCESSES`` and ``$JAXBLEND_PROCESS_ID``; what is still unset is left
    to JAX (``$JAX_COORDINATOR_ADDRESS``, or a cluster it detects: SLURM, Open MPI, Cloud
    TPU, ...). Returns ``(process index, process count)``.

    Example (two processes on one machine, each a shell of its own)::

      jaxblend batch jobs.jsonl --out-dir out --coordinator 127.0.0.1:4712 \\
          --num-processes 2 --process-id 0   # and --process-id 1 in the other
    """
    env = os.environ
    coordinator = coordinator or env.get("JAXBLEND_COORDINATOR") or None
    try:
        if num_processes is None and env.get("JAXBLEND_NUM_PROCESSES"):
            num_processes = int(env["JAXBLEND_NUM_PROCESSES"])
        if process_id is None and env.get("JAXBLEND_PROCESS_ID"):
            process_id = int(env["JAXBLEND_PROCESS_ID"])
    except ValueError as e:
        raise InputError(f"JAXBLEND_NUM_PROCESSES / JAXBLEND_PROCESS_ID: {e}") from None
    if num_processes is not None and not (
        num_processes >= 1 and (process_id is None or 0 <= process_id < num_processes)
    ):
        raise InputError(
            f"need 0 <= process id < number of processes, got {process_id} of {num_processes}"
        )
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
        )
    except (ValueError, TypeError) as e:  # nothing to connect to: one line, not a trace
        raise InputError(f"cannot start the distributed run ({e})") from None
    return jax.process_index(), jax.process_count()


def _write_failed(rec: dict, e: BaseException) -> None:
    """Turn the record of a job whose image could not be written into that job's failure."""
    rec.update(status="failed", output=None, error=f"cannot write its image ({_one_line(e)})")


def _commit(images: list[tuple[Future, dict]], log: Path, records: list[dict]) -> list[dict]:
    """Record a stack in the log once all its images are on disk (resume relies on it); a
    job whose image could not be written is recorded as failed, with the reason."""
    for f, rec in images:
        try:
            f.result()
        except Exception as e:  # noqa: BLE001 - a full disk, a folder in the way: the job's
            _write_failed(rec, e)
    _append(log, records)
    return records


LOCK = ".jaxblend-batch.lock"


class _OutDirLock:
    """An exclusive lock on an output folder (``fcntl.flock`` on ``LOCK``; ``O_EXCL``
    where there is no fcntl), so two runners cannot work on one folder at once; the
    processes of one distributed run each take their own (``LOCK`` + ``.p<index>``)."""

    def __init__(self, out: Path, process: int | None) -> None:
        name = LOCK if process is None else f"{LOCK}.p{process}"
        self.path = out / name
        self.fd: int | None = None
        self.exclusive = False
        try:
            import fcntl
        except ImportError:  # no flock: a file created with O_EXCL, removed on release
            fcntl = None  # type: ignore[assignment]
        try:
            if fcntl is not None:
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(self.fd)
                    self.fd = None
                    self._busy(out)
            else:
                try:
                    self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                    self.exclusive = True
                except FileExistsError:
                    self._busy(out)
            os.ftruncate(self.fd, 0)
            os.write(self.fd, f"{os.getpid()}\n".encode())
        except OSError as e:
            raise OutputError(f"cannot lock {out} ({e.strerror or e})") from None

    def _busy(self, out: Path) -> None:
        try:
            pid = self.path.read_text().strip() or "?"
        except OSError:
            pid = "?"
        raise InputError(
            f"another jaxblend batch (pid {pid}) is running on {out}; wait for it to finish "
            "(a rerun then skips its finished jobs) or give another --out-dir"
        )

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None
            if self.exclusive:
                self.path.unlink(missing_ok=True)


def run_manifest(
    manifest: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    batch_size: int | str | None = None,
    config_path: str | os.PathLike | None = None,
    quiet: bool = False,
    workers: int | None = None,
) -> int:
    """Blend every job of a manifest into ``out_dir``; resumable after a kill.

    Writes ``out_dir/<id>.png`` atomically (temporary file, then rename) and appends one
    line per finished job to ``out_dir/results.jsonl`` (``id``, ``status`` ok | failed |
    nonfinite, ``output``, ``losses`` per stage, ``evaluations``, ``seconds``, ``error``,
    ``process``), flushed and fsynced once the stack's images are written. On start it
    reads ``results.jsonl`` (a torn last line is dropped) and skips the jobs recorded
    ``ok`` whose image exists and decodes; everything else is redone. With several JAX
    processes (after :func:`init_distributed` or ``jax.distributed.initialize()``) process
    ``p`` of ``n`` takes the jobs ``i % n == p`` of the manifest, so each output is
    written by exactly one process.

    A pipeline keeps the devices busy: ``workers`` host threads decode and place the next
    stack's jobs while a stack computes, and encode and write the previous stack's images
    (PNG encoding, fsync) meanwhile; the device's only host work between stacks is
    stacking the next arrays and fetching the results.

    Args:
      manifest: ``.jsonl`` or ``.csv`` file (see :func:`read_manifest`).
      out_dir: output folder (created).
      batch_size: jobs per stack, ``None`` (each bucket whole, at most 8 per device) or
        ``"auto"`` (the largest stack that fits device memory, printed).
      config_path: JSON file of :class:`BlendConfig` settings (see :func:`load_config`).
      quiet: no progress or summary on stderr.
      workers: host threads for decoding, placing and writing (default
        :func:`default_workers`); 0 does everything in this thread, one step after the
        other.

    Every failure of one job is that job's: a bad value in its line, an image that cannot
    be read, a placement outside the canvas, a canvas too large for memory, a failed solve
    or write is recorded with its reason in ``results.jsonl`` (status ``failed``), and the
    other jobs go on; the values of every job are checked before any compute. A lock on
    ``out_dir`` (``.jaxblend-batch.lock``) refuses a second runner on the same folder.

    Returns:
      0 if every job succeeded, else 1.

    Raises:
      InputError: a bad manifest, config or batch size, or a folder another runner holds
        (before any work).
    """
    t_start = time.perf_counter()
    config = load_config(config_path)
    jobs = read_manifest(manifest, strict=False)
    auto = isinstance(batch_size, str) and batch_size.strip().lower() == "auto"
    size: int | None = None
    if not auto and batch_size is not None:
        size = validate.integer(batch_size, "batch size", 1, 4096, "give N or auto")
    workers = default_workers() if workers is None else int(workers)
    n_proc, me = jax.process_count(), jax.process_index()
    if n_proc > 1:
        jobs = [j for i, j in enumerate(jobs) if i % n_proc == me]
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out-dir {out} is a file, not a folder; give a folder name")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create --out-dir {out} ({e.strerror or e})") from None
    lock = _OutDirLock(out, me if n_proc > 1 else None)
    try:
        return _run(jobs, out, config, me, n_proc, auto, size, workers, quiet, t_start)
    except BaseException:
        if created and not any(f.name != lock.path.name for f in out.iterdir()):
            lock.release()  # nothing of this run is left behind: not even the folder
            lock.path.unlink(missing_ok=True)
            out.rmdir()
        raise
    finally:
        lock.release()


def _run(jobs, out, config, me, n_proc, auto, size, workers, quiet, t_start) -> int:
    """:func:`run_manifest` once the folder is locked."""
    mine = {j["id"] for j in jobs}
    for tmp in out.glob(".*.tmp"):  # leftovers of a write interrupted by a kill (ours only:
        if n_proc == 1 or tmp.name[1:].rsplit(".png.", 1)[0] in mine:  # others may be writing)
            tmp.unlink(missing_ok=True)
    log = out / RESULTS
    previous = _read_results(log)

    def finished(j: dict) -> bool:
        rec = previous.get(j["id"])
        img = out / f"{j['id']}.png"
        return rec is not None and rec.get("status") == "ok" and img.exists() and _decodes(img)

    if workers > 0 and previous:
        with ThreadPoolExecutor(workers) as check:
            done_before = list(check.map(finished, jobs))
    else:
        done_before = [finished(j) for j in jobs]
    todo = [j for j, d in zip(jobs, done_before) if not d]
    skipped = len(jobs) - len(todo)

    def say(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    if skipped:
        say(f"resume: {skipped} jobs already done, skipped; {len(todo)} to do")
    counts = {"ok": 0, "failed": 0, "nonfinite": 0}
    # Every job's values are checked before any compute; the bad ones are recorded now.
    bad = []
    for j in todo:
        reason = j.get("error")
        if reason is None:
            try:
                check_job(config, j)
            except Exception as e:  # noqa: BLE001 - the job's failure, whatever it is
                reason = _one_line(e)
        if reason is not None:
            rec = _record(j["id"], InputError(reason), True, None)
            rec["process"] = me
            bad.append(rec)
            if not quiet:
                print(f"job {j['id']}: failed: {reason}", file=sys.stderr, flush=True)
    _append(log, bad)
    counts["failed"] += len(bad)
    failed_ids = {r["id"] for r in bad}
    todo = [j for j in todo if j["id"] not in failed_ids]
    if todo:
        from jaxblend.vgg import load_vgg

        devices = tuple(jax.local_devices())
        vgg = load_vgg(config.network)
        if auto:
            cfg0 = job_config(config, todo[0])
            mask0 = None
            try:
                first = _layout(todo[0], cfg0)
                shape, mask0 = first.target.shape, first.mask
            except Exception:  # noqa: BLE001 - that job fails later, with its reason
                shape = (cfg0.canvas or 512, cfg0.canvas or 512, 3)
            size, per_job, how = auto_batch_size(cfg0, vgg, shape, devices, mask0)
            say(
                f"batch size auto: {size} jobs per stack ({how} {per_job / 2**20:.1f} MiB per "
                f"job at {shape[0]}x{shape[1]}, {len(devices)} {devices[0].platform} devices)"
            )
        bar = _Progress(len(todo), quiet)
        writer = ThreadPoolExecutor(workers, "jaxblend-write") if workers > 0 else None
        committer = ThreadPoolExecutor(1, "jaxblend-log") if workers > 0 else None
        commits: list[Future] = []
        stream = _iter_batch(
            todo, config, batch_size=size, vgg=vgg, devices=devices, workers=workers
        )

        def tally(records: list[dict]) -> None:
            for rec in records:
                counts[rec["status"]] += 1
                if rec["error"] and not quiet:
                    bar.line.note(f"job {rec['id']}: {rec['status']}: {rec['error']}")

        try:
            for chunk in stream:
                records, images = [], []
                for i, r, finite in chunk:
                    jid = todo[i]["id"]
                    path = None
                    if not isinstance(r, Exception):
                        path = out / f"{jid}.png"
                    rec = _record(jid, r, finite, path)
                    rec["process"] = me
                    if path is not None:
                        images.append((r.image, path, rec))
                    records.append(rec)
                if writer is None or committer is None:
                    for img, path, rec in images:
                        try:
                            save_image(img, path)
                        except Exception as e:  # noqa: BLE001 - this job's failure
                            _write_failed(rec, e)
                    _append(log, records)
                    tally(records)
                else:  # written while the next stack computes
                    futs = [
                        (writer.submit(save_image, img, path), rec) for img, path, rec in images
                    ]
                    commits.append(committer.submit(_commit, futs, log, records))
                    while commits and commits[0].done():
                        tally(commits.pop(0).result())  # a failed log append stops the run
                bar(len(chunk))
            for c in commits:
                tally(c.result())
        finally:
            stream.close()  # stops the layout threads (pending layouts are cancelled)
            for pool in (writer, committer):  # the writes already handed over finish
                if pool is not None:
                    pool.shutdown(wait=True)
            bar.line.end()  # Ctrl-C: the message after it starts a fresh line
    dt = time.perf_counter() - t_start
    rate = (counts["ok"] + counts["nonfinite"]) / dt * 60 if dt > 0 else 0.0
    extra = f", {counts['nonfinite']} nonfinite" if counts["nonfinite"] else ""
    where = f"; reasons in {log}" if counts["failed"] or counts["nonfinite"] else ""
    say(f"{counts['ok']} ok, {counts['failed']} failed{extra}, {skipped} skipped in {dt:.1f} s, "
        f"{rate:.1f} jobs/min{where}")  # fmt: skip
    return 0 if counts["failed"] == 0 and counts["nonfinite"] == 0 else 1
