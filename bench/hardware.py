"""FLOP counts for VGG16 and measured compute ceilings of the machine, for roofline numbers.

Counting convention (:func:`vgg16_flops`):

- Only the 3x3 convolutions are counted: ``H * W * C_in * C_out * 9`` multiply-adds per layer
  (same padding, so the output has the input's spatial size), **2 FLOPs per multiply-add**.
  Bias adds, ReLUs and max pools are ignored (< 0.5 % of the total).
- The 2x2 max pool between blocks halves height and width (floor, as PyTorch and XLA do).
- Backward for the *input* gradient: every layer needs its dX convolution (a transposed 3x3
  conv with the same multiply-add count as its forward), the first layer's too, because we
  optimise the image. No dW is needed because the weights are frozen. So backward ≈ 1x
  forward and forward + backward ≈ 2x forward. (Training-style counting, with dW, gives the
  familiar 3x forward; that number is reported too, as ``forward_backward_with_dw_flops``.)

Check against the design notes: at 512 x 512 up to relu4_3 (10 convs, blocks 1-4) this gives
72.9 G multiply-adds = 145.9 GFLOP forward, i.e. DESIGN.md's "≈146 GFLOP" counts blocks 1-4
with 2 FLOPs per MAC. Its "≈440 GFLOP forward+backward" is the 3x (with dW) convention; with
frozen weights an input-gradient pass costs ≈292 GFLOP (2x). For the full 13-conv VGG16 at
224 x 224 the count is 15.35 GMAC = 30.7 GFLOP, the well-known figure.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "VGG16_CONVS",
    "authors_step_flops",
    "conv_gflops",
    "device_info",
    "matmul_gflops",
    "vgg16_flops",
]

#: (name, block, C_in, C_out) of the 13 VGG16 convolutions.
VGG16_CONVS = (
    ("conv1_1", 1, 3, 64),
    ("conv1_2", 1, 64, 64),
    ("conv2_1", 2, 64, 128),
    ("conv2_2", 2, 128, 128),
    ("conv3_1", 3, 128, 256),
    ("conv3_2", 3, 256, 256),
    ("conv3_3", 3, 256, 256),
    ("conv4_1", 4, 256, 512),
    ("conv4_2", 4, 512, 512),
    ("conv4_3", 4, 512, 512),
    ("conv5_1", 5, 512, 512),
    ("conv5_2", 5, 512, 512),
    ("conv5_3", 5, 512, 512),
)


def _last_index(upto: str) -> int:
    name = upto.replace("relu", "conv")
    names = [c[0] for c in VGG16_CONVS]
    if name not in names:
        raise ValueError(f"upto must be one of relu1_1 ... relu5_3 (or conv*), got {upto!r}")
    return names.index(name)


def vgg16_flops(height: int, width: int, upto: str = "relu4_3") -> dict:
    """Convolution FLOPs of a VGG16 forward pass up to (and including) layer ``upto``.

    Args:
      height, width: input size.
      upto: last layer, ``"relu1_1"`` ... ``"relu5_3"`` (``"conv…"`` names accepted too);
        ``"relu5_3"`` is the full 13-conv feature stack.

    Returns:
      dict with ``layers`` (per conv: name, h, w, c_in, c_out, macs, flops), ``forward_macs``,
      ``forward_flops`` (2 x MACs), ``backward_input_flops`` (dX of every layer = forward),
      ``forward_backward_flops`` (2x forward), ``forward_backward_with_dw_flops`` (3x forward,
      for comparison only) and ``convention`` (a sentence).
    """
    last = _last_index(upto)
    h, w = int(height), int(width)
    block = 1
    layers = []
    for name, b, cin, cout in VGG16_CONVS[: last + 1]:
        if b != block:
            h, w, block = h // 2, w // 2, b
        macs = h * w * cin * cout * 9
        layers.append(
            {
                "name": name,
                "h": h,
                "w": w,
                "c_in": cin,
                "c_out": cout,
                "macs": macs,
                "flops": 2 * macs,
            }
        )
    fwd_macs = sum(layer["macs"] for layer in layers)
    fwd = 2 * fwd_macs
    return {
        "height": int(height),
        "width": int(width),
        "upto": upto,
        "layers": layers,
        "forward_macs": fwd_macs,
        "forward_flops": fwd,
        "backward_input_flops": fwd,
        "forward_backward_flops": 2 * fwd,
        "forward_backward_with_dw_flops": 3 * fwd,
        "convention": "3x3 conv MACs x2, bias/ReLU/pool ignored; backward = dX of every layer "
        "(first included), no dW (frozen weights) => backward = forward",
    }


def authors_step_flops(size: int, source_size: int) -> dict:
    """FLOPs of one stage-1 evaluation as the authors' code does it versus one VGG pass pair.

    The authors' closure runs four forwards to relu4_3 (target and optimised image on the
    ``size`` canvas, masked source and masked blend crop at ``source_size``) and backward
    passes through the optimised image's VGG (to relu4_3) and the crop's (to relu2_2 only:
    nothing deeper reaches the content loss). A design that caches every constant needs one
    forward and one input-gradient backward on the canvas.
    """
    canvas = vgg16_flops(size, size)["forward_flops"]
    crop = vgg16_flops(source_size, source_size)["forward_flops"]
    crop_to_22 = vgg16_flops(source_size, source_size, "relu2_2")["forward_flops"]
    authors = 2 * canvas + 2 * crop + canvas + crop_to_22
    return {
        "size": size,
        "source_size": source_size,
        "authors_flops": authors,
        "cached_constants_flops": 2 * canvas,
        "ratio": authors / (2 * canvas),
    }


def _median_time(fn, args, repeats: int) -> tuple[float, list[float]]:
    jax.block_until_ready(fn(*args))  # compile + warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def matmul_gflops(
    n: int | None = None, dtype: str = "float32", repeats: int = 5, precision: str | None = None
) -> dict:
    """Measured dense ``n x n @ n x n`` matmul rate with jax.numpy on the default device.

    ``2 n^3`` FLOPs per product; jitted, ``block_until_ready``, median of ``repeats`` after
    one warm-up call. ``precision`` names the arithmetic as the VGG precisions do:
    ``"float32"`` (``Precision.HIGHEST``, true FP32), ``"tf32"`` (float32 operands at
    ``Precision.DEFAULT``: TensorFloat-32 on NVIDIA GPUs) or ``"bfloat16"`` (bfloat16
    operands, float32 accumulation); ``None`` keeps the old behaviour (``dtype`` operands at
    the default precision). ``n`` defaults to 2048 on CPU and 8192 elsewhere (a GPU needs
    large products to reach its rate). Returns ``gflops``, ``seconds`` (median), ``times``,
    ``n``, ``dtype``, ``precision``, ``device``.
    """
    if n is None:
        n = 2048 if jax.default_backend() == "cpu" else 8192
    lax_precision = None
    if precision is not None:
        dtype = "bfloat16" if precision == "bfloat16" else "float32"
        lax_precision = jax.lax.Precision.HIGHEST if precision == "float32" else None
    key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(key_a, (n, n), dtype=jnp.dtype(dtype))
    b = jax.random.normal(key_b, (n, n), dtype=jnp.dtype(dtype))

    def product(x, y):
        return jnp.matmul(x, y, precision=lax_precision, preferred_element_type=jnp.float32)

    seconds, times = _median_time(jax.jit(product), (a, b), repeats)
    flops = 2 * n**3
    return {
        "gflops": flops / seconds / 1e9,
        "seconds": seconds,
        "times": times,
        "n": n,
        "dtype": str(jnp.dtype(dtype)),
        "precision": precision,
        "flops": flops,
        "device": str(jax.devices()[0]),
    }


def conv_gflops(
    height: int = 128,
    width: int = 128,
    c_in: int = 128,
    c_out: int = 128,
    dtype: str = "float32",
    repeats: int = 5,
) -> dict:
    """Measured rate of one representative VGG layer: 3x3 conv, same padding, batch 1, NHWC.

    Default: 128 -> 128 channels at 128 x 128 (conv2_2 of a 256 x 256 input),
    ``2 * H * W * C_in * C_out * 9`` FLOPs, via ``jax.lax.conv_general_dilated``; jitted,
    median of ``repeats`` after a warm-up. A second, more realistic ceiling than a matmul.
    """
    key_x, key_k = jax.random.split(jax.random.PRNGKey(1))
    x = jax.random.normal(key_x, (1, height, width, c_in), dtype=jnp.dtype(dtype))
    k = jax.random.normal(key_k, (3, 3, c_in, c_out), dtype=jnp.dtype(dtype))

    def conv(x, k):
        return jax.lax.conv_general_dilated(
            x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    seconds, times = _median_time(jax.jit(conv), (x, k), repeats)
    flops = 2 * height * width * c_in * c_out * 9
    return {
        "gflops": flops / seconds / 1e9,
        "seconds": seconds,
        "times": times,
        "shape": [height, width, c_in, c_out],
        "dtype": str(jnp.dtype(dtype)),
        "flops": flops,
        "device": str(jax.devices()[0]),
    }


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def device_info() -> dict:
    """Backend, device and package versions (read from metadata; nothing heavy is imported)."""
    dev = jax.devices()[0]
    return {
        "jax_backend": jax.default_backend(),
        "device_kind": dev.device_kind,
        "device": str(dev),
        "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "versions": {
            name: _version(name)
            for name in ("jax", "jaxlib", "flax", "optax", "jaxopt", "numpy", "torch")
        },
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "numpy_version": np.__version__,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(device_info(), indent=1))
    for s in (256, 512):
        f = vgg16_flops(s, s)
        fwd, fb = f["forward_flops"] / 1e9, f["forward_backward_flops"] / 1e9
        print(s, "forward GFLOP", fwd, "fwd+bwd", fb)
        print(json.dumps(authors_step_flops(s, round(s * 300 / 512))))
    print(json.dumps(matmul_gflops()))
    print(json.dumps(conv_gflops()))
