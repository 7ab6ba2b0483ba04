"""The authors' stage-1 objective evaluation, re-expressed in PyTorch, for benchmarking.

This is a timing baseline: one call of the function returned by :func:`make_authors_step` does
what one call of the L-BFGS ``closure`` of the first pass in the authors' ``run.py``
(github.com/owenzlz/DeepImageBlending, ``run.py`` + ``utils.py``, MIT) does:

1. blend ``I_B = I_Z * M + I_T * (1 - M)``;
2. gradient loss: Laplacian of ``I_B`` by a fixed 3x3 conv ``[[0,-1,0],[-1,4,-1],[0,-1,0]]``
   (padding 1, one single-channel conv per colour channel, as ``laplacian_filter_tensor``)
   against the guidance ``lap(I_S) * mask`` (computed on the *source-sized* image, pasted into
   the canvas) ``+ lap(I_T) * (1 - M)``, mean of the three per-channel MSEs, times 1e4;
3. style loss: VGG16 forward of the target (recomputed every evaluation, as the authors do)
   and of the optimised image, Gram ``F F^T / (C H W)`` at relu1_2, relu2_2, relu3_3, relu4_3,
   MSE between Grams averaged over the four layers, times 1e4;
4. content loss: VGG16 forward of the masked source ``I_S * mask`` (also recomputed every
   evaluation) and of the masked blend crop ``I_B[box] * mask``, MSE at relu2_2, times 1;
5. TV loss: sum of absolute horizontal and vertical differences of ``I_B``, times 1e-6;
6. one ``loss.backward()`` to the optimised image (VGG weights frozen: no weight gradients).

So every evaluation runs four VGG16 forwards to relu4_3 (two on the canvas, two on the
source-sized crop) and backward passes through two of them (the optimised image's on the
canvas, to relu4_3; the blend crop's, to relu2_2 only, because only relu2_2 reaches the loss).

Deviations from the authors' code, all deliberate:

- Preprocessing. The authors feed raw RGB 0-255 values into torchvision's VGG16 after a
  ``MeanShift`` that subtracts (0.4488, 0.4371, 0.4040), i.e. practically nothing. Our weights
  are the Keras/Caffe ImageNet VGG16 (blocks 1-4), which expect BGR 0-255 with the means
  (B, G, R) = (103.939, 116.779, 123.68) subtracted. The network here does exactly that as its
  first operation (a channel flip and a subtraction, same cost as their 1x1 ``MeanShift``
  conv), so that this module and ``jaxblend`` do identical maths on identical inputs.
- Weights come from our weight dict (``conv{b}_{i}.kernel`` HWIO, ``conv{b}_{i}.bias``), not
  ``torchvision.models.vgg16(pretrained=True)``; the architecture (3x3 convs, padding 1, ReLU,
  2x2 max pool between blocks, slices ending at relu1_2/2_2/3_3/4_3) is the same.
- The source placement is given as ``box = (top, left)`` (or ``(top, left, h, w)``) of the
  source-sized crop on the canvas, instead of the authors' centre ``(x, y)`` with
  ``int(x - ss*0.5):int(x + ss*0.5)`` slices; :func:`authors_box` converts their convention.
- The style loss is evaluated on the optimised image ``I_Z`` itself (``vgg(mean_shift(
  input_img))``), as the authors' ``run.py`` does, not on the blend ``I_B`` as the paper's
  eq. (8) says. ``style_on="blend"`` switches to the paper's choice; the cost is identical.
- The closure's bookkeeping (``optimizer.zero_grad()``, printing with ``.item()``, the run
  counter) is left out; the step takes the image and returns ``(loss, grad)``.
- ``content_weight`` is applied once (the authors multiply by it twice; it is 1 anyway).

It runs on CPU or a CUDA GPU (``device``; weights, constants and the image all live there).
:func:`time_authors_step` times it in true float32 -- TensorFloat-32 off for cuDNN
convolutions and cuBLAS matmuls while it runs, as jaxblend's ``"float32"`` precision
(``lax.Precision.HIGHEST``) -- or, with ``tf32=True``, with PyTorch's defaults (TF32 cuDNN
convolutions, as jaxblend's ``"tf32"``), and synchronises the GPU before reading the clock.

Use ``python -m bench.torch_step --sizes 256 512 [--device cuda]`` to time it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "CAFFE_MEAN_BGR",
    "STYLE_LAYERS",
    "VGG16_BLOCKS",
    "VggOutputs",
    "authors_box",
    "build_torch_vgg16",
    "default_device",
    "make_authors_step",
    "make_case_inputs",
    "random_vgg16_weights",
    "time_authors_step",
]

#: Keras/Caffe ImageNet means, in (B, G, R) order, for 0-255 inputs.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
#: Layers whose activations the network returns (the authors' ``Vgg16`` slices).
STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
#: (block, number of convs) for VGG16 blocks 1-4.
VGG16_BLOCKS = ((1, 2), (2, 2), (3, 3), (4, 3))

GRAD_WEIGHT = 1e4
STYLE_WEIGHT = 1e4
CONTENT_WEIGHT = 1.0
TV_WEIGHT = 1e-6

DEFAULT_WEIGHTS_PATH = (
    Path(__file__).resolve().parent.parent / "weights" / "vgg16_imagenet_blocks1-4.safetensors"
)

VggOutputs = namedtuple("VggOutputs", STYLE_LAYERS)


def _conv_names() -> list[tuple[int, str]]:
    return [(b, f"conv{b}_{i}") for b, n in VGG16_BLOCKS for i in range(1, n + 1)]


def random_vgg16_weights(seed: int = 0, dtype=np.float32) -> dict[str, np.ndarray]:
    """He-initialised stand-in for the VGG16 blocks 1-4 weight dict (same keys and shapes).

    Kernels are HWIO ``(3, 3, I, O)``, biases ``(O,)``; for development and tests only.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    cin = 3
    for b, name in _conv_names():
        cout = 64 * 2 ** (b - 1)
        std = np.sqrt(2.0 / (9 * cin))
        out[f"{name}.kernel"] = (rng.standard_normal((3, 3, cin, cout)) * std).astype(dtype)
        out[f"{name}.bias"] = (rng.standard_normal(cout) * 0.1).astype(dtype)
        cin = cout
    return out


class _TorchVGG16(torch.nn.Module):
    """VGG16 blocks 1-4 (NCHW), Caffe preprocessing inside, returns the four style layers."""

    def __init__(self, weights: Mapping[str, np.ndarray], dtype: torch.dtype) -> None:
        super().__init__()
        self.blocks = torch.nn.ModuleList()
        cin = 3
        for b, n in VGG16_BLOCKS:
            block = torch.nn.ModuleList()
            for i in range(1, n + 1):
                name = f"conv{b}_{i}"
                kernel = np.asarray(weights[f"{name}.kernel"])
                bias = np.array(weights[f"{name}.bias"])  # a copy: torch needs it writable
                if kernel.ndim != 4 or kernel.shape[:3] != (3, 3, cin):
                    raise ValueError(
                        f"{name}.kernel: expected (3, 3, {cin}, O), got {kernel.shape}"
                    )
                cout = kernel.shape[3]
                if bias.shape != (cout,):
                    raise ValueError(f"{name}.bias: expected ({cout},), got {bias.shape}")
                conv = torch.nn.Conv2d(cin, cout, kernel_size=3, padding=1, dtype=dtype)
                with torch.no_grad():
                    # HWIO -> OIHW; both frameworks compute a cross-correlation.
                    conv.weight.copy_(
                        torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))).to(
                            dtype
                        )
                    )
                    conv.bias.copy_(torch.from_numpy(bias).to(dtype))
                block.append(conv)
                cin = cout
            self.blocks.append(block)
        self.register_buffer("mean_bgr", torch.tensor(CAFFE_MEAN_BGR, dtype=dtype).view(1, 3, 1, 1))
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> VggOutputs:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected an NCHW RGB batch (N, 3, H, W), got {tuple(x.shape)}")
        h = x[:, [2, 1, 0]] - self.mean_bgr  # RGB 0-255 -> BGR minus Caffe means
        outs = []
        for k, block in enumerate(self.blocks):
            if k > 0:
                h = F.max_pool2d(h, kernel_size=2, stride=2)
            for conv in block:
                h = F.relu(conv(h))
            outs.append(h)
        return VggOutputs(*outs)


def build_torch_vgg16(
    weights: Mapping[str, np.ndarray], dtype: torch.dtype = torch.float32
) -> torch.nn.Module:
    """VGG16 blocks 1-4 in PyTorch from our weight dict, frozen, in eval mode.

    Args:
      weights: ``conv{b}_{i}.kernel`` (HWIO, 3x3xIxO) and ``conv{b}_{i}.bias`` for conv1_1 ...
        conv4_3 (extra keys, e.g. block 5, are ignored).
      dtype: parameter dtype (``torch.float64`` for finite-difference tests).

    Returns:
      A module mapping an NCHW **RGB, 0-255** batch to the namedtuple
      ``VggOutputs(relu1_2, relu2_2, relu3_3, relu4_3)`` (NCHW). The Caffe preprocessing
      (RGB->BGR, subtract (103.939, 116.779, 123.68)) is the module's first operation.
    """
    return _TorchVGG16(weights, dtype).eval()


def gram_matrix(y: torch.Tensor) -> torch.Tensor:
    """``F F^T / (C H W)`` per batch element, as the authors' ``gram_matrix``."""
    b, ch, h, w = y.size()
    features = y.reshape(b, ch, w * h)
    return features.bmm(features.transpose(1, 2)) / (ch * h * w)


def _laplacian_conv(dtype: torch.dtype) -> torch.nn.Conv2d:
    conv = torch.nn.Conv2d(1, 1, kernel_size=3, stride=1, padding=1, bias=False, dtype=dtype)
    lap = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]], dtype=dtype)
    with torch.no_grad():
        conv.weight.copy_(lap.view(1, 1, 3, 3))
    conv.requires_grad_(False)
    return conv


def _laplacian_per_channel(conv: torch.nn.Conv2d, img: torch.Tensor) -> list[torch.Tensor]:
    """The authors' ``laplacian_filter_tensor``: one single-channel conv per colour channel."""
    return [conv(img[:, c].unsqueeze(1)).squeeze(1) for c in range(img.shape[1])]


def authors_box(x_center: int, y_center: int, source_size: int) -> tuple[int, int, int, int]:
    """The authors' placement (centre row ``x``, centre column ``y``, source side ``ss``) as
    ``(top, left, height, width)``: rows ``int(x - ss*0.5):int(x + ss*0.5)``, same for columns.
    """
    top, bottom = int(x_center - source_size * 0.5), int(x_center + source_size * 0.5)
    left, right = int(y_center - source_size * 0.5), int(y_center + source_size * 0.5)
    return top, left, bottom - top, right - left


def _to_nchw(img: np.ndarray, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return (
        torch.from_numpy(np.ascontiguousarray(np.asarray(img).transpose(2, 0, 1)))
        .to(device=device, dtype=dtype)
        .unsqueeze(0)
    )


def default_device() -> str:
    """``"cuda"`` where PyTorch sees a CUDA GPU, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _exact_float32(device: torch.device) -> Iterator[dict]:
    """TensorFloat-32 off for cuDNN convolutions and cuBLAS matmuls inside the block (CUDA
    only; the previous settings are restored). Yields the settings in force, to record.

    Uses the ``fp32_precision`` flags where PyTorch has them (2.9 and later: mixing them with
    the legacy ``allow_tf32`` flags raises), else ``allow_tf32``.
    """
    if device.type != "cuda":
        yield {"device": str(device), "tf32": "n/a (CPU)"}
        return
    b = torch.backends
    new_api = hasattr(b.cudnn, "conv") and hasattr(b.cudnn.conv, "fp32_precision")
    if new_api:
        flags = [
            (b.cudnn.conv, "fp32_precision", "ieee"),
            (b.cuda.matmul, "fp32_precision", "ieee"),
        ]
        names = ("cudnn.conv.fp32_precision", "cuda.matmul.fp32_precision")
    else:
        flags = [(b.cudnn, "allow_tf32", False), (b.cuda.matmul, "allow_tf32", False)]
        names = ("cudnn.allow_tf32", "cuda.matmul.allow_tf32")
    previous = [getattr(obj, attr) for obj, attr, _ in flags]
    try:
        for obj, attr, value in flags:
            setattr(obj, attr, value)
        yield {
            "device": str(device),
            "tf32": "off",
            **{f"torch.backends.{n}": v for n, (_, _, v) in zip(names, flags)},
            "torch.backends.cudnn.benchmark": bool(b.cudnn.benchmark),
        }
    finally:
        for (obj, attr, _), value in zip(flags, previous):
            setattr(obj, attr, value)


@contextlib.contextmanager
def _pytorch_defaults(device: torch.device) -> Iterator[dict]:
    """PyTorch's default float32 settings inside the block, what the authors' users get:
    cuDNN convolutions may use TensorFloat-32 (``torch.backends.cudnn.allow_tf32`` True),
    cuBLAS matmuls may not (``torch.backends.cuda.matmul.allow_tf32`` False). Set
    explicitly (and restored after), so an earlier change of the flags does not leak in.
    Yields the settings in force, to record."""
    if device.type != "cuda":
        yield {"device": str(device), "tf32": "n/a (CPU)"}
        return
    b = torch.backends
    new_api = hasattr(b.cudnn, "conv") and hasattr(b.cudnn.conv, "fp32_precision")
    if new_api:
        flags = [
            (b.cudnn.conv, "fp32_precision", "tf32"),
            (b.cuda.matmul, "fp32_precision", "ieee"),
        ]
        names = ("cudnn.conv.fp32_precision", "cuda.matmul.fp32_precision")
    else:
        flags = [(b.cudnn, "allow_tf32", True), (b.cuda.matmul, "allow_tf32", False)]
        names = ("cudnn.allow_tf32", "cuda.matmul.allow_tf32")
    previous = [getattr(obj, attr) for obj, attr, _ in flags]
    try:
        for obj, attr, value in flags:
            setattr(obj, attr, value)
        yield {
            "device": str(device),
            "tf32": "on (PyTorch defaults: convolutions)",
            **{f"torch.backends.{n}": v for n, (_, _, v) in zip(names, flags)},
            "torch.backends.cudnn.benchmark": bool(b.cudnn.benchmark),
        }
    finally:
        for (obj, attr, _), value in zip(flags, previous):
            setattr(obj, attr, value)


def make_authors_step(
    weights: Mapping[str, np.ndarray],
    target: np.ndarray,
    source: np.ndarray,
    mask: np.ndarray,
    box: Sequence[int],
    *,
    style_on: str = "input",
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The authors' stage-1 objective and its gradient, one evaluation per call.

    Args:
      weights: VGG16 blocks 1-4 weight dict (see :func:`build_torch_vgg16`).
      target: ``(H, W, 3)`` RGB canvas, 0-255.
      source: ``(h, w, 3)`` RGB source, 0-255, already at its size on the canvas.
      mask: ``(h, w)`` source-sized mask; any value > 0 is inside.
      box: ``(top, left)`` or ``(top, left, h, w)`` of the source on the canvas.
      style_on: ``"input"`` (the authors' code: Grams of the optimised image) or ``"blend"``
        (the paper: Grams of the blend).
      dtype: computation dtype.
      device: where the network, the constants and the computation live (``"cpu"``,
        ``"cuda"``, ...); ``x`` is moved there.

    Returns:
      ``step(x) -> (loss, grad)`` with ``x`` the optimised image, ``(1, 3, H, W)`` RGB 0-255;
      ``loss`` a 0-d tensor, ``grad`` its gradient with respect to ``x`` (same shape). Each
      call runs the four VGG forwards and the backward pass exactly as the authors' closure.
    """
    if style_on not in ("input", "blend"):
        raise ValueError(f"style_on must be 'input' or 'blend', got {style_on!r}")
    target = np.asarray(target)
    source = np.asarray(source)
    mask = np.asarray(mask)
    if target.ndim != 3 or target.shape[2] != 3:
        raise ValueError(f"target must be (H, W, 3), got {target.shape}")
    if source.ndim != 3 or source.shape[2] != 3:
        raise ValueError(f"source must be (h, w, 3), got {source.shape}")
    ss_h, ss_w = source.shape[:2]
    if mask.shape != (ss_h, ss_w):
        raise ValueError(f"mask must be {(ss_h, ss_w)} like the source, got {mask.shape}")
    top, left = int(box[0]), int(box[1])
    if len(box) == 4 and (int(box[2]), int(box[3])) != (ss_h, ss_w):
        raise ValueError(f"box size {tuple(box[2:])} differs from the source {(ss_h, ss_w)}")
    th, tw = target.shape[:2]
    if top < 0 or left < 0 or top + ss_h > th or left + ss_w > tw:
        raise ValueError(f"box {(top, left, ss_h, ss_w)} does not fit the canvas {(th, tw)}")
    rows, cols = slice(top, top + ss_h), slice(left, left + ss_w)

    device = torch.device(device)
    vgg = build_torch_vgg16(weights, dtype).to(device)
    lap = _laplacian_conv(dtype).to(device)
    mse = torch.nn.MSELoss()

    mask01 = (mask > 0).astype(np.float64)
    canvas_mask_np = np.zeros((th, tw))
    canvas_mask_np[rows, cols] = mask01
    on = {"device": device, "dtype": dtype}
    canvas_mask = torch.from_numpy(canvas_mask_np).to(**on).expand(1, 3, th, tw).contiguous()
    mask_img = torch.from_numpy(mask01).to(**on).expand(1, 3, ss_h, ss_w).contiguous()
    source_img = _to_nchw(source, dtype, device)
    target_img = _to_nchw(target, dtype, device)

    # compute_gt_gradient: once, before the optimisation loop (as the authors do).
    with torch.no_grad():
        src_lap = _laplacian_per_channel(lap, source_img)
        tgt_lap = _laplacian_per_channel(lap, target_img)
        gt_gradient = []
        for c in range(3):
            fg = torch.zeros(1, th, tw, **on)
            fg[:, rows, cols] = src_lap[c] * mask_img[:, c]
            gt_gradient.append(fg + tgt_lap[c] * (1.0 - canvas_mask[:, c]))

    def step(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if tuple(x.shape) != (1, 3, th, tw):
            raise ValueError(f"x must be (1, 3, {th}, {tw}), got {tuple(x.shape)}")
        input_img = x.detach().to(**on).requires_grad_(True)
        blend_img = input_img * canvas_mask + target_img * (canvas_mask - 1) * (-1)

        pred_gradient = _laplacian_per_channel(lap, blend_img)
        grad_loss = 0
        for c in range(len(pred_gradient)):
            grad_loss = grad_loss + mse(pred_gradient[c], gt_gradient[c])
        grad_loss = grad_loss / len(pred_gradient) * GRAD_WEIGHT

        target_features_style = vgg(target_img)  # recomputed every evaluation, as theirs
        target_gram_style = [gram_matrix(y) for y in target_features_style]
        blend_features_style = vgg(input_img if style_on == "input" else blend_img)
        blend_gram_style = [gram_matrix(y) for y in blend_features_style]
        style_loss = 0
        for layer in range(len(blend_gram_style)):
            style_loss = style_loss + mse(blend_gram_style[layer], target_gram_style[layer])
        style_loss = style_loss / len(blend_gram_style) * STYLE_WEIGHT

        blend_obj = blend_img[:, :, rows, cols]
        source_object_features = vgg(source_img * mask_img)  # recomputed, as theirs
        blend_object_features = vgg(blend_obj * mask_img)
        content_loss = CONTENT_WEIGHT * mse(
            blend_object_features.relu2_2, source_object_features.relu2_2
        )

        tv_loss = torch.sum(torch.abs(blend_img[:, :, :, :-1] - blend_img[:, :, :, 1:])) + (
            torch.sum(torch.abs(blend_img[:, :, :-1, :] - blend_img[:, :, 1:, :]))
        )
        tv_loss = tv_loss * TV_WEIGHT

        loss = grad_loss + style_loss + content_loss + tv_loss
        loss.backward()
        return loss.detach(), input_img.grad.detach()

    return step


def make_case_inputs(
    size: int, *, seed: int = 0, source_frac: float = 300 / 512
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """Synthetic inputs with case1's geometry scaled to a ``size`` x ``size`` canvas.

    case1 (the authors' run): 512 canvas, 300 source, centre at row 200, column 235. Returns
    ``(target, source, mask, box)``; images are random 0-255 RGB, the mask an ellipse.
    """
    rng = np.random.default_rng(seed)
    ss = max(2, int(round(size * source_frac)))
    box = authors_box(int(round(size * 200 / 512)), int(round(size * 235 / 512)), ss)
    top, left, h, w = box
    if top < 0 or left < 0 or top + h > size or left + w > size:
        raise ValueError(f"source of {ss} does not fit a {size} canvas at case1's placement")
    target = rng.uniform(0, 255, (size, size, 3))
    source = rng.uniform(0, 255, (h, w, 3))
    yy, xx = np.mgrid[0:h, 0:w]
    mask = (((yy - (h - 1) / 2) / (0.4 * h)) ** 2 + ((xx - (w - 1) / 2) / (0.4 * w)) ** 2) <= 1
    return target, source, mask.astype(np.uint8), box


def time_authors_step(
    weights: Mapping[str, np.ndarray],
    size: int,
    repeats: int = 3,
    threads: int | None = None,
    *,
    warmup: int = 1,
    seed: int = 0,
    device: str | torch.device | None = None,
    tf32: bool = False,
) -> dict:
    """Median wall time of one authors' stage-1 evaluation on a ``size`` x ``size`` canvas.

    Uses :func:`make_case_inputs` (case1's geometry) and float32: on a GPU with
    TensorFloat-32 off (``tf32=False``, true FP32 as jaxblend's ``"float32"``) or with
    PyTorch's defaults (``tf32=True``: TF32 convolutions, as the authors' users run it).
    ``threads`` (CPU threads) defaults to ``os.cpu_count()``; the previous torch
    thread count is restored afterwards. ``device`` defaults to :func:`default_device`. The
    ``warmup`` calls run first (cuDNN picks its kernels there); each timed call starts and
    ends with a device synchronisation.

    Returns:
      dict with ``seconds_per_eval`` (median), ``times`` (all timed repeats), ``warmup``,
      ``size``, ``source_size``, ``box``, ``threads``, ``device``, ``device_name``,
      ``precision`` (the TF32 settings in force), ``torch_version``, ``loss``.
    """
    dev = torch.device(device if device is not None else default_device())
    n_threads = int(threads) if threads else (os.cpu_count() or 1)
    previous = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        target, source, mask, box = make_case_inputs(size, seed=seed)
        step = make_authors_step(weights, target, source, mask, box, device=dev)
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(1, 3, size, size, generator=gen).to(dev)
        times = []
        loss = float("nan")
        settings = _pytorch_defaults(dev) if tf32 else _exact_float32(dev)
        with settings as precision:
            for _ in range(warmup):
                step(x)
            for _ in range(repeats):
                _synchronize(dev)
                t0 = time.perf_counter()
                loss_t, grad = step(x)
                _synchronize(dev)
                times.append(time.perf_counter() - t0)
                loss = float(loss_t)
                del grad
    finally:
        torch.set_num_threads(previous)
    return {
        "seconds_per_eval": statistics.median(times),
        "times": times,
        "warmup": warmup,
        "size": size,
        "source_size": box[2],
        "box": list(box),
        "threads": n_threads,
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "precision": precision,
        "torch_version": torch.__version__,
        "loss": loss,
    }


def _load_weights(path: Path | None) -> tuple[dict[str, np.ndarray], str]:
    if path is not None and path.exists():
        from jaxblend.weights import load_weights  # lazy: only when the file exists

        weights, _ = load_weights(path)
        flat = {
            f"{name}.{part}": np.array(layer[part], np.float32)
            for name, layer in weights["params"].items()
            for part in ("kernel", "bias")
        }
        return flat, str(path)
    return random_vgg16_weights(0), "random (He init, seed 0)"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS_PATH)
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if seen)")
    parser.add_argument(
        "--tf32",
        choices=("off", "on", "both"),
        default="off",
        help="TensorFloat-32 convolutions on a GPU: off (true FP32), on (PyTorch's defaults)",
    )
    args = parser.parse_args(argv)
    weights, origin = _load_weights(None if args.random_weights else args.weights)
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.tf32]
    for size in args.sizes:
        for tf32 in modes:
            result = time_authors_step(
                weights, size, args.repeats, args.threads, device=args.device, tf32=tf32
            )
            result["weights"] = origin
            print(json.dumps(result))


if __name__ == "__main__":
    main()
