"""Public deep-blending API: :func:`blend` and the stage driver shared with batches.

``blend`` lays a job out on the canvas (:func:`jaxblend.io.place`), runs stage 1 and
stage 2 (:mod:`jaxblend.solve`) and returns a :class:`BlendResult`. The driver
:func:`run_stages` works on one job or on a stack of jobs of one canvas shape (leading
axis), which is how :mod:`jaxblend.batch` uses it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxblend.config import BlendConfig, StageConfig
from jaxblend.errors import InputError
from jaxblend.io import ImageLike, Job, Placement, place, to_uint8
from jaxblend.solve import (
    TERMS,
    Programs,
    VGGSpec,
    composite,
    evaluations,
    programs,
    stopped,
)

Progress = Callable[[dict], None]


class NonFiniteWarning(RuntimeWarning):
    """The objective became NaN/inf; the best finite iterate was kept."""


@dataclass
class BlendResult:
    """What a deep blend returns.

    Attributes:
      image: final blend, ``H x W x 3`` uint8 on the canvas.
      stage1: stage-1 blend, uint8 (equal to ``image`` when stage 2 is off).
      losses: ``{"stage1": {term: (start, end)}, "stage2": {...}}`` — weighted terms.
      evaluations: objective evaluations per stage, ``{"stage1": n, "stage2": n}``.
      seconds: wall time per stage (compilation included).
      placement: where the source lies on the canvas.
      frames: optimisation frames (uint8) when requested.
      image_float: final blend as float32 (not rounded).
    """

    image: np.ndarray
    stage1: np.ndarray
    losses: dict
    evaluations: dict
    seconds: dict
    placement: Placement | None = None
    frames: list = field(default_factory=list)
    image_float: np.ndarray | None = None


#: What ``precision="auto"`` runs on each platform (JAX's platform name). GPUs: TensorFloat-32
#: convolutions with float32 storage, as fast as bfloat16 on the H200 at 512² and 1024²
#: (``bench/results/gpu-NVIDIA_H200-2026-11-26.md``) while activations, Gram matrices and
#: gradients keep float32's 24 significant bits (bfloat16: 8). TPUs: bfloat16, their native
#: matmul type. CPUs and anything else: true float32 (``"tf32"`` is the same there).
AUTO_PRECISION = {
    "cpu": "float32",
    "gpu": "tf32",
    "cuda": "tf32",
    "rocm": "tf32",
    "tpu": "bfloat16",
}


#: Above this many pixels a single job's Poisson start is solved on the mask's box only.
LARGE_CANVAS = 2048 * 2048


def resolve_precision(precision: str, platform: str | None = None) -> str:
    """The precision a run uses: ``precision`` itself, or for ``"auto"`` the
    :data:`AUTO_PRECISION` of ``platform`` (default: JAX's default backend, at call time).

    Example:
      >>> resolve_precision("auto", "cpu"), resolve_precision("auto", "gpu")
      ('float32', 'tf32')
    """
    if precision != "auto":
        return precision
    if platform is None:
        platform = jax.default_backend()
    return AUTO_PRECISION.get(platform, "float32")


def vgg_spec(vgg: Any, precision: str, platform: str | None = None) -> VGGSpec:
    """The static VGG description of a run; ``"auto"`` resolved for ``platform``."""
    return VGGSpec(vgg.arch, vgg.preprocessing, resolve_precision(precision, platform))


def _platform(x: Any) -> str:
    """The platform an array lives on (JAX's default backend for host arrays)."""
    devices = getattr(x, "devices", None)
    if callable(devices):
        return next(iter(devices())).platform
    return jax.default_backend()


def initial_image(
    init: str,
    target: jax.Array,
    source: jax.Array,
    mask: jax.Array,
    seed: int | jax.Array,
    screen: float = 0.0,
) -> jax.Array:
    """Stage-1 start: ``noise`` (the paper), ``randn`` (the authors' code: standard
    normal values, nearly black), ``paste`` (the source) or ``poisson``.

    ``screen`` (``init="poisson"``): :func:`screen_weight` of each job's mask, so the
    Poisson correction fades from the mask's edge over ``√area / screen`` px (``0``: the
    classical blend). Works on one job (``H x W x 3``) or a stack (``N x H x W x 3``,
    seeds ``N``).
    """
    if init == "paste":
        return source
    if init == "poisson":
        from jaxblend.poisson import poisson_solve

        lam = screen_weight(mask, screen)
        if target.ndim == 3 and target.shape[0] * target.shape[1] > LARGE_CANVAS:
            # One large canvas: solve on the mask's box plus its 1-px Dirichlet ring only
            # (the same system; jaxblend.poisson.blend_job), pasted into the target.
            from jaxblend import poisson
            from jaxblend.io import Job

            job = Job(*(np.asarray(a, np.float32) for a in (target, source, mask)), None)
            return jnp.asarray(poisson.blend_job(job, mode="normal", screen=float(lam)))
        return poisson_solve(target, source, mask, mode="normal", screen=lam)  # one loop
    if init in ("noise", "randn"):
        seeds = jnp.atleast_1d(jnp.asarray(seed, jnp.uint32))
        shape = target.shape[-3:]
        # "noise": grey noise spanning the range; "randn": standard normal values on the
        # 0-255 scale, a nearly black start, as the authors' torch.randn.
        mean, std = (128.0, 64.0) if init == "noise" else (0.0, 1.0)

        def one(s):
            x = mean + std * jax.random.normal(jax.random.PRNGKey(s), shape)
            return jnp.clip(x, 0, 255) if init == "noise" else x

        x = jax.vmap(one)(seeds)
        return x if target.ndim == 4 else x[0]
    raise ValueError(f"unknown init {init!r}")


def screen_weight(mask: Any, screen: float) -> Any:
    """The screened-Poisson weight ``λ = screen² / area`` (1/px²) of each job's mask
    (``area`` = the mask's sum; one number, or one per job of a stack), so the correction's
    decay length ``1/√λ = √area / screen`` scales with the object: the same start at any
    canvas size. ``screen = 0``: ``λ = 0``, the classical Poisson blend."""
    if not screen:
        return 0.0
    m = jnp.asarray(mask, jnp.float32)
    area = jnp.maximum(jnp.sum(m, axis=(-2, -1)), 1.0)
    return (jnp.float32(screen) ** 2 / area).astype(jnp.float32)


def stage_programs(
    cfg: StageConfig,
    config: BlendConfig,
    spec: VGGSpec,
    mask: Any,
    *,
    masked: bool,
    batched: bool,
) -> Programs:
    """The compiled programs a stage runs with on ``mask`` (one job, or a stack): the
    exact windowed objective when :func:`jaxblend.window.plan` finds a window well below
    the canvas (``region="mask"`` stages, ``cfg.window`` on), else the full canvas."""
    from jaxblend import window

    geom = window.plan(cfg, spec.arch, np.asarray(mask))
    return programs(cfg, spec, masked, config.solver, config.history, batched, geom)


@functools.lru_cache(maxsize=64)
def _prepare_and_start(p: Programs) -> Callable:
    """One compiled program for a stage's constants, the solver's first evaluation and the
    loss terms at the start (``p.prepare``, ``p.start``, ``p.terms``): one compilation
    instead of three, and XLA computes the start's VGG forward pass once for both."""

    def prepare_and_start(params, x0, target, mask, source, content_ref):
        data = p.prepare(params, target, mask, source, content_ref)
        x = p.variable(x0, data)  # a windowed stage optimises its window only
        return data, p.start(x, data), p.terms(x, data)

    return jax.jit(prepare_and_start)


def _run_stage(
    name: str,
    cfg: StageConfig,
    config: BlendConfig,
    spec: VGGSpec,
    params: Any,
    x0: jax.Array,
    target: jax.Array,
    mask: jax.Array,
    source: jax.Array,
    content_ref: jax.Array,
    *,
    masked: bool,
    batched: bool,
    progress: Progress | None,
    frames: list | None,
    scale: float = 1.0,
    limit: int | None = None,
):
    p = stage_programs(cfg, config, spec, mask, masked=masked, batched=batched)
    data, carry, t0 = _prepare_and_start(p)(params, x0, target, mask, source, content_ref)
    t0 = {k: np.asarray(v) for k, v in t0.items()}
    budget = int(cfg.steps) if limit is None else min(int(cfg.steps), int(limit))
    done = np.atleast_1d(np.asarray(evaluations(config.solver, carry)))
    active = np.ones_like(done, bool)
    while True:
        # Each job runs `chunk` more evaluations of its own (so where it stops does not
        # depend on its stack mates); finished jobs of a stack stay frozen inside the
        # compiled loop.
        until = np.where(active, np.minimum(done + config.chunk, budget), done).astype(np.int32)
        carry = p.advance(carry, data, jnp.asarray(until if batched else until[0]))
        now = np.atleast_1d(np.asarray(evaluations(config.solver, carry)))
        finite = np.atleast_1d(np.isfinite(np.asarray(carry.best_value)))
        halted = np.atleast_1d(np.asarray(stopped(config.solver, carry)))
        if progress is not None:
            progress(
                {
                    "stage": name,
                    "scale": scale,
                    "evaluations": int(now.max()),
                    "budget": budget,
                    "loss": float(np.asarray(carry.best_value).mean()),
                }
            )
        if frames is not None:
            frames.append(to_uint8(p.image(carry.best_x, data)))
        active = (now < budget) & finite & ~halted & (now > done)
        if cfg.style_stop and active.any():  # one VGG forward pass per chunk
            styled = np.atleast_1d(np.asarray(p.terms(carry.best_x, data)["style"]))
            active &= styled > cfg.style_stop * cfg.style
        done = now
        if not active.any():
            break
    x = carry.best_x
    t1 = {k: np.asarray(v) for k, v in p.terms(x, data).items()}
    ok = np.isfinite(np.asarray(carry.state.value)) & finite
    if not np.all(ok):
        warnings.warn(
            f"{name}: the objective became non-finite; returning the best finite iterate "
            "(lower the loss weights or use init='poisson')",
            NonFiniteWarning,
            stacklevel=3,
        )
    if not batched:
        done, ok = done[0], ok[0]
    return p.image(x, data), done, t0, t1, ok


def stage2_reference(config: BlendConfig, naive: Any, stage1: Any) -> tuple[Any, bool]:
    """Stage 2's content reference and whether its content term is masked, by
    ``config.stage2_content``: the naive paste in the mask (``"source"``), the stage-1
    blend in the mask (``"object"``) or on the whole canvas (``"stage1"``)."""
    ref = naive if config.stage2_content == "source" else stage1
    return ref, config.stage2_content != "stage1"


def run_stages(
    config: BlendConfig,
    vgg: Any,
    target: Any,
    source: Any,
    mask: Any,
    *,
    seed: Any = None,
    batched: bool = False,
    progress: Progress | None = None,
    frames: list | None = None,
    limit: int | None = None,
) -> dict:
    """Run stage 1 (and stage 2) on canvas arrays; one job or a stack of jobs.

    Returns a dict with ``image``, ``stage1`` (float arrays), ``losses``, ``evaluations``,
    ``seconds`` and ``finite`` (False where a job's objective became non-finite and the
    best finite iterate was kept); per job along the leading axis when ``batched``.
    ``limit`` caps every solve (each stage, each coarse scale) at that many evaluations
    without changing the configuration, so the compiled programs are the ones the full
    budget runs (:mod:`jaxblend.warmup`).
    """
    if config.style_strength != 1.0:
        k = float(config.style_strength)
        config = config.replace(
            stage1=dataclasses.replace(config.stage1, style=config.stage1.style * k),
            stage2=dataclasses.replace(config.stage2, style=config.stage2.style * k),
            style_strength=1.0,
        )
    target = jnp.asarray(target, jnp.float32)
    source = jnp.asarray(source, jnp.float32)
    mask = jnp.asarray(mask, jnp.float32)
    spec = vgg_spec(vgg, config.precision, _platform(target))  # "auto": where the job runs
    seed = config.seed if seed is None else seed
    out: dict[str, Any] = {"losses": {}, "evaluations": {}, "seconds": {}}
    t = time.perf_counter()
    x0 = initial_image(config.init, target, source, mask, seed, config.screen)
    # Stage 1's content reference: the naive paste (the object as it is, in the scene)
    # or, with stage1_content="start", the start itself (the Poisson blend).
    naive = composite(source, target, mask)
    ref1 = x0 if config.stage1_content == "start" else naive
    n_coarse = 0
    cfg1 = config.stage1
    if len(config.scales) > 1:
        # Coarse to fine: solve on smaller canvases first, each result (upsampled) the
        # next scale's start. The stage's budget is shared equally between the scales.
        share = max(1, cfg1.steps // len(config.scales))
        cfg_c = dataclasses.replace(cfg1, steps=share)
        rest = cfg1.steps - share * (len(config.scales) - 1)
        cfg1 = dataclasses.replace(cfg1, steps=max(1, rest))
        hw = target.shape[-3:-1]
        for s in config.scales[:-1]:
            small = (max(8, round(hw[0] * s)), max(8, round(hw[1] * s)))
            t_s, s_s, n_s, x_s = (_resize(a, small) for a in (target, source, ref1, x0))
            m_s = (_resize(mask[..., None], small)[..., 0] > 0.5).astype(jnp.float32)
            x_s, n, _, _, _ = _run_stage(
                "stage1", cfg_c, config, spec, vgg.params, x_s, t_s, m_s, s_s, n_s,
                masked=True, batched=batched, progress=progress, frames=None, scale=s,
                limit=limit,
            )  # fmt: skip
            n_coarse = n_coarse + n
            x0 = _resize(x_s, hw)
    img, n, l0, l1, ok = _run_stage(
        "stage1", cfg1, config, spec, vgg.params, x0, target, mask, source, ref1,
        masked=True, batched=batched, progress=progress, frames=frames, limit=limit,
    )  # fmt: skip
    img.block_until_ready()
    out["seconds"]["stage1"] = time.perf_counter() - t
    out["stage1"] = img
    out["finite"] = ok
    out["evaluations"]["stage1"] = n + n_coarse
    out["losses"]["stage1"] = {k: (l0[k], l1[k]) for k in TERMS}
    if config.stage2_enabled:
        t = time.perf_counter()
        ref2, masked2 = stage2_reference(config, naive, img)
        img2, n, l0, l1, ok2 = _run_stage(
            "stage2", config.stage2, config, spec, vgg.params, img, target, mask, source, ref2,
            masked=masked2, batched=batched, progress=progress, frames=frames, limit=limit,
        )  # fmt: skip
        img2.block_until_ready()
        out["seconds"]["stage2"] = time.perf_counter() - t
        out["evaluations"]["stage2"] = n
        out["losses"]["stage2"] = {k: (l0[k], l1[k]) for k in TERMS}
        img = img2
        out["finite"] = ok & ok2
    out["image"] = img
    return out


def _resize(image: jax.Array, hw: tuple[int, int]) -> jax.Array:
    """Bicubic resize of ``... x H x W x C`` to ``hw``."""
    shape = (*image.shape[:-3], *hw, image.shape[-1])
    return jax.image.resize(image, shape, "cubic")


def _scalar_losses(losses: dict, i: int | None = None) -> dict:
    def pick(v):
        a = np.asarray(v)
        return float(a if i is None else a[i])

    return {s: {k: (pick(a), pick(b)) for k, (a, b) in t.items()} for s, t in losses.items()}


def blend(
    source: ImageLike,
    target: ImageLike,
    mask: ImageLike | None = None,
    *,
    center: tuple[int, int] | None = None,
    config: BlendConfig | None = None,
    vgg: Any = None,
    progress: Progress | None = None,
    frames: bool = False,
    value_range: tuple[float, float] | None = None,
) -> BlendResult:
    """Blend ``source`` into ``target`` where ``mask`` is nonzero (Deep Image Blending).

    Args:
      source, target, mask: paths, PIL images or arrays (RGB ``H x W x 3`` 0–255 and a
        mask of the source's size whose nonzero pixels mark the object; ``None``: the
        source's alpha channel, for an RGBA cutout).
      center: ``(row, col)`` on the canvas where the source's centre goes (default: the
        canvas centre).
      config: a :class:`BlendConfig` (canvas size, source size, per-stage weights and
        budgets, init, solver, seed); default ``BlendConfig()``.
      vgg: a loaded VGG (:func:`jaxblend.load_vgg`), or a name or weight file for it;
        default ``config.network`` (the shipped VGG16).
      progress: called with a dict after each chunk of iterations.
      frames: keep a frame of the blend after each chunk (for a video).
      value_range: the scale of image arrays, e.g. ``(0, 1)`` (see
        :func:`jaxblend.io.place`); default: uint8 and float arrays are 0–255.

    Returns:
      a :class:`BlendResult`; ``result.image`` is the final ``H x W x 3`` uint8 canvas.

    Raises:
      InputError: bad inputs, placement or settings, or a canvas whose estimated memory
        exceeds the device's (checked once the images are laid out, with the mask: a
        stage that runs on a window needs the window's share).

    Example:
      >>> import jaxblend
      >>> r = jaxblend.blend("obj.png", "scene.png", "mask.png", center=(200, 235))
      >>> r.image.shape
      (512, 512, 3)
    """
    from jaxblend import validate
    from jaxblend.io import canvas_shape

    config = _config(config)
    vgg = resolve_vgg(vgg, config)
    # Before the layout allocates the canvas: its arrays alone; blend_job checks the job
    # with its mask.
    validate.blend_memory(config, canvas_shape(target, config.canvas), vgg, at_least=True)
    job = place(
        source, target, mask, center=center, canvas=config.canvas,
        source_size=config.source_size, value_range=value_range,
    )  # fmt: skip
    return blend_job(job, config=config, vgg=vgg, progress=progress, frames=frames)


def _config(config: Any) -> BlendConfig:
    if config is None:
        return BlendConfig()
    if not isinstance(config, BlendConfig):
        raise InputError(f"config must be a BlendConfig, got {type(config).__name__}")
    return config


def resolve_vgg(vgg: Any, config: BlendConfig) -> Any:
    """The network to use: ``vgg`` if loaded, else :func:`jaxblend.load_vgg` of ``vgg`` (a
    name or weight file) or of ``config.network``."""
    from jaxblend.vgg import load_vgg

    if vgg is None:
        return load_vgg(config.network)
    if isinstance(vgg, (str, os.PathLike)):
        return load_vgg(vgg)
    if not (hasattr(vgg, "params") and hasattr(vgg, "arch")):
        raise InputError(
            "vgg must be a network from jaxblend.load_vgg(...), a name such as 'vgg16' or a "
            f".safetensors file, got {type(vgg).__name__}"
        )
    return vgg


def blend_job(
    job: Job,
    *,
    config: BlendConfig | None = None,
    vgg: Any = None,
    progress: Progress | None = None,
    frames: bool = False,
) -> BlendResult:
    """:func:`blend` for a job already laid out on the canvas (:func:`jaxblend.io.place`)."""
    from jaxblend import validate

    if not isinstance(job, Job):
        raise InputError(f"blend_job takes a Job from jaxblend.place(), got {type(job).__name__}")
    config = _config(config)
    vgg = resolve_vgg(vgg, config)
    validate.blend_memory(config, job.target.shape[:2], vgg, mask=job.mask)
    fr: list | None = [] if frames else None
    out = run_stages(config, vgg, job.target, job.source, job.mask, progress=progress, frames=fr)
    img = np.asarray(out["image"])
    return BlendResult(
        image=to_uint8(img),
        stage1=to_uint8(np.asarray(out["stage1"])),
        losses=_scalar_losses(out["losses"]),
        evaluations={k: int(v) for k, v in out["evaluations"].items()},
        seconds=out["seconds"],
        placement=job.placement,
        frames=fr or [],
        image_float=img,
    )
