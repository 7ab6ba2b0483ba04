"""The weight file format: a hand-written safetensors reader/writer and the VGG file check.

The on-disk format is `safetensors <https://github.com/huggingface/safetensors>`_, written
here with NumPy alone (no pickle, no new dependency) and readable by the ``safetensors``
package: an 8-byte little-endian header length, a JSON header
``{name: {"dtype", "shape", "data_offsets"}, "__metadata__": {str: str}}`` padded with
spaces to a multiple of 8 bytes, then the raw little-endian tensor data.

A jaxblend VGG file holds ``conv{b}_{i}.kernel`` (HWIO float32) and ``conv{b}_{i}.bias``
tensors and the metadata ``format=jaxblend-vgg``, ``arch``, the preprocessing convention
(:data:`~jaxblend.weights.PREPROCESSING`), ``layers``, ``source`` and ``license``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jaxblend.errors import WeightError
from jaxblend.weights._arch import ARCH_BLOCKS, PREPROCESSING, conv_shapes

__all__ = ["FORMAT", "load_weights", "read_safetensors", "save_weights"]

FORMAT = "jaxblend-vgg"

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
            f"expected one of {', '.join(PREPROCESSING)}"
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
