"""VGG architectures and input conventions: layer names, kernel shapes, preprocessing.

Tensors are named ``conv{b}_{i}.kernel`` (``3 x 3 x in x out`` float32, Flax's HWIO layout)
and ``conv{b}_{i}.bias``; block ``b`` of both VGG16 and VGG19 has the output channels
:data:`CHANNELS` ``[b - 1]`` and :data:`ARCH_BLOCKS` ``[arch][b - 1]`` convolutions.
"""

from __future__ import annotations

import re
from pathlib import Path

from jaxblend.errors import WeightError

__all__ = ["ARCH_BLOCKS", "CHANNELS", "PREPROCESSING", "conv_names", "conv_shapes"]

#: Number of 3x3 convolutions in each of the five blocks.
ARCH_BLOCKS: dict[str, tuple[int, ...]] = {
    "vgg16": (2, 2, 3, 3, 3),
    "vgg19": (2, 2, 4, 4, 4),
}
#: Output channels of the convolutions of each block.
CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 512)

#: Metadata describing each preprocessing convention (values are strings, as safetensors
#: metadata must be). The network input is ``(x * scale - mean) / std`` in ``channel_order``,
#: where ``x`` is RGB in 0-255 and ``scale`` is 1 for ``input_range`` "0-255", 1/255 for
#: "0-1". ``"caffe"``: the Keras/Caffe VGG convention. ``"torch"``: torchvision's.
#: ``"authors"``: what the Deep Image Blending code feeds torchvision's VGG16 -- raw 0-255 RGB
#: minus its ``MeanShift`` mean (0.4488, 0.4371, 0.4040), std 1 (``utils.py`` of
#: github.com/owenzlz/DeepImageBlending); an input convention for torchvision weights, not one
#: they were trained with.
PREPROCESSING: dict[str, dict[str, str]] = {
    "caffe": {
        "preprocessing": "caffe",
        "channel_order": "BGR",
        "mean": "103.939,116.779,123.68",
        "std": "1,1,1",
        "input_range": "0-255",
    },
    "torch": {
        "preprocessing": "torch",
        "channel_order": "RGB",
        "mean": "0.485,0.456,0.406",
        "std": "0.229,0.224,0.225",
        "input_range": "0-1",
    },
    "authors": {
        "preprocessing": "authors",
        "channel_order": "RGB",
        "mean": "0.4488,0.4371,0.404",
        "std": "1,1,1",
        "input_range": "0-255",
    },
}


def _check_arch(arch: str) -> None:
    if arch not in ARCH_BLOCKS:
        raise WeightError(f"unknown architecture {arch!r}: use one of {', '.join(ARCH_BLOCKS)}")


def conv_names(arch: str) -> tuple[str, ...]:
    """Names of the convolutions of ``arch`` in network order.

    Args:
      arch: ``"vgg16"`` or ``"vgg19"``.

    Returns:
      ``("conv1_1", "conv1_2", "conv2_1", ...)``.
    """
    _check_arch(arch)
    return tuple(f"conv{b + 1}_{i + 1}" for b, n in enumerate(ARCH_BLOCKS[arch]) for i in range(n))


def conv_shapes(arch: str) -> dict[str, tuple[int, int, int, int]]:
    """Kernel shapes (HWIO) of every convolution of ``arch``.

    Args:
      arch: ``"vgg16"`` or ``"vgg19"``.

    Returns:
      ``{"conv1_1": (3, 3, 3, 64), ...}``; the bias of each has shape ``(out,)``.
    """
    _check_arch(arch)
    shapes: dict[str, tuple[int, int, int, int]] = {}
    cin = 3
    for b, n in enumerate(ARCH_BLOCKS[arch]):
        for i in range(n):
            shapes[f"conv{b + 1}_{i + 1}"] = (3, 3, cin, CHANNELS[b])
            cin = CHANNELS[b]
    return shapes


def _parse_conv(name: str) -> tuple[int, int] | None:
    m = re.fullmatch(r"(?:conv|relu)(\d)_(\d)|block(\d)_conv(\d)", name)
    if not m:
        return None
    b, i = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    return int(b), int(i)


def _upto_names(arch: str, upto: str | None, src: Path) -> tuple[str, ...] | None:
    if upto is None:
        return None
    names = conv_names(arch)
    bi = _parse_conv(upto)
    name = f"conv{bi[0]}_{bi[1]}" if bi else upto
    if name not in names:
        raise WeightError(
            f"cannot convert {src}: --upto {upto!r} is not a convolution of {arch} "
            f"(use one of {names[0]} ... {names[-1]})"
        )
    return names[: names.index(name) + 1]
