"""LPIPS (AlexNet) checked against the ``lpips`` package's own torch code on the same weights."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from jaxblend.errors import WeightError
from jaxblend.lpips import ALEXNET_CONVS, alexnet_features, load_lpips, lpips_distance

CASES = Path(__file__).resolve().parents[1] / "jaxblend" / "examples" / "case1"


def _img(name: str, box=None, size=64) -> np.ndarray:
    im = Image.open(CASES / name).convert("RGB")
    if box:
        im = im.crop(box)
    return np.asarray(im.resize((size, size), Image.BICUBIC), np.float32)


def _torch_alexnet_features(torch):
    """torchvision's AlexNet ``features`` layout, written out (torchvision is not installed)."""
    nn = torch.nn
    layers: list = []
    for i, (_, k, stride, pad, cin, cout) in enumerate(ALEXNET_CONVS):
        if i in (1, 2):
            layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
        layers += [nn.Conv2d(cin, cout, k, stride=stride, padding=pad), nn.ReLU(inplace=True)]
    layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
    return nn.Sequential(*layers)


@pytest.fixture(scope="module")
def lpips_torch():
    """The ``lpips`` package's LPIPS(net='alex') with our trunk weights loaded into it."""
    torch = pytest.importorskip("torch")
    if "torchvision" not in sys.modules:
        try:
            import torchvision  # noqa: F401
        except ImportError:  # the lpips package imports it only to build the trunk
            tv = types.ModuleType("torchvision")
            tv.models = types.SimpleNamespace(
                alexnet=lambda pretrained=False, **kw: types.SimpleNamespace(
                    features=_torch_alexnet_features(torch)
                )
            )
            sys.modules["torchvision"] = tv
    lpips = pytest.importorskip("lpips")
    model = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
    ours = load_lpips().params
    convs = [m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 5
    with torch.no_grad():
        for conv, (name, *_rest) in zip(convs, ALEXNET_CONVS):
            k = np.asarray(ours[name]["kernel"]).transpose(3, 2, 0, 1)  # HWIO -> OIHW
            conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(k)))
            conv.bias.copy_(torch.from_numpy(np.array(ours[name]["bias"])))
    return torch, model


def _to_torch(torch, x):
    return torch.from_numpy(x.transpose(2, 0, 1)[None] / 127.5 - 1.0).float()


def test_linear_layers_equal_the_lpips_package(lpips_torch):
    _, model = lpips_torch
    ours = load_lpips().params["lin"]
    for lin, w in zip(model.lins, ours):
        theirs = lin.model[-1].weight.detach().numpy().reshape(-1)
        np.testing.assert_array_equal(np.asarray(w), theirs)


@pytest.mark.parametrize(
    "pair",
    [
        (("source.png", None), ("target.png", None)),
        (("target.png", (100, 80, 400, 380)), ("target.png", (110, 90, 410, 390))),
        (("source.png", (50, 50, 450, 450)), ("source.png", None)),
    ],
)
def test_lpips_matches_the_lpips_package(lpips_torch, pair):
    torch, model = lpips_torch
    a, b = (_img(n, box) for n, box in pair)
    with torch.no_grad():
        want = float(model(_to_torch(torch, a), _to_torch(torch, b)).item())
    got = float(jax.jit(lpips_distance)(load_lpips().params, a, b))
    assert want > 0.01
    assert abs(got - want) <= 1e-5, (got, want)


def test_alexnet_features_match_torch(lpips_torch):
    torch, model = lpips_torch
    x = _img("source.png")
    with torch.no_grad():
        inp = model.scaling_layer(_to_torch(torch, x))
        want = [t[0].numpy().transpose(1, 2, 0) for t in model.net(inp)]
    got = alexnet_features(load_lpips().params, x)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(np.asarray(g), w, atol=1e-4 * float(np.abs(w).max()))


def test_identical_images_have_zero_distance():
    x = _img("target.png")
    assert float(lpips_distance(load_lpips().params, x, x)) == 0.0


def test_foreign_file_is_refused(tmp_path):
    from jaxblend.weights import save_weights

    p = save_weights(tmp_path / "x.safetensors", {"a": np.zeros(2, np.float32)}, {"format": "x"})
    with pytest.raises(WeightError, match="not a jaxblend LPIPS weight file"):
        load_lpips(p)


def test_shipped_file_sha256_matches_readme():
    import hashlib
    import re

    repo = Path(__file__).resolve().parents[1]
    readme = (repo / "weights" / "README.md").read_text()
    section = readme[readme.index("## `lpips_alexnet.safetensors`") :]
    data = (repo / "weights" / "lpips_alexnet.safetensors").read_bytes()
    shas = re.findall(r"\b[0-9a-f]{64}\b", section)
    assert hashlib.sha256(data).hexdigest() in shas
    assert load_lpips().metadata["format"] == "jaxblend-lpips"
