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


def test_preset_changes_and_errors():
    cfg = preset("paper", canvas=256, steps1=5)
    assert cfg.canvas == 256 and cfg.stage1.steps == 5 and cfg.stage2_content == "stage1"
    with pytest.raises(InputError, match="unknown preset 'nope'"):
        preset("nope")
    with pytest.raises(InputError, match="canvs"):
        preset("default", canvs=3)
    assert set(PRESETS) >= {"default", "paper", "authors", "v0.1"}


def test_style_strength_is_validated():
    with pytest.raises(InputError, match="style_strength"):
        BlendConfig(style_strength=-1)
    with pytest.raises(InputError, match="style_strength"):
        BlendConfig(style_strength=float("nan"))
