"""VGG16/VGG19 feature extractor in Flax, computing only up to the deepest layer asked for.

Layers are named as in the paper's tables: ``conv{b}_{i}`` (3x3 convolution + bias),
``relu{b}_{i}`` and ``pool{b}`` (2x2 max-pool, stride 2). Input is RGB in ``[0, 255]``,
``H x W x 3`` or ``N x H x W x 3``; the network applies the preprocessing its weights were
trained with (``"caffe"``: BGR, ImageNet means subtracted; ``"torch"``: RGB / 255,
normalised by ImageNet mean and std) or, on request, the Deep Image Blending authors' input
convention (``"authors"``: raw 0-255 RGB minus their tiny ``MeanShift`` mean).

Networks by name (:func:`load_vgg`): ``"vgg16"``, the shipped Keras ImageNet VGG16 blocks 1-4
(the default); ``"vgg19"``, the Keras ImageNet VGG19 (all 16 convolutions); and
``"vgg16-torchvision"``, torchvision's ImageNet VGG16 (all 13 convolutions), which
``"vgg16-authors"`` feeds the authors' way. The last three come with ``jaxblend weights
fetch NAME``.

Pass the weights into jitted code as an argument -- ``jax.jit(lambda p, x: features(p, x,
layers))`` -- never close over them: XLA would constant-fold the convolutions at compile
time. Write for one image and use ``jax.vmap`` (or an ``N x H x W x 3`` array) for batches.

Example::

    model = load_vgg("vgg16")
    f = jax.jit(lambda p, x: features(p, x, ("relu1_2", "relu2_2")))
    acts = f(model.params, image)  # {"relu1_2": H x W x 64, "relu2_2": H/2 x W/2 x 128}

References:
  K. Simonyan and A. Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
  Recognition", ICLR 2015.
"""

from __future__ import annotations

import functools
import importlib.resources
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxblend.errors import InputError, WeightError
from jaxblend.weights import ARCH_BLOCKS, CHANNELS, PREPROCESSING, cache_dir, load_weights

__all__ = [
    "LAYERS",
    "NAMED",
    "SHIPPED_VGG16",
    "VGG",
    "VGG16_LAYERS",
    "VGG19_LAYERS",
    "VGGModel",
    "features",
    "layer_stride",
    "load_vgg",
    "preprocess",
]

#: File name of the VGG16 weights shipped with the package (blocks 1-4, Keras ImageNet).
SHIPPED_VGG16 = "vgg16_imagenet_blocks1-4.safetensors"

#: Networks :func:`load_vgg` knows by name besides ``"vgg16"``: name -> (file in
#: :func:`~jaxblend.weights.cache_dir`, preprocessing to use instead of the file's or None).
NAMED: dict[str, tuple[str, str | None]] = {
    "vgg19": ("vgg19.safetensors", None),
    "vgg16-torchvision": ("vgg16-torchvision.safetensors", None),
    "vgg16-authors": ("vgg16-torchvision.safetensors", "authors"),
}


def _means(meta: Mapping[str, str]) -> tuple[bool, bool, np.ndarray, np.ndarray | None]:
    """(BGR order, divide by 255, mean, std or None for 1) of a PREPROCESSING entry."""
    mean = np.array([float(v) for v in meta["mean"].split(",")], np.float32)
    std = np.array([float(v) for v in meta["std"].split(",")], np.float32)
    unit = meta["input_range"] == "0-1"
    return meta["channel_order"] == "BGR", unit, mean, None if np.all(std == 1) else std


_MEANS = {name: _means(meta) for name, meta in PREPROCESSING.items()}


def _layer_names(arch: str) -> tuple[str, ...]:
    names: list[str] = []
    for b, n in enumerate(ARCH_BLOCKS[arch], start=1):
        for i in range(1, n + 1):
            names += [f"conv{b}_{i}", f"relu{b}_{i}"]
        names.append(f"pool{b}")
    return tuple(names)


#: All layer names of each architecture, in network order.
LAYERS: dict[str, tuple[str, ...]] = {arch: _layer_names(arch) for arch in ARCH_BLOCKS}
VGG16_LAYERS: tuple[str, ...] = LAYERS["vgg16"]
VGG19_LAYERS: tuple[str, ...] = LAYERS["vgg19"]


def layer_stride(name: str) -> int:
    """Downsampling factor of a layer's output relative to the input image.

    Args:
      name: ``conv{b}_{i}``, ``relu{b}_{i}`` or ``pool{b}``.

    Returns:
      ``2 ** (b - 1)`` for convolutions and ReLUs of block ``b``, ``2 ** b`` for ``pool{b}``
      (so 1, 2, 4, 8, 16 for blocks 1-5).
    """
    if name.startswith("pool") and name[4:].isdigit():
        return 2 ** int(name[4:])
    if name in LAYERS["vgg19"]:
        return 2 ** (int(name[4]) - 1)
    raise ValueError(
        f"unknown VGG layer {name!r}: use conv{{b}}_{{i}}, relu{{b}}_{{i}} or pool{{b}}"
    )


def _check_layers(layers: Sequence[str] | str, arch: str) -> tuple[str, ...]:
    if arch not in LAYERS:
        raise ValueError(f"unknown VGG architecture {arch!r}: use one of {', '.join(LAYERS)}")
    layers = (layers,) if isinstance(layers, str) else tuple(layers)
    if not layers:
        raise ValueError("no VGG layers requested: pass e.g. ('relu1_2', 'relu2_2')")
    bad = [n for n in layers if n not in LAYERS[arch]]
    if bad:
        raise ValueError(
            f"unknown {arch} layer(s) {bad}: use conv{{b}}_{{i}}, relu{{b}}_{{i}} or pool{{b}}"
        )
    return layers


def _needed_convs(layers: tuple[str, ...], arch: str) -> tuple[str, tuple[str, ...]]:
    names = LAYERS[arch]
    deepest = max(layers, key=names.index)
    convs = tuple(n for n in names[: names.index(deepest) + 1] if n.startswith("conv"))
    return deepest, convs


def _missing_message(params: Mapping[str, Any], layers: tuple[str, ...], arch: str) -> str | None:
    deepest, convs = _needed_convs(layers, arch)
    for conv in convs:
        layer = params.get(conv)
        if not isinstance(layer, Mapping) or "kernel" not in layer or "bias" not in layer:
            have = [c for c in convs if c in params]
            span = f"they hold {have[0]}..{have[-1]}" if have else "they hold none of them"
            return (
                f"the {arch} weights have no {conv}, needed for {deepest} ({span}): ask for "
                "shallower layers or load weights with that block (`jaxblend weights fetch "
                "vgg19` or `vgg16-torchvision`, or `jaxblend weights convert`)"
            )
    return None


def preprocess(image: jax.Array, preprocessing: str) -> jax.Array:
    """Turn RGB ``[0, 255]`` pixels into the network's input.

    Args:
      image: ``... x 3`` RGB array in ``[0, 255]``.
      preprocessing: ``"caffe"`` -- ``x[..., ::-1] - (103.939, 116.779, 123.68)`` (BGR) --,
        ``"torch"`` -- ``(x / 255 - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)`` -- or
        ``"authors"`` -- ``x - (0.4488, 0.4371, 0.4040)`` (RGB, the ``MeanShift`` of the
        Deep Image Blending code in front of torchvision's VGG16).

    Returns:
      float32 array of the same shape.
    """
    x = jnp.asarray(image, jnp.float32)
    if preprocessing not in _MEANS:
        raise ValueError(f"unknown preprocessing {preprocessing!r}: use one of {', '.join(_MEANS)}")
    bgr, unit, mean, std = _MEANS[preprocessing]
    shape = (1,) * (x.ndim - 1) + (3,)
    if bgr:
        x = x[..., ::-1]
    if unit:
        x = x / 255.0
    x = x - jnp.asarray(mean).reshape(shape)
    return x if std is None else x / jnp.asarray(std).reshape(shape)


def _lax_precision(dtype: str, precision: str | None) -> lax.Precision | None:
    if precision is None:
        return lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else None
    if precision.upper() not in lax.Precision.__members__:
        names = ", ".join(n.lower() for n in lax.Precision.__members__)
        raise ValueError(f"unknown precision {precision!r}: use None or one of {names}")
    return lax.Precision[precision.upper()]


def _conv(x: jax.Array, kernel: jax.Array, dtype: str, precision: str | None = None) -> jax.Array:
    """Plain 3x3 same-padded NHWC/HWIO convolution in ``dtype``, float32 accumulation.

    ``precision`` None: ``HIGHEST`` (true float32) for float32, the backend's default for
    other dtypes; otherwise a ``lax.Precision`` name, e.g. ``"default"``.
    """
    return lax.conv_general_dilated(
        x.astype(dtype),
        kernel.astype(dtype),
        window_strides=(1, 1),
        padding=((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=_lax_precision(dtype, precision),
        preferred_element_type=jnp.float32,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv3x3(
    x: jax.Array, kernel: jax.Array, dtype: str = "float32", precision: str | None = None
) -> jax.Array:
    """3x3 convolution, padding 1, whose input gradient is itself a plain forward convolution.

    Mathematically the same as ``lax.conv_general_dilated``'s own derivative. The reason for
    the custom VJP is speed: XLA:CPU runs the transposed convolution that autodiff emits
    about 6x slower when it sits inside a ``lax.while_loop`` body (as every solver step
    does) than at top level, while a forward convolution with the flipped, transposed kernel
    (HWIO -> spatially reversed HWOI) runs at full speed in both places. The kernel
    gradient keeps the autodiff form; XLA drops it when only the input gradient is used.
    Like every ``jax.custom_vjp`` it supports reverse mode (``grad``, ``vjp``) and ``vmap``,
    not forward mode (``jvp``, ``jacfwd``). ``dtype`` and ``precision`` are as in
    :class:`VGG`; the backward convolution uses the same.
    """
    return _conv(x, kernel, dtype, precision)


def _conv3x3_fwd(x, kernel, dtype, precision):
    return _conv(x, kernel, dtype, precision), (x, kernel)


def _conv3x3_bwd(dtype, precision, residual, g):
    x, kernel = residual
    flipped = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)
    dx = _conv(g, flipped, dtype, precision).astype(x.dtype)
    dk = jax.vjp(lambda k: _conv(x, k, dtype, precision), kernel)[1](g)[0]
    return dx, dk


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)


def max_pool2(x: jax.Array) -> jax.Array:
    """2x2 max-pool, stride 2, of ``N x H x W x C`` (odd trailing rows/columns dropped).

    Written as a reshape and a max rather than ``reduce_window``: the same values, and a
    gradient XLA:CPU computes several times faster than ``select_and_scatter``. Where a
    window holds tied maxima the gradient is shared among them (zero for ReLU zeros).
    """
    n, h, w, c = x.shape
    x = x[:, : h - h % 2, : w - w % 2]
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class _Conv3x3(nn.Module):
    """3x3 convolution, padding 1, float32 parameters and float32 accumulation."""

    features: int
    dtype: Any = jnp.float32
    precision: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (3, 3, x.shape[-1], self.features)
        if not self.is_initializing():
            for kind, want in (("kernel", shape), ("bias", shape[-1:])):
                if not self.has_variable("params", kind):
                    raise WeightError(f"VGG weights lack {self.name}.{kind}; load a complete file")
                got = tuple(self.get_variable("params", kind).shape)
                if got != want:
                    raise WeightError(
                        f"VGG weights: {self.name}.{kind} has shape {got}, expected {want} "
                        "(wrong architecture or layout)"
                    )
        kernel = self.param("kernel", nn.initializers.lecun_normal(), shape, jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), shape[-1:], jnp.float32)
        y = conv3x3(x, kernel, jnp.dtype(self.dtype).name, self.precision)
        return y + bias.astype(jnp.float32).reshape(1, 1, 1, -1)


class VGG(nn.Module):
    """VGG16/VGG19 convolutional trunk returning named intermediate activations.

    Attributes:
      arch: ``"vgg16"`` or ``"vgg19"``.
      preprocessing: ``"caffe"``, ``"torch"`` or ``"authors"``: how images are turned into
        network input (:func:`preprocess`); the convention of the weights unless the
        authors' raw-input convention is asked for.
      dtype: compute dtype of the convolutions (e.g. ``jnp.bfloat16``); parameters stay
        float32 and convolutions accumulate and return float32.
      precision: ``None`` -- float32 convolutions at ``lax.Precision.HIGHEST`` (true
        float32, no TensorFloat-32), other dtypes at the backend's default -- or a
        ``lax.Precision`` name: ``"default"`` lets float32 convolutions use TensorFloat-32
        tensor cores on NVIDIA GPUs (on CPU it computes the same as ``None``).

    Parameters are ``{"params": {"conv1_1": {"kernel": 3x3xInxOut, "bias": Out}, ...}}``;
    only the convolutions up to the deepest requested layer are used, so weights for
    blocks 1-4 suffice for layers up to ``pool4``.
    """

    arch: str = "vgg16"
    preprocessing: str = "caffe"
    dtype: Any = jnp.float32
    precision: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, layers: tuple[str, ...]) -> dict[str, jax.Array]:
        """Run the network up to the deepest of ``layers``.

        Args:
          x: RGB image(s) in ``[0, 255]``, ``H x W x 3`` or ``N x H x W x 3``.
          layers: names of the activations to return (a tuple: it is static).

        Returns:
          Dict name -> activation, ``H' x W' x C`` (or ``N x H' x W' x C``), float32.
        """
        layers = _check_layers(layers, self.arch)
        if x.ndim not in (3, 4) or x.shape[-1] != 3:
            raise InputError(f"VGG input must be HxWx3 or NxHxWx3 RGB, got shape {x.shape}")
        single = x.ndim == 3
        h = preprocess(x[None] if single else x, self.preprocessing)
        names = LAYERS[self.arch]
        deepest = max(names.index(n) for n in layers)
        out: dict[str, jax.Array] = {}
        for name in names[: deepest + 1]:
            if name.startswith("conv"):
                h = _Conv3x3(
                    CHANNELS[int(name[4]) - 1],
                    dtype=self.dtype,
                    precision=self.precision,
                    name=name,
                )(h)
            elif name.startswith("relu"):
                h = nn.relu(h)
            else:
                h = max_pool2(h)
            if name in layers:
                out[name] = h[0] if single else h
        return out


def features(
    params: Mapping[str, Any],
    image: jax.Array,
    layers: Sequence[str] | str,
    *,
    arch: str = "vgg16",
    preprocessing: str = "caffe",
    dtype: Any = jnp.float32,
    precision: str | None = None,
) -> dict[str, jax.Array]:
    """VGG activations of an image, as a pure function of the parameters.

    Safe under ``jax.jit``/``jax.vmap``/``jax.grad`` with ``params`` as an argument; ``layers``
    and the keyword options must be static (close over them).

    Args:
      params: ``{"params": {"conv1_1": {...}, ...}}`` or the inner dict; only the
        convolutions up to the deepest requested layer are needed.
      image: RGB in ``[0, 255]``, ``H x W x 3`` or ``N x H x W x 3``.
      layers: layer names (``"relu1_2"``, ``"pool3"``, ...).
      arch: ``"vgg16"`` or ``"vgg19"``.
      preprocessing: ``"caffe"``, ``"torch"`` or ``"authors"`` (see :func:`preprocess`) --
        the weights' own convention unless deliberately another.
      dtype: convolution compute dtype (float32 parameters and accumulation regardless).
      precision: convolution precision, see :class:`VGG` (None: true float32).

    Returns:
      Dict layer name -> float32 activation ``H' x W' x C`` (batched if the input is).

    Raises:
      WeightError: ``params`` lacks a convolution the requested layers need.
      ValueError: unknown layer, architecture or preprocessing.
    """
    layers = _check_layers(layers, arch)
    inner = params["params"] if "params" in params else params
    msg = _missing_message(inner, layers, arch)
    if msg:
        raise WeightError(msg)
    module = VGG(arch=arch, preprocessing=preprocessing, dtype=dtype, precision=precision)
    return module.apply({"params": inner}, jnp.asarray(image), layers)


_features_jit = jax.jit(
    features, static_argnames=("layers", "arch", "preprocessing", "dtype", "precision")
)


class VGGModel(NamedTuple):
    """Loaded VGG weights plus the settings they need.

    Attributes:
      module: the :class:`VGG` module (architecture, preprocessing, dtype).
      params: ``{"params": {"conv1_1": {"kernel", "bias"}, ...}}`` of device arrays.
      arch: ``"vgg16"`` or ``"vgg19"``.
      preprocessing: ``"caffe"``, ``"torch"`` or ``"authors"``.
      path: the weight file they came from.
    """

    module: VGG
    params: dict[str, Any]
    arch: str
    preprocessing: str
    path: Path

    def features(self, image: jax.Array, layers: Sequence[str] | str) -> dict[str, jax.Array]:
        """Jitted :func:`features` with these weights (passed as an argument, not baked in).

        Args:
          image: RGB in ``[0, 255]``, ``H x W x 3`` or ``N x H x W x 3``.
          layers: layer names.

        Returns:
          Dict layer name -> float32 activation.
        """
        layers = _check_layers(layers, self.arch)
        msg = _missing_message(self.params["params"], layers, self.arch)
        if msg:
            raise WeightError(f"{self.path}: {msg}")
        return _features_jit(
            self.params,
            image,
            layers,
            arch=self.arch,
            preprocessing=self.preprocessing,
            dtype=self.module.dtype,
            precision=self.module.precision,
        )


def _shipped_path(name: str) -> Path:
    try:
        res = importlib.resources.files("jaxblend._weights") / name
        if res.is_file():
            return Path(str(res))
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parent.parent / "weights" / name


def _resolve(name_or_path: str | os.PathLike[str]) -> Path:
    if name_or_path == "vgg16":
        shipped = _shipped_path(SHIPPED_VGG16)
        if shipped.is_file():
            return shipped
        cached = cache_dir() / "vgg16.safetensors"
        if cached.is_file():
            return cached
        raise WeightError(
            f"the shipped VGG16 weights {SHIPPED_VGG16} are missing (looked in {shipped.parent}):"
            " reinstall jaxblend or run `jaxblend weights fetch vgg16`"
        )
    if isinstance(name_or_path, str) and name_or_path in NAMED:
        cached = cache_dir() / NAMED[name_or_path][0]
        if cached.is_file():
            return cached
        fetch = Path(NAMED[name_or_path][0]).stem
        arch = fetch.split("-")[0]
        raise WeightError(
            f"{fetch.upper() if arch == fetch else fetch} weights not found ({cached}): run "
            f"`jaxblend weights fetch {fetch}` (or convert a local file with `jaxblend weights "
            f"convert SRC --arch {arch} -o {cached}`)"
        )
    return Path(name_or_path)


def load_vgg(
    name_or_path: str | os.PathLike[str] = "vgg16",
    *,
    dtype: Any = None,
    precision: str | None = None,
    preprocessing: str | None = None,
) -> VGGModel:
    """Load VGG weights by name or path.

    Args:
      name_or_path: ``"vgg16"`` (the shipped Keras ImageNet weights, blocks 1-4),
        ``"vgg19"`` (``vgg19.safetensors`` in :func:`jaxblend.weights.cache_dir`, made by
        ``jaxblend weights fetch vgg19``: the Keras ImageNet VGG19, all five blocks),
        ``"vgg16-torchvision"`` (``vgg16-torchvision.safetensors`` there, made by ``jaxblend
        weights fetch vgg16-torchvision``: torchvision's ImageNet VGG16, all five blocks),
        ``"vgg16-authors"`` (the same weights with ``preprocessing="authors"``) or the path
        of a weight file.
      dtype: convolution compute dtype; None means float32.
      precision: convolution precision, see :class:`VGG` (None: true float32).
      preprocessing: the input convention (see :func:`preprocess`); None: the one the
        weights were trained with (from the file), or ``"authors"`` for ``"vgg16-authors"``.
        ``"authors"`` is what the Deep Image Blending code feeds torchvision's VGG16: raw
        0-255 RGB minus a small mean, no ``/ 255`` and no std.

    Returns:
      A :class:`VGGModel`.

    Raises:
      WeightError: the file is missing or invalid.
    """
    if preprocessing is not None and preprocessing not in PREPROCESSING:
        raise WeightError(
            f"unknown preprocessing {preprocessing!r}: use one of {', '.join(PREPROCESSING)}"
        )
    path = _resolve(name_or_path)
    params, meta = load_weights(path)
    params = jax.tree_util.tree_map(jnp.asarray, params)
    dt = jnp.dtype(jnp.float32 if dtype is None else dtype)
    if preprocessing is None and isinstance(name_or_path, str) and name_or_path in NAMED:
        preprocessing = NAMED[name_or_path][1]
    pre = preprocessing or meta["preprocessing"]
    module = VGG(arch=meta["arch"], preprocessing=pre, dtype=dt, precision=precision)
    return VGGModel(module, params, meta["arch"], pre, path)
