"""Named presets: what they hold, and errors for unknown names and fields."""

from __future__ import annotations

import pytest

from jaxblend import BlendConfig, InputError
from jaxblend.presets import PRESETS, preset


def test_default_preset_is_the_default_config():
    assert preset("default") == BlendConfig()


def test_authors_preset_holds_their_weights_and_network():
    cfg = preset("authors")
    s1, s2 = cfg.stage1, cfg.stage2
    assert (s1.grad, s1.style, s1.content, s1.tv, s1.steps) == (1e4, 1e4, 1.0, 1e-6, 1000)
    # their stage-2 content term is identically zero (a bug in their code): reproduced as 0
    assert (s2.style, s2.content, s2.tv, s2.steps) == (1e7, 0.0, 1e-6, 1000)
    assert s1.region == "mask" and s2.region == "image"  # they repaint the background
    assert not s1.normalize and not s2.normalize and s1.hist == 0 and s2.hist == 0
    assert cfg.init == "randn" and cfg.network == "vgg16-authors"
    assert s1.style_image == "iterate"  # their stage-1 style reads vgg(input_img)
    assert [n for n, _ in s1.style_layers] == ["relu1_2", "relu2_2", "relu3_3", "relu4_3"]


def test_solid_preset_is_the_default_with_a_brightness_tone_term():
    cfg, d = preset("solid"), BlendConfig()
    s2 = cfg.stage2
    assert (s2.tone, s2.tone_sigma, s2.tone_channels, s2.steps) == (10.0, 1.5, "luma", 60)
    assert cfg.stage1 == d.stage1 and cfg.replace(stage2=d.stage2) == d
    assert cfg.stage1.steps + s2.steps <= 200  # the budget


def test_preset_changes_and_errors():
    cfg = preset("paper", canvas=256, steps1=5)
    assert cfg.canvas == 256 and cfg.stage1.steps == 5 and cfg.stage2_content == "stage1"
    with pytest.raises(InputError, match="unknown preset 'nope'"):
        preset("nope")
    with pytest.raises(InputError, match="canvs"):
        preset("default", canvs=3)
    assert set(PRESETS) >= {"default", "solid", "paper", "authors", "v0.1"}


def test_style_strength_is_validated():
    with pytest.raises(InputError, match="style_strength"):
        BlendConfig(style_strength=-1)
    with pytest.raises(InputError, match="style_strength"):
        BlendConfig(style_strength=float("nan"))


def test_authors_stage1_objective_is_their_code(monkeypatch):
    """The authors preset's stage-1 objective against their closure re-expressed in
    PyTorch (``bench/torch_step.py``: run.py's grad/style/content/TV terms, Grams of the
    optimised image averaged over the four layers, content on the source-sized crop times
    the mask), on the same network (the shipped VGG16, Caffe input) and inputs: each term's
    value and gradient agree, one term at a time (the style term dwarfs the others)."""
    import dataclasses

    import jax
    import jax.numpy as jnp
    import numpy as np

    torch = pytest.importorskip("torch")
    from bench import torch_step
    from jaxblend.solve import VGGSpec, composite, objective, programs
    from jaxblend.vgg import load_vgg

    vgg = load_vgg()
    weights, _ = torch_step._load_weights(torch_step.DEFAULT_WEIGHTS_PATH)
    rng = np.random.default_rng(0)
    n, ss, top, left = 64, 40, 14, 10
    yy, xx = np.mgrid[:n, :n]
    target = 127 + 60 * np.sin(yy / 5.0)[..., None] * np.cos(xx[..., None] / 7.0 + np.arange(3))
    source = rng.uniform(0, 255, (ss, ss, 3))
    sy, sx = np.mgrid[:ss, :ss]
    mask = (((sy - 20) ** 2 + (sx - 19) ** 2) <= 36).astype(np.float64)
    s_canvas = target.copy()
    s_canvas[top : top + ss, left : left + ss] = source
    m_canvas = np.zeros((n, n))
    m_canvas[top : top + ss, left : left + ss] = mask
    x = rng.uniform(0, 255, (n, n, 3))
    t, s, m = (jnp.asarray(a, jnp.float32) for a in (target, s_canvas, m_canvas))
    spec = VGGSpec()
    full = preset("authors").stage1
    names = {"grad": "GRAD_WEIGHT", "style": "STYLE_WEIGHT", "content": "CONTENT_WEIGHT",
             "tv": "TV_WEIGHT"}  # fmt: skip
    for term, const in names.items():
        for c in names.values():
            monkeypatch.setattr(torch_step, c, getattr(full, term) if c == const else 0.0)
        step = torch_step.make_authors_step(weights, target, source, mask, (top, left))
        t_loss, t_grad = step(torch.from_numpy(x.transpose(2, 0, 1)[None].astype(np.float32)))
        t_grad = t_grad[0].numpy().transpose(1, 2, 0)

        cfg = dataclasses.replace(full, **{k: getattr(full, k) * (k == term) for k in names})
        data = programs(cfg, spec, True, "torch", 100, False).prepare(
            vgg.params, t, m, s, composite(s, t, m)
        )
        value, grad = jax.jit(
            jax.value_and_grad(lambda z, d, c=cfg: objective(c, spec, True, z, d))
        )(jnp.asarray(x, jnp.float32), data)
        assert float(value) == pytest.approx(float(t_loss), rel=2e-4), term
        g = np.asarray(grad)
        # L2 agreement; locally (a few percent of the pixels, one receptive field) the style
        # gradient can differ by ~1% of its largest entry where a deep activation sits at
        # ReLU's kink and float32 round-off turns it on in one framework and off in the
        # other. A wrong weight or normalisation moves every pixel.
        rel = np.linalg.norm(g - t_grad) / np.linalg.norm(t_grad)
        assert rel <= 3e-3, (term, rel)
        assert np.mean(np.abs(g - t_grad).max(-1) <= 1e-4 * np.abs(t_grad).max()) >= 0.9, term
