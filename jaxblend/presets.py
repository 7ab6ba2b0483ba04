"""Named configurations: jaxblend's defaults, the paper's formulation and the authors' code.

* ``"default"`` — :class:`~jaxblend.config.BlendConfig` as it is (see README "Defaults").
* ``"solid"`` — the defaults with a stage-2 tone term on brightness (``tone=10``,
  ``tone_sigma=1.5``, ``tone_channels="luma"``) and 60 stage-2 evaluations: the object
  keeps its own light and dark parts (a dark horse, a frame's rim) while its hue and
  texture take the scene's, at the price of less of the scene's style (README
  "Defaults": on case4 the independent style distance stays above the authors').
* ``"v0.1"`` — jaxblend 0.1's defaults (calibrated on case1 alone): no per-job
  normalisation, every style layer in stage 2, content at relu2_2, no seam term there.
* ``"paper"`` — the paper's formulation on the shipped VGG16: as ``"v0.1"`` but stage 2
  keeps the whole stage-1 blend's content (Eq. 9) and stage 1 starts from noise. The
  histogram term (Eq. 11) is off, as in the authors' code (``hist`` turns it on).
* ``"authors"`` — what the authors' public code runs: torchvision VGG16 fed raw 0–255
  values minus their ``MeanShift`` mean (``network="vgg16-authors"``, fetched with
  ``jaxblend weights fetch vgg16-torchvision``), Gram ÷ C·H·W and MSE means (our
  normalisations already), stage 1 grad 1e4, style 1e4, content 1, TV 1e-6, stage 2 style
  1e7, TV 1e-6, their nearly black ``torch.randn`` start (``init="randn"``), 1000
  evaluations per stage, no histogram term, and their optimiser: ``torch.optim.LBFGS``
  with unit steps and no line search, memory 100 (``solver="torch"``, ``history=100``).
  Their stage-1 style term reads the optimised canvas itself, ``vgg(input_img)``, not the
  composite (``style_image="iterate"``): the whole canvas shares the style, so the object
  is stylised far less. Their content term runs VGG on the blend's source-sized crop
  times the mask against the source times the mask and averages over that crop
  (``content_image="masked"``: about 2.9 times our canvas mean at their 300-px source on
  the 512² canvas). Their stage 2
  content term has weight 1 but is identically zero (a known bug in their code), so the
  preset's is 0; their stage 2 optimises every pixel (``region="image"``), repainting the
  background too. Their square resizing is :func:`jaxblend.io.place`'s business (resize
  target and source to squares before placing).

Example:
  >>> cfg = preset("authors", canvas=512)
  >>> jaxblend.blend(src, tgt, mask, center=(200, 235), config=cfg)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxblend.config import (
    CONTENT_LAYERS,
    HIST_LAYERS,
    STYLE_LAYERS,
    BlendConfig,
    StageConfig,
)
from jaxblend.errors import InputError

__all__ = ["PRESETS", "preset"]

# relu1_2, relu2_2, relu3_3, relu4_3 (their VGG16 layers), weight 1/4 each: their style
# loss is the *mean* of the four layers' Gram MSEs (``style_loss / len(...)`` in run.py),
# ours a weighted sum.
_AUTHORS_STYLE = tuple((n, 0.25) for n, _ in STYLE_LAYERS)
_V01_STAGE1 = StageConfig(
    grad=3.0, content=1e-4, style=1.5e-3, tv=1e-6, range=1.0, steps=40,
    content_layers=CONTENT_LAYERS, style_layers=STYLE_LAYERS, hist_layers=HIST_LAYERS,
)  # fmt: skip
_V01_STAGE2 = StageConfig(
    content=1e-3, style=3e-2, tv=1e-6, range=1.0, steps=30,
    content_layers=CONTENT_LAYERS, style_layers=STYLE_LAYERS, hist_layers=HIST_LAYERS,
)  # fmt: skip

_DEFAULT = BlendConfig()
PRESETS: dict[str, BlendConfig] = {
    "default": _DEFAULT,
    "solid": _DEFAULT.replace(
        stage2=dataclasses.replace(
            _DEFAULT.stage2, tone=10.0, tone_sigma=1.5, tone_channels="luma", steps=60
        )
    ),
    "v0.1": BlendConfig(stage1=_V01_STAGE1, stage2=_V01_STAGE2, stage2_content="source"),
    "paper": BlendConfig(
        stage1=_V01_STAGE1, stage2=_V01_STAGE2, init="noise", stage2_content="stage1"
    ),
    "authors": BlendConfig(
        stage1=StageConfig(
            grad=1e4, content=1.0, style=1e4, tv=1e-6, steps=1000,
            content_layers=CONTENT_LAYERS, style_layers=_AUTHORS_STYLE,
            style_image="iterate", content_image="masked",
        ),
        stage2=StageConfig(
            content=0.0, style=1e7, tv=1e-6, steps=1000, region="image",
            content_layers=CONTENT_LAYERS, style_layers=_AUTHORS_STYLE,
        ),
        init="randn",
        solver="torch",
        history=100,
        stage2_content="stage1",
        network="vgg16-authors",
    ),
}  # fmt: skip


def preset(name: str, **changes: Any) -> BlendConfig:
    """The named configuration, with ``BlendConfig`` fields changed (``steps1``/``steps2``
    set the stage budgets, as :meth:`BlendConfig.replace`)."""
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}: use one of {', '.join(PRESETS)}")
    cfg = PRESETS[name]
    fields = {f.name for f in dataclasses.fields(BlendConfig)} | {"steps1", "steps2"}
    bad = sorted(set(changes) - fields)
    if bad:
        raise InputError(f"unknown BlendConfig field(s) {bad} for preset {name!r}")
    return cfg.replace(**changes)
