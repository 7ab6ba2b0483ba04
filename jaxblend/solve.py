"""The two stages of Deep Image Blending on L-BFGS, as pure array functions.

Stage 1 (seamless blending) minimises, over the image ``I_Z`` inside the mask,
``w_grad·L_grad + w_content·L_cont + w_style·L_style + w_hist·L_hist + w_tv·L_tv`` of the
blend ``I_B = I_Z ⊙ M + I_T ⊙ (1 − M)`` (Zhang, Wen, Shi, WACV 2020, Eq. 6–12). Stage 2
(style refinement) starts from the stage-1 blend and minimises the unmasked content loss
against it (Eq. 9, which the authors' code leaves at zero by a bug) plus style, histogram
and TV. Each stage changes the pixels inside the mask only (outside them the result is the
target's exactly) or, with ``region="image"`` (the default stage 2, as the authors' code),
every pixel. With ``normalize=True`` each term is divided by the job's own scale (computed
once in :func:`prepare`), and ``band`` restricts the gradient term to the mask edge.

Everything constant per job — the guidance Laplacian, the source's content features, the
target's Gram matrices and sorted features — is computed once by :func:`prepare`, outside
the iteration. One objective evaluation is then one VGG forward and backward pass of the
blend, the only image that changes; in a ``region="mask"`` stage that pass runs on a window
around the mask's box only, exactly (:mod:`jaxblend.window`, ``StageConfig.window``). The
L-BFGS iterations run inside one compiled ``lax.while_loop`` (:func:`advance`); the budget
is counted in objective evaluations and passed as an argument, so progress reports in
chunks reuse the same compiled program.

All functions take one job; ``jax.vmap`` batches jobs of one canvas shape
(see :mod:`jaxblend.batch`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxblend import losses
from jaxblend import window as window_mod
from jaxblend.config import SMOOTH_AUTO, StageConfig
from jaxblend.optim import gaussian_blur, make_solver
from jaxblend.spectrum import fine_scale_sigma
from jaxblend.vgg import features as vgg_features

TERMS = ("grad", "content", "style", "hist", "tv", "range", "tone")


class VGGSpec(NamedTuple):
    """Static description of the feature extractor (hashable).

    ``dtype`` is a :data:`jaxblend.config.PRECISIONS` name: ``"float32"`` (true float32),
    ``"bfloat16"`` or ``"tf32"`` (float32 with the backend's default convolution precision).
    """

    arch: str = "vgg16"
    preprocessing: str = "caffe"
    dtype: str = "float32"


class StageData(NamedTuple):
    """Per-job arrays one stage needs; all are arguments of the compiled program."""

    params: Any
    target: jax.Array  # H x W x 3
    mask: jax.Array  # H x W
    guide: jax.Array  # guidance field for the gradient loss
    content_ref: dict  # layer -> features of the content reference ({} with a window)
    grams: dict  # layer -> target Gram matrix
    sorted: dict  # layer -> target's sorted features
    scale: dict  # per-job term scales ({} unless cfg.normalize): see StageConfig.normalize
    band: jax.Array  # H x W weights of the gradient term (ones unless cfg.band)
    object_grams: dict  # layer -> Gram of the matched target features ({} unless style_object)
    content_box: jax.Array = 1.0  # canvas / source box area (content_image="masked"), else 1
    window: Any = None  # window_mod.WindowData: the exact windowed objective (None: full)
    sigma: jax.Array = 0.0  # the search smoothing's width (px) when cfg.smooth == "auto"
    tone_ref: jax.Array = 0.0  # H x W x 3: the tone term's reference image (cfg.tone)


class Carry(NamedTuple):
    """Loop state of one stage: iterate, solver state and the best finite iterate."""

    x: jax.Array
    state: Any
    best_x: jax.Array
    best_value: jax.Array


def _features(spec: VGGSpec, params, image, layers):
    if not layers:
        return {}
    dtype = jnp.bfloat16 if spec.dtype == "bfloat16" else jnp.float32
    feats = vgg_features(
        params,
        image,
        layers,
        arch=spec.arch,
        preprocessing=spec.preprocessing,
        dtype=dtype,
        precision="default" if spec.dtype == "tf32" else None,
    )
    return {k: v.astype(jnp.float32) for k, v in feats.items()}


def composite(x: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
    """``I_B = I_Z ⊙ M + I_T ⊙ (1 − M)``."""
    m = mask[..., None]
    return x * m + target * (1 - m)


def stage_image(cfg: StageConfig, x: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
    """The image a stage's full-canvas iterate stands for: ``W ⊙ x + (1 − W) ⊙ I_T`` with
    ``W`` the mask (``region="mask"``: the composite) or, for a bounded ``region="image"``
    stage (``reach > 0``), the rectangle's weight :func:`jaxblend.window.region_weight`
    (1 on the object's box, 0 far from it); the iterate itself for ``region="image"`` with
    ``reach=0`` (every pixel is optimised, as the authors' stage 2)."""
    if cfg.region == "image" and not cfg.reach:
        return x
    return composite(x, target, window_mod.region_weight(cfg, mask))


def prepare(
    cfg: StageConfig,
    spec: VGGSpec,
    params,
    target: jax.Array,
    mask: jax.Array,
    source: jax.Array,
    content_ref: jax.Array,
    *,
    masked: bool = True,
    window: window_mod.Geometry | None = None,
) -> StageData:
    """Compute a stage's constants once per job.

    Args:
      cfg: the stage's configuration (static).
      spec: the feature extractor (static).
      params: VGG parameters.
      target, mask, source: the canvas arrays of the job (source pasted on the target).
      content_ref: the image whose features the content term keeps (the source for
        stage 1, the stage-1 blend for stage 2).
      masked: whether the content term is masked (Eq. 7) or not (Eq. 9).
      window: the window of :mod:`jaxblend.window` (static, from
        :func:`jaxblend.window.plan`): the VGG terms are then evaluated on it, exactly;
        ``None``: on the whole canvas.
    """
    if window is not None:
        return _prepare_windowed(cfg, spec, params, target, mask, source, content_ref,
                                 masked=masked, window=window)  # fmt: skip
    guide = losses.guidance(source, target, mask, operator=cfg.operator, mixed=cfg.mixed)
    c_layers = tuple(n for n, _ in cfg.content_layers) if cfg.content else ()
    s_layers = tuple(n for n, _ in cfg.style_layers) if cfg.style else ()
    h_layers = tuple(n for n, _ in cfg.hist_layers) if cfg.hist else ()
    m3 = mask[..., None]
    as_masked = cfg.content_image == "masked"
    ref = _features(spec, params, content_ref * m3 if as_masked else content_ref, c_layers)
    t_layers = set(s_layers) | set(h_layers)
    if cfg.normalize or window is not None:
        t_layers |= set(c_layers)
    tf = _features(spec, params, target, tuple(sorted(t_layers)))
    grams = {n: losses.gram(tf[n]) for n in s_layers}
    srt = {n: losses.sorted_channels(tf[n]) for n in h_layers}
    o_grams: dict = {}
    if s_layers and cfg.style_object:
        # The object's own style target (Luan et al. 2018): match the reference's object
        # positions to the target's at the deepest style layer, once per job.
        deepest = min(s_layers, key=lambda n: tf[n].shape[0])
        rf = ref if deepest in ref else _features(spec, params, content_ref, (deepest,))
        o_grams = _object_grams(s_layers, tf, rf, mask)
    if cfg.band:
        band = losses.boundary_band(mask, cfg.band)
    else:
        band = jnp.ones(mask.shape, jnp.float32)
    scale: dict = {}
    if cfg.normalize:
        # The job's own yardsticks, once per job (prepare-time VGG passes only): the naive
        # paste's gradient, TV and per-layer style terms, and per layer the content
        # distance of the scene itself from the reference.
        naive = composite(source, target, mask)
        tiny = jnp.float32(1e-12)
        scale.update(_pixel_scales(cfg, naive, guide, band, tiny))
        nf = _features(spec, params, naive, s_layers)
        scale["style"] = {
            n: jnp.maximum(jnp.mean((losses.gram(nf[n]) - grams[n]) ** 2), tiny) for n in s_layers
        }
        if o_grams:
            scale["style_object"] = {
                n: jnp.maximum(losses.style_loss(nf, o_grams, mask, weights={n: 1.0}), tiny)
                for n in s_layers
            }
        m = mask if masked else None
        if as_masked:
            # The scene itself through the same mask, against the reference.
            tmf, m = _features(spec, params, target * m3, c_layers), None
        else:
            tmf = tf
        scale["content"] = {
            n: jnp.maximum(losses.content_loss(tmf, ref, m, weights={n: 1.0}), tiny)
            for n in c_layers
        }
        if cfg.tone:  # the scene's own tones against the reference's, inside the mask
            scale["tone"] = jnp.maximum(_tone_loss(cfg, target, content_ref, mask), tiny)
    box = source_box_fraction(source, target) if as_masked else jnp.float32(1.0)
    return StageData(
        params, target, mask, guide, ref, grams, srt, scale, band, o_grams, 1.0 / box, None,
        _sigma(cfg, target), content_ref if cfg.tone else jnp.float32(0),
    )  # fmt: skip


def _prepare_windowed(
    cfg: StageConfig,
    spec: VGGSpec,
    params,
    target: jax.Array,
    mask: jax.Array,
    source: jax.Array,
    content_ref: jax.Array,
    *,
    masked: bool,
    window: window_mod.Geometry,
) -> StageData:
    """:func:`prepare` for the windowed objective, without full-canvas feature maps.

    The target's Grams come tile by tile (:func:`jaxblend.window.canvas_grams`; one pass
    when the canvas fits a tile). The normalising scales are the full canvas's, from the
    window: the naive paste ``N`` equals the target outside the mask, so ``G_l[N] − G_l[I_T]
    = (Σ_{R_l} n_p n_pᵀ − Σ_{R_l} t_p t_pᵀ)/n_l``; the masked content scale is ``Σ_{R_l}
    ‖(t_p − r_p) M_l‖² / n_l`` (``M_l = 0`` outside ``R_l``). Full-canvas features are
    computed only for what reads them everywhere: the unmasked content term (Eq. 9) and
    the ``style_object`` match.
    """
    guide = losses.guidance(source, target, mask, operator=cfg.operator, mixed=cfg.mixed)
    c_layers = tuple(n for n, _ in cfg.content_layers) if cfg.content else ()
    s_layers = tuple(n for n, _ in cfg.style_layers) if cfg.style else ()
    hw = target.shape[:2]
    full: dict = {}
    if c_layers and not masked:
        full["target"] = _features(spec, params, target, c_layers)
        full["ref"] = _features(spec, params, content_ref, c_layers)
    if s_layers and cfg.style_object:
        full.setdefault("target", {}).update(_features(spec, params, target, s_layers))
        full.setdefault("ref", {}).update(_features(spec, params, content_ref, s_layers))
    if not s_layers:
        grams = {}
    elif hw[0] <= window_mod.TILE and hw[1] <= window_mod.TILE:
        tf = _features(spec, params, target, s_layers)
        grams = {n: losses.gram(tf[n]) for n in s_layers}
    else:
        grams = window_mod.canvas_grams(spec, params, target, s_layers)
    band = losses.boundary_band(mask, cfg.band) if cfg.band else jnp.ones(hw, jnp.float32)
    wd, wf = window_mod.prepare(
        cfg, spec, window, params, target, mask, guide, band if cfg.band else None,
        content_ref, full, masked=masked,
    )  # fmt: skip
    o_grams: dict = {}
    if s_layers and cfg.style_object:
        o_grams = _object_grams(s_layers, full["target"], full["ref"], mask)
    scale: dict = {}
    if cfg.normalize:
        tiny = jnp.float32(1e-12)
        naive_w = window_mod.blend_window(source, wd._replace(mask=window_mod.crop(
            mask, window, wd.origin, mode="edge")), hw)  # fmt: skip
        # The naive paste is the target outside the window, so its whole-canvas gradient
        # and TV terms (_pixel_scales) come from its window too: no full-canvas temporaries.
        px = window_mod.pixel_terms(
            dataclasses.replace(cfg, grad=1.0, tv=1.0, range=0.0), naive_w, wd, hw
        )
        scale.update({k: jnp.maximum(px[k], tiny) for k in ("grad", "tv")})
        nf = window_mod.window_features(spec, params, naive_w, s_layers, wd.origin, hw)
        scale["style"] = {}
        for n in s_layers:
            h, w = window_mod.level_shape(hw, spec.arch, n)
            d = window_mod._sum_outer(nf[n], wd.region[n]) - wd.gram_in[n]
            scale["style"][n] = jnp.maximum(jnp.mean((d / (h * w * nf[n].shape[-1])) ** 2), tiny)
        if o_grams:
            scale["style_object"] = {
                n: jnp.maximum(
                    window_mod.object_style_loss(nf, wd, o_grams, weights={n: 1.0}), tiny
                )  # fmt: skip
                for n in s_layers
            }
        tw = wf["target"]
        scale["content"] = {
            n: jnp.maximum(window_mod.content_loss(tw, wd, hw, spec.arch, weights={n: 1.0}), tiny)
            for n in c_layers
        }
    return StageData(
        params, target, mask, guide, {}, grams, {}, scale, band, o_grams, jnp.float32(1.0), wd,
        _sigma(cfg, target),
    )  # fmt: skip


def _tone_loss(cfg: StageConfig, image: jax.Array, ref: jax.Array, mask: jax.Array) -> jax.Array:
    """:func:`jaxblend.losses.tone_loss` with the stage's tone settings (width, channels,
    high-pass), for the prepare-time scale and the objective alike."""
    return losses.tone_loss(
        image, ref, mask, cfg.tone_sigma,
        luma=cfg.tone_channels == "luma", highpass=float(cfg.tone_highpass),
    )  # fmt: skip


def _sigma(cfg: StageConfig, target: jax.Array) -> jax.Array:
    """The job's search-smoothing width: the scene's (``smooth="auto"``), else unused."""
    if cfg.smooth == SMOOTH_AUTO:
        return fine_scale_sigma(target)
    return jnp.float32(0.0)


def _object_grams(s_layers: tuple, tf: dict, rf: dict, mask: jax.Array) -> dict:
    """The object's own style targets (Luan et al. 2018): the reference's object positions
    matched to the target's at the deepest style layer, the matched target features'
    masked Gram per layer (``tf``/``rf``: target and reference features)."""
    deepest = min(s_layers, key=lambda n: tf[n].shape[0])
    match = losses.match_positions(rf[deepest], tf[deepest])
    coarse = tf[deepest].shape[:2]
    out = {}
    for n in s_layers:
        picked = losses.matched_features(tf[n], match, coarse)
        out[n] = losses.masked_gram(picked, losses.resize_mask(mask, picked.shape[:2]))
    return out


def _pixel_scales(cfg: StageConfig, naive, guide, band, tiny) -> dict:
    """The naive paste's gradient and TV terms: the pixel terms' per-job yardsticks."""
    return {
        "grad": jnp.maximum(
            losses.gradient_loss(naive, guide, operator=cfg.operator, weight=band), tiny
        ),
        "tv": jnp.maximum(losses.tv_loss(naive), tiny),
    }


def source_box_fraction(source: jax.Array, target: jax.Array) -> jax.Array:
    """Share of the canvas the pasted source's box covers: the bounding box of the pixels
    where ``source`` (the source pasted on the target) differs from ``target``."""
    d = jnp.any(source != target, axis=-1)

    def extent(v):
        n = v.shape[0]
        first = jnp.argmax(v)
        last = n - 1 - jnp.argmax(v[::-1])
        return jnp.where(jnp.any(v), last - first + 1, n)

    h, w = d.shape
    return extent(jnp.any(d, axis=1)) * extent(jnp.any(d, axis=0)) / jnp.float32(h * w)


def loss_terms(
    cfg: StageConfig, spec: VGGSpec, x: jax.Array, data: StageData, *, masked: bool
) -> dict:
    """Each weighted loss term of the objective at ``x`` (a dict; sum = objective)."""
    wd = data.window
    hw = data.target.shape[:2]
    px: dict = {}
    if wd is not None:
        # The exact windowed objective (jaxblend.window): every term from the window.
        blend = window_mod.blend_window(x, wd, hw)
        feats = window_mod.window_features(spec, data.params, blend, cfg.layers(), wd.origin, hw)
        style_feats = feats
        px = window_mod.pixel_terms(cfg, blend, wd, hw)
    elif cfg.style and cfg.style_image == "iterate" and cfg.region == "mask":
        # The authors' stage 1: the style term reads the optimised canvas itself.
        blend = stage_image(cfg, x, data.target, data.mask)
        other = dataclasses.replace(cfg, style=0.0).layers()
        seen = blend * data.mask[..., None] if cfg.content_image == "masked" else blend
        feats = _features(spec, data.params, seen, other)
        style_feats = _features(spec, data.params, x, tuple(n for n, _ in cfg.style_layers))
    elif cfg.content and cfg.content_image == "masked":
        # The authors' content: the object on black through VGG, a pass of its own.
        blend = stage_image(cfg, x, data.target, data.mask)
        c_names = tuple(n for n, _ in cfg.content_layers)
        rest = dataclasses.replace(cfg, content=0.0).layers()
        feats = _features(spec, data.params, blend, rest)
        feats.update(_features(spec, data.params, blend * data.mask[..., None], c_names))
        style_feats = feats
    else:
        blend = stage_image(cfg, x, data.target, data.mask)
        feats = _features(spec, data.params, blend, cfg.layers())
        style_feats = feats
    zero = jnp.float32(0)
    out = {t: zero for t in TERMS}
    sc = data.scale
    if cfg.grad:
        if wd is not None:
            g = px["grad"]
        else:
            g = losses.gradient_loss(
                blend, data.guide, operator=cfg.operator, weight=data.band if cfg.band else None
            )
        w = cfg.grad * (1.0 + data.sigma) if cfg.smooth == SMOOTH_AUTO else cfg.grad
        out["grad"] = w * (g / sc["grad"] if sc else g)
    if cfg.content:
        # Normalised: the layers' mean gap (each divided by its own scale).
        c_sum = sum(a for _, a in cfg.content_layers)
        cw = {n: (a / (c_sum * sc["content"][n]) if sc else a) for n, a in cfg.content_layers}
        if wd is not None:
            c = window_mod.content_loss(feats, wd, hw, spec.arch, weights=cw)
        elif cfg.content_image == "masked":
            c = data.content_box * losses.content_loss(feats, data.content_ref, weights=cw)
        else:
            c = losses.content_loss(
                feats, data.content_ref, data.mask if masked else None, weights=cw
            )
        out["content"] = cfg.content * c
    if cfg.style:
        s_sum = sum(b for _, b in cfg.style_layers)
        a = cfg.style_object
        style = jnp.float32(0)
        if a < 1:
            sw = {n: (b / (s_sum * sc["style"][n]) if sc else b) for n, b in cfg.style_layers}
            if wd is not None:
                s = window_mod.style_loss(feats, wd, hw, spec.arch, weights=sw)
            else:
                s = losses.style_loss(style_feats, data.grams, weights=sw)
            style = (1 - a) * s
        if a > 0:
            so = sc.get("style_object") if sc else None
            ow = {n: (b / (s_sum * so[n]) if so else b) for n, b in cfg.style_layers}
            if wd is not None:
                so_ = window_mod.object_style_loss(feats, wd, data.object_grams, weights=ow)
            else:
                so_ = losses.style_loss(feats, data.object_grams, data.mask, weights=ow)
            style = style + a * so_
        out["style"] = cfg.style * style
    if cfg.hist:
        out["hist"] = cfg.hist * losses.histogram_loss(
            feats, data.sorted, weights=dict(cfg.hist_layers)
        )
    if cfg.tv:
        tv = px["tv"] if wd is not None else losses.tv_loss(blend)
        out["tv"] = cfg.tv * (tv / sc["tv"] if sc else tv)
    if cfg.range:
        out["range"] = cfg.range * (px["range"] if wd is not None else losses.range_loss(blend))
    if cfg.tone:  # never windowed (window.windowable)
        t = _tone_loss(cfg, blend, data.tone_ref, data.mask)
        out["tone"] = cfg.tone * (t / sc["tone"] if sc else t)
    return out


def objective(cfg: StageConfig, spec: VGGSpec, masked: bool, x: jax.Array, data: StageData):
    """The stage's objective: the sum of :func:`loss_terms`."""
    return sum(loss_terms(cfg, spec, x, data, masked=masked).values())


@functools.lru_cache(maxsize=64)
def _solver(cfg: StageConfig, spec: VGGSpec, masked: bool, kind: str, history: int):
    fun = functools.partial(objective, cfg, spec, masked)
    if cfg.smooth == SMOOTH_AUTO:
        return make_solver(kind, fun, history=history, precondition=_scene_blur)
    return make_solver(kind, fun, history=history, smooth=cfg.smooth)


def _scene_blur(q: jax.Array, data: StageData) -> jax.Array:
    """The per-job search smoothing of ``smooth="auto"``: a blur of ``σ = data.sigma``."""
    return gaussian_blur(q, data.sigma)


def start(
    cfg: StageConfig,
    spec: VGGSpec,
    masked: bool,
    kind: str,
    history: int,
    x0: jax.Array,
    data: StageData,
) -> Carry:
    """Initialise the solver at ``x0`` (one objective evaluation)."""
    solver = _solver(cfg, spec, masked, kind, history)
    state = solver.init(x0, data)
    v = solver.value(state)
    best = jnp.where(jnp.isfinite(v), v, jnp.inf)
    return Carry(x0, state, x0, best)


def advance(
    cfg: StageConfig,
    spec: VGGSpec,
    masked: bool,
    kind: str,
    history: int,
    carry: Carry,
    data: StageData,
    until: jax.Array,
) -> Carry:
    """Run L-BFGS iterations until ``until`` objective evaluations have been spent.

    One ``lax.while_loop``; stops early when the objective becomes non-finite, keeping the
    best finite iterate in ``carry.best_x``.
    """
    solver = _solver(cfg, spec, masked, kind, history)

    def cond(c: Carry):
        return (
            (solver.evaluations(c.state) < until)
            & jnp.isfinite(solver.value(c.state))
            & ~solver.stopped(c.state)
        )

    def body(c: Carry):
        x, state = solver.step(c.x, c.state, data)
        v = solver.value(state)
        better = jnp.isfinite(v) & (v <= c.best_value)
        best_x = jnp.where(better, x, c.best_x)
        best_v = jnp.where(better, v, c.best_value)
        return Carry(x, state, best_x, best_v)

    return jax.lax.while_loop(cond, body, carry)


def evaluations(kind: str, carry: Carry) -> jax.Array:
    """Objective evaluations spent so far."""
    if kind == "jaxopt":
        return jnp.asarray(carry.state.num_fun_eval, jnp.int32)
    return carry.state.evals


def stopped(kind: str, carry: Carry) -> jax.Array:
    """Whether the solver gave up (no decrease along a search direction)."""
    if kind in ("lbfgs", "torch"):
        return carry.state.failed
    return jnp.zeros_like(carry.best_value, bool)


def to_variable(cfg: StageConfig, x: jax.Array, data: StageData) -> jax.Array:
    """The optimised variable for the full-canvas start ``x``: in a windowed stage the
    window's crop (:func:`jaxblend.window.variable`), so the solver's state — ``2·history
    + 4`` vectors — has the window's size, not the canvas's; else ``x``. The objective
    gives zero gradient outside the window, so L-BFGS takes the same steps either way (to
    round-off). With a smoothing preconditioner too: the gradient is zero within the
    window's receptive-field margin (far wider than the blur's 3σ) and past the canvas's
    end (edge copies), as the full canvas's zero padding sees it."""
    if data.window is not None:
        return window_mod.variable(x, data.window)
    return x


def full_image(cfg: StageConfig, x: jax.Array, data: StageData) -> jax.Array:
    """The stage's ``H x W x 3`` image for the iterate ``x`` (the canvas, or the window of
    :func:`to_variable`): :func:`stage_image`, or the window's image pasted into the
    target (:func:`jaxblend.window.full_image`)."""
    if data.window is not None:
        return window_mod.full_image(x, data.window, data.target)
    return stage_image(cfg, x, data.target, data.mask)


class Programs(NamedTuple):
    """The compiled programs of one stage configuration (single job or stacked jobs):
    ``variable(x0, data)`` (:func:`to_variable`) and ``image(x, data)``
    (:func:`full_image`) besides the solver's."""

    prepare: Any
    start: Any
    advance: Any
    terms: Any
    variable: Any = None
    image: Any = None


@functools.lru_cache(maxsize=64)
def programs(
    cfg: StageConfig,
    spec: VGGSpec,
    masked: bool,
    kind: str,
    history: int,
    batched: bool,
    window: window_mod.Geometry | None = None,
) -> Programs:
    """jit-compiled ``prepare``/``start``/``advance``/``terms`` for a stage.

    The configuration is static (hashable); every array — VGG parameters included — is an
    argument, so a second job of the same shapes reuses the compiled programs. With
    ``batched=True`` each program is ``vmap``-ped over a leading job axis (parameters
    shared). ``window``: a :class:`jaxblend.window.Geometry` (:func:`jaxblend.window.plan`
    of the job's mask, the largest box of a stack) for the exact windowed objective, one
    compiled program per window bucket; ``None``: the full canvas.
    """
    prep = functools.partial(prepare, cfg, spec, masked=masked, window=window)
    st = functools.partial(start, cfg, spec, masked, kind, history)
    adv = functools.partial(advance, cfg, spec, masked, kind, history)
    terms = functools.partial(loss_terms, cfg, spec, masked=masked)
    var = functools.partial(to_variable, cfg)
    img = functools.partial(full_image, cfg)
    if batched:
        d_axes = StageData(None, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        prep = jax.vmap(prep, in_axes=(None, 0, 0, 0, 0), out_axes=d_axes)
        st = jax.vmap(st, in_axes=(0, d_axes))
        adv = jax.vmap(adv, in_axes=(0, d_axes, 0))  # a budget per job
        terms = jax.vmap(lambda x, d, f=terms: f(x, d), in_axes=(0, d_axes))
        var = jax.vmap(var, in_axes=(0, d_axes))
        img = jax.vmap(img, in_axes=(0, d_axes))
    return Programs(
        jax.jit(prep), jax.jit(st), jax.jit(adv), jax.jit(terms), jax.jit(var), jax.jit(img)
    )
