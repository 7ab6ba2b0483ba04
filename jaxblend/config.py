"""Frozen, hashable configuration of a deep blend.

Everything here is static for ``jax.jit``: two blends with equal configurations and equal
canvas shapes share one compiled program per stage.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from jaxblend import validate
from jaxblend.errors import InputError

LayerWeights = tuple[tuple[str, float], ...]

STYLE_LAYERS: LayerWeights = (
    ("relu1_2", 1.0),
    ("relu2_2", 1.0),
    ("relu3_3", 1.0),
    ("relu4_3", 1.0),
)
CONTENT_LAYERS: LayerWeights = (("relu2_2", 1.0),)
HIST_LAYERS: LayerWeights = (("relu3_3", 1.0), ("relu4_3", 1.0))

INITS = ("noise", "paste", "poisson", "randn")
STAGE2_CONTENTS = ("stage1", "object", "source")
STAGE1_CONTENTS = ("source", "start")
TONE_CHANNELS = ("rgb", "luma")
SOLVERS = ("jaxopt", "optax", "lbfgs", "torch")
OPERATORS = ("laplacian", "gradient")
REGIONS = ("mask", "image")
STYLE_IMAGES = ("blend", "iterate")
CONTENT_IMAGES = ("blend", "masked")
PRECISIONS = ("auto", "float32", "bfloat16", "tf32")


#: A ``smooth`` value: each job's own width, from its scene's spectrum
#: (:func:`jaxblend.spectrum.fine_scale_sigma`).
SMOOTH_AUTO = "auto"

#: A ``canvas`` value (``--canvas``, a manifest's ``"canvas"``) that keeps the target's
#: own size, not resized (``BlendConfig(canvas=None)``).
KEEP_TARGET = "target"


@dataclass(frozen=True)
class StageConfig:
    """Loss weights, layers and budget of one stage.

    Attributes:
      grad, content, style, hist, tv: weights of the gradient (Eq. 6), content (Eq. 7/9),
        style (Eq. 8/10), histogram (Eq. 11) and total-variation (Eq. 12) terms.
      range: weight of a penalty on values outside [0, 255] (not in the paper; it keeps
        the optimum representable in 8 bits, see :func:`jaxblend.losses.range_loss`).
      steps: budget in objective evaluations (one evaluation = one value and gradient of
        the whole objective, as the authors' ``num_steps`` counts closure calls).
      content_layers, style_layers, hist_layers: ``((layer, weight), ...)``.
      operator: ``"laplacian"`` (the authors') or ``"gradient"`` (first-order) for Eq. 6.
      mixed: Pérez's mixed guidance: the stronger of source/target gradient per pixel.
      normalize: divide each term by the job's own scale, computed once per job, so that
        one set of weights means the same on every image: the gradient and TV terms by the
        naive paste's, the style term layer by layer by the naive paste's (so 1.0 = naive
        paste, as ``style_gap``), the content term layer by layer by the distance between
        the target's and the reference's features (1.0 = the object replaced by the
        scene, as ``content_gap``). Not in the paper; off in the ``paper`` preset.
      band: when positive, the gradient term covers only the pixels within ``band`` px of
        the mask edge (a seam term for the style refinement) instead of the whole canvas.
      region: the pixels the stage changes: ``"mask"`` (the object; outside it the result
        is the target, bit for bit) or ``"image"`` (every pixel, as the authors' stage 2:
        the scene around the object may move a little so the object need not absorb the
        whole style difference alone).
      reach: in a ``region="image"`` stage, how far from the object the scene may change,
        as a multiple of the mask's bounding-box long side ``ℓ``: only the rectangle ``R``
        = the box grown by ``g = ⌊reach·ℓ + ½⌋`` px on every side (clipped to the canvas)
        changes, with a smooth ramp to zero over its last ``min(16, g)`` px
        (:func:`jaxblend.window.region_weight`): the stage's image is ``W ⊙ x + (1 − W) ⊙
        I_T``, so the target stays bit for bit outside ``R`` and no rectangular seam can
        form. A bounded region is what lets stage 2 run on a window
        (:mod:`jaxblend.window`) on canvases much larger than the object. ``0`` (the
        default) = the whole canvas (the iterate itself, unbounded, as the authors'
        stage 2 and the calibrated defaults). At 512² ``reach=1`` covers case1's canvas
        but only 72% of case2's and 80% of case4's, so it changes their finals, and its
        quality there is not measured yet; set it for large canvases (a 400-px object on
        4096×3072: ``reach=0.5`` gives a 960×1024 stage-2 window and the blend peaks at
        7 GB on a CPU, ``reach=1`` a 1408² window and 11 GB). Ignored when
        ``region="mask"``.
      style_object: share of the style term given to the object's own statistics, from 0
        (the paper: the Gram matrices of the whole image against the target's) to 1 (only
        the object's). The object's part compares the Gram matrix of the blend's features
        inside the mask with that of the target features *matched* to them: each object
        position at the deepest style layer takes the target position whose 3 x 3 feature
        patch is most similar (cosine) to the reference's (the content reference: the
        stage-1 blend in stage 2), mapped to the shallower layers as in Luan et al.'s
        painterly harmonisation (2018). So dark parts of the object take the texture of
        the scene's dark parts instead of being pulled to the scene's average. Computed
        once per job; no extra VGG pass per evaluation. Not in the paper.
      style_stop: when positive, a job's stage ends as soon as its style term (normalised:
        the naive paste is 1.0) is at most ``style_stop``, checked every ``chunk``
        evaluations; ``steps`` stays the cap. Jobs whose style falls fast are then not
        stylised further than the rest: the same degree of style on every target instead
        of the same number of steps. Needs ``normalize``. Not in the paper.
      style_image: the image whose Gram matrices the style term compares with the
        target's: ``"blend"`` (the composite ``I_B``, as the paper's Eq. 8) or
        ``"iterate"`` (the optimised canvas ``I_Z`` itself, whose pixels outside the mask
        the composite discards: what the authors' stage-1 code does, ``vgg(input_img)``).
        With ``"iterate"`` the whole canvas shares the style term, so the object is
        stylised much less; it costs a second VGG pass when a content or histogram term
        is on. Only differs from ``"blend"`` in ``region="mask"`` stages.
      smooth: when positive, L-BFGS searches along Gaussian-smoothed directions (``σ =
        smooth`` px; :func:`jaxblend.optim.make_solver`), so changes are smooth strokes
        rather than pixel speckle. ``"auto"``: each job's own ``σ``, from how soft its
        scene is at the finest scales (:func:`jaxblend.spectrum.fine_scale_sigma`: 0.97
        px on case1's portrait, 0.30–0.44 on case2's and case4's grainy paintings, where
        the scene's own texture is that fine), and the gradient term's weight becomes
        ``grad · (1 + σ)``: a smoothed search spreads the style change across the mask
        edge, so the seam needs the more weight the wider the smoothing. Needs
        ``solver="lbfgs"``. Not in the paper.
      content_image: how the content term reads the object: ``"blend"`` (the
        composite's features, masked at each layer: Eq. 7, averaged over the canvas) or
        ``"masked"`` (the authors' code: ``VGG(I_B ⊙ M)`` against ``VGG(I_ref ⊙ M)`` — the
        image masked *before* the network, the object on black — with the squared
        differences averaged over the source's box, not the canvas: the authors
        average over their source-sized crop, so their term is ``canvas / box`` times
        the canvas mean; the box is the bounding box of the pixels where the pasted
        source differs from the target). ``"masked"`` costs a VGG pass of its own
        unless the style term reads the iterate (``style_image="iterate"``).
      window: in a ``region="mask"`` stage, evaluate the VGG terms on a window around the
        mask's bounding box (plus the receptive field of the deepest layer used) instead
        of the whole canvas, combined with the target's features elsewhere: the same
        objective, value and gradient, to float32 round-off (:mod:`jaxblend.window`).
        Used automatically when the window is below 60% of the canvas's area and the
        stage has no histogram term and no ``style_image="iterate"``; ``False`` always
        evaluates the whole canvas.
      tone: weight of the object's tone term (:func:`jaxblend.losses.tone_loss`): the
        blend's colours blurred by a Gaussian of ``tone_sigma`` px, inside the mask,
        against the content reference's (in stage 2 the stage-1 blend). Texture finer
        than the blur is free, so the style term can repaint the object's surface while
        its coarse tones stay: a dark object on a light scene stays dark instead of being
        pulled to the scene's palette. With ``normalize`` it is divided by the same
        figure for the scene itself (1.0 = the object's tones replaced by the scene's).
        A stage with a tone term runs on the whole canvas (no window). Not in the paper.
      tone_sigma: the tone term's blur width in px (at the 512-px canvas the defaults
        are calibrated on).
      tone_channels: what the tone term compares: ``"rgb"`` (the colours) or ``"luma"``
        (the brightness alone, Rec. 601 weights): a dark object stays dark, and the
        style term is free to move its hue towards the scene's palette.
      tone_highpass: when positive (and above ``tone_sigma``), the tone term ignores
        changes smoother than this many px (a difference of Gaussians): the object may
        take the scene's overall brightness, its own light and dark parts stay.
    """

    grad: float = 0.0
    content: float = 0.0
    style: float = 0.0
    hist: float = 0.0
    tv: float = 0.0
    range: float = 0.0
    steps: int = 100
    content_layers: LayerWeights = CONTENT_LAYERS
    style_layers: LayerWeights = STYLE_LAYERS
    hist_layers: LayerWeights = HIST_LAYERS
    operator: str = "laplacian"
    mixed: bool = False
    normalize: bool = False
    band: int = 0
    region: str = "mask"
    smooth: float | str = 0.0
    style_object: float = 0.0
    style_stop: float = 0.0
    style_image: str = "blend"
    content_image: str = "blend"
    window: bool = True
    reach: float = 0.0
    tone: float = 0.0
    tone_sigma: float = 4.0
    tone_channels: str = "rgb"
    tone_highpass: float = 0.0

    def __post_init__(self) -> None:
        for name in ("grad", "content", "style", "hist", "tv", "range", "tone"):
            validate.number(getattr(self, name), f"{name} (a loss weight)", 0.0, validate.F32_MAX)
        validate.integer(self.steps, "steps", 1, validate.MAX_STEPS)
        for name in ("content_layers", "style_layers", "hist_layers"):
            value = getattr(self, name)
            try:
                pairs = [(n, w) for n, w in value]
            except (TypeError, ValueError):
                pairs = None
            if pairs is None or any(not isinstance(n, str) for n, _ in pairs):
                raise InputError(f"{name} must be ((layer, weight), ...), got {value!r}")
            for n, w in pairs:
                validate.number(w, f"{name} weight of {n}", 0.0)
        for name in ("mixed", "normalize", "window"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name} must be true or false, got {getattr(self, name)!r}")
        validate.integer(self.band, "band", 0, validate.MAX_SIDE)
        if self.smooth != SMOOTH_AUTO:
            validate.number(self.smooth, f"smooth (a width in px or {SMOOTH_AUTO!r})", 0.0, 1000.0)
        validate.number(self.style_object, "style_object", 0.0, 1.0)
        validate.number(self.style_stop, "style_stop", 0.0, 1.0)
        validate.number(self.reach, "reach", 0.0, 1000.0)
        validate.number(self.tone_sigma, "tone_sigma (a blur width in px)", 0.0, 64.0,
                        lo_open=True)  # fmt: skip
        validate.number(self.tone_highpass, "tone_highpass (a blur width in px)", 0.0, 256.0)
        if self.tone_highpass and self.tone_highpass <= self.tone_sigma:
            raise InputError(
                f"tone_highpass ({self.tone_highpass}) must be 0 or above tone_sigma "
                f"({self.tone_sigma}): it is the wider of the two blurs"
            )
        if self.tone_channels not in TONE_CHANNELS:
            raise InputError(
                f"tone_channels must be one of {', '.join(TONE_CHANNELS)}; "
                f"got {self.tone_channels!r}"
            )
        if self.content_image not in CONTENT_IMAGES:
            raise InputError(
                f"content_image must be one of {', '.join(CONTENT_IMAGES)}; "
                f"got {self.content_image!r}"
            )
        if self.style_image not in STYLE_IMAGES:
            raise InputError(
                f"style_image must be one of {', '.join(STYLE_IMAGES)}; got {self.style_image!r}"
            )
        if self.style_image == "iterate" and self.style_object:
            raise InputError(
                "style_object needs style_image='blend' (the object's statistics are those "
                "of the composite)"
            )
        if self.style_stop and not (self.normalize and self.style):
            raise InputError(
                "style_stop needs normalize=True and a style weight above 0 (it compares the "
                "normalised style term with the naive paste's 1.0)"
            )

    def layers(self) -> tuple[str, ...]:
        """The VGG layers this stage's active terms read (sorted, no repeats)."""
        names: set[str] = set()
        for w, ls in (
            (self.content, self.content_layers),
            (self.style, self.style_layers),
            (self.hist, self.hist_layers),
        ):
            if w:
                names.update(n for n, _ in ls)
        return tuple(sorted(names))


# Calibrated on the whole development set (bench/devset.py: six cases, three of them
# cross pairs) with per-job normalised terms, so that one set of weights means the same on
# every image (README "Defaults"; bench/calibrate_set.py, bench/results/calibrate-set.jsonl).
# Stage 1: the seam (1.0 = the naive paste's) weighs ten times the content gap (1.0 = the
# object replaced by the scene) and twenty times the style gap (1.0 = the naive paste's).
STAGE1 = StageConfig(
    grad=10.0,
    content=1.0,
    style=0.5,
    range=1.0,
    steps=40,
    normalize=True,
    content_layers=(("relu2_2", 1.0), ("relu3_3", 1.0)),
)
# Stage 2 repaints the whole canvas (as the authors' code does), keeping the stage-1
# blend's content at three depths inside the mask and its seam on a 3-px band across the
# mask edge, along search directions smoothed by each scene's own fine-scale softness
# (smooth="auto", jaxblend/spectrum.py): on a soft scene (case1's portrait, 0.97 px) raw
# L-BFGS steps add pixel speckle that fits VGG's Gram matrices but not the scene (the
# independent AlexNet relu5 distance rose from 0.16 to 0.29 over 50 evaluations); on a
# grainy one (case2, case4: 0.30-0.44 px) the smoothing is near the identity, as it must
# be: a fixed 1-px smoothing kept case4 at style 0.165 against 0.101 raw. Calibrated at
# 512² on case1, case2 and case4 with the independent figures (bench/trajectory.py, README
# "Defaults"): style 100 and 50 evaluations reach the authors' style distance on all
# three; seam weight 10·(1 + σ) keeps the outline below theirs on all three.
STAGE2 = StageConfig(
    grad=10.0,
    content=1.0,
    style=100.0,
    range=1.0,
    steps=50,
    normalize=True,
    band=3,
    region="image",
    smooth=SMOOTH_AUTO,
    content_layers=(("relu2_2", 1.0), ("relu3_3", 1.0), ("relu4_3", 1.0)),
    # No relu1_2: its Gram is mostly colour statistics, and matching the scene's colours
    # globally painted the scene's colours onto the object (green leaf blotches on case2's
    # boat at style 100 with relu1_2; see bench/results/calibrate-set.jsonl).
    style_layers=(("relu2_2", 1.0), ("relu3_3", 1.0), ("relu4_3", 1.0)),
)


@dataclass(frozen=True)
class BlendConfig:
    """Settings of a two-stage deep blend (frozen and hashable).

    Attributes:
      stage1, stage2: per-stage :class:`StageConfig`.
      canvas: long side of the canvas (the target is resized to it, aspect kept).
      source_size: long side of the resized source and mask; ``None`` keeps their size.
      init: start of stage 1: ``"noise"`` (the paper), ``"randn"`` (the authors' code:
        standard normal values on the 0-255 scale), ``"paste"`` (source pasted) or
        ``"poisson"`` (classical Poisson blend).
      solver: ``"lbfgs"`` (ours, :mod:`jaxblend.optim`: one objective evaluation per loop
        step, so ``vmap``-ped stacks cost what one batched pass costs), ``"jaxopt"``
        (``jaxopt.LBFGS``, zoom line search), ``"optax"`` (``optax.lbfgs``) or
        ``"torch"`` (``torch.optim.LBFGS`` without a line search, unit steps, as the
        authors' code runs it; the ``authors`` preset). The zoom searches nest
        ``lax.cond`` around evaluations, which ``vmap`` turns into evaluating every
        branch: fine for one job, many times slower for a stack.
      stage2_enabled: run the style-refinement stage.
      seed: seed of the noise initialisation.
      precision: VGG convolutions in ``"float32"`` (true float32:
        ``lax.Precision.HIGHEST``, no TensorFloat-32), ``"bfloat16"`` or ``"tf32"``
        (float32 storage and accumulation at ``lax.Precision.DEFAULT``: TensorFloat-32
        tensor cores on NVIDIA GPUs, the same as ``"float32"`` on CPU).
      history: L-BFGS memory size.
      chunk: evaluations between progress reports (and video frames).
      scales: coarse-to-fine stage 1: canvas scales in (0, 1] ending with 1.0, e.g.
        ``(0.5, 1.0)``; each solve's result, upsampled, starts the next; the stage's
        budget is shared equally.
      stage2_content: the content the style refinement keeps: ``"object"`` (the
        stage-1 blend inside the mask only, the default: the scene around the object is
        held by nothing but the seam band and the style term, as in the authors' code,
        whose Eq. 9 term is zero, so the scene can take up some of the style difference),
        ``"stage1"`` (the whole stage-1 blend, the paper's Eq. 9) or
        ``"source"`` (the object as pasted, inside the mask, as stage 1's Eq. 7).
      stage1_content: the reference of stage 1's content term (Eq. 7, inside the mask):
        ``"source"`` (the naive paste, the paper's) or ``"start"`` (stage 1's own start,
        the Poisson blend with ``init="poisson"``): the object's structure as Poisson
        keeps it, with the scene's colours, so the content term does not pull the source
        background the mask takes along (a strip of skin, a patch of sky) back to its
        own colours. Not in the paper.
      network: the VGG :func:`jaxblend.load_vgg` loads when no model is passed
        (``"vgg16"``, the shipped one; ``"vgg19"``, ``"vgg16-torchvision"`` and
        ``"vgg16-authors"`` come with ``jaxblend weights fetch``).
      style_strength: a factor on both stages' style weights: above 1 more of the scene's
        style, below 1 less (0 turns the style terms off).
      screen: with ``init="poisson"``, start from the *screened* Poisson blend
        (:func:`jaxblend.poisson.poisson_solve`'s ``screen``): the correction to the pasted
        source fades from the mask's edge over ``√area / screen`` px (``area``: the mask's
        pixel count), so the seam is as smooth but the object keeps its own colours instead
        of taking the scene's brightness throughout. ``0``: the classical Poisson blend.
        Not in the paper.
    """

    stage1: StageConfig = STAGE1
    stage2: StageConfig = STAGE2
    canvas: int | None = 512
    source_size: int | None = None
    init: str = "poisson"
    solver: str = "lbfgs"
    stage2_enabled: bool = True
    seed: int = 0
    precision: str = "auto"
    history: int = 10
    chunk: int = 10
    scales: tuple[float, ...] = field(default=(1.0,))
    stage2_content: str = "object"
    stage1_content: str = "source"
    network: str = "vgg16"
    style_strength: float = 1.0
    screen: float = 0.0

    def __post_init__(self) -> None:
        for name in ("stage1", "stage2"):
            if not isinstance(getattr(self, name), StageConfig):
                raise InputError(f"{name} must be a StageConfig, got {getattr(self, name)!r}")
        if self.canvas is not None:
            validate.integer(self.canvas, "canvas", 8, validate.MAX_SIDE)
        if self.source_size is not None:
            validate.integer(self.source_size, "source_size", 1, validate.MAX_SIDE)
        validate.seed(self.seed)
        validate.integer(self.history, "history (the L-BFGS memory)", 1, 1000)
        validate.integer(self.chunk, "chunk", 1, validate.MAX_STEPS)
        validate.number(self.style_strength, "style_strength", 0.0)
        validate.number(self.screen, "screen", 0.0, 1000.0)
        if not isinstance(self.stage2_enabled, bool):
            raise InputError(f"stage2_enabled must be true or false, got {self.stage2_enabled!r}")
        if not isinstance(self.network, str) or not self.network:
            raise InputError(f"network must be a name such as 'vgg16', got {self.network!r}")
        if not isinstance(self.scales, tuple) or not self.scales:
            raise InputError(
                f"scales must be a tuple of numbers ending with 1.0, got {self.scales!r}"
            )
        for v in self.scales:
            validate.number(v, "each of scales", 0.0, 1.0, lo_open=True)
        for name, value, allowed in (
            ("init", self.init, INITS),
            ("solver", self.solver, SOLVERS),
            ("precision", self.precision, PRECISIONS),
            ("stage2_content", self.stage2_content, STAGE2_CONTENTS),
            ("stage1_content", self.stage1_content, STAGE1_CONTENTS),
            ("stage1.operator", self.stage1.operator, OPERATORS),
            ("stage2.operator", self.stage2.operator, OPERATORS),
            ("stage1.region", self.stage1.region, REGIONS),
            ("stage2.region", self.stage2.region, REGIONS),
        ):
            if value not in allowed:
                raise InputError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        if self.stage1_content == "start" and self.init not in ("poisson", "paste"):
            raise InputError(
                f"stage1_content='start' needs init='poisson' or 'paste' (a start that holds "
                f"the object), not {self.init!r}; use stage1_content='source'"
            )
        for s in (self.stage1, self.stage2):
            if int(s.steps) < 1:
                raise InputError(f"steps must be at least 1, got {s.steps}")
        if not (self.style_strength >= 0 and self.style_strength < float("inf")):
            raise InputError(
                f"style_strength must be a finite number >= 0, got {self.style_strength}"
            )
        if (self.stage1.smooth or self.stage2.smooth) and self.solver != "lbfgs":
            raise InputError(
                f"smooth (a preconditioned search) needs solver='lbfgs', not {self.solver!r}; "
                "set smooth=0 in both stages to use another solver"
            )
        if self.chunk < 1:
            raise InputError(f"chunk must be at least 1, got {self.chunk}")
        if not self.scales or any(not 0 < s <= 1 for s in self.scales) or self.scales[-1] != 1:
            raise InputError(f"scales must be in (0, 1] and end with 1.0, got {self.scales}")

    def replace(self, **changes: Any) -> BlendConfig:
        """A copy with fields changed; ``steps1``/``steps2`` set the stage budgets."""
        s1, s2 = changes.pop("steps1", None), changes.pop("steps2", None)
        cfg = dataclasses.replace(self, **changes)
        if s1 is not None:
            cfg = dataclasses.replace(cfg, stage1=dataclasses.replace(cfg.stage1, steps=int(s1)))
        if s2 is not None:
            cfg = dataclasses.replace(cfg, stage2=dataclasses.replace(cfg.stage2, steps=int(s2)))
        return cfg
