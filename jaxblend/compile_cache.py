"""JAX's persistent compilation cache: compiled XLA programs kept on disk between processes.

A blend compiles the same few programs (VGG objective, L-BFGS loop, Poisson solve) every
time a new process starts; on a GPU compiling dominates a single blend's wall time. With
the cache on, the first process writes each compiled executable to a folder and later
processes with the same program (shapes and settings included), jaxlib version, XLA flags
and device (as jax describes it) load it instead of compiling: an upgrade or a new setting
compiles anew. The folder only grows (no size limit) and can be deleted at any time.

The ``jaxblend`` commands that compile turn it on (``--no-compile-cache`` or
``JAXBLEND_COMPILE_CACHE=0`` turn it off); library users call
:func:`enable_compilation_cache` once, before the first compilation.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

__all__ = ["compilation_cache_dir", "enable_compilation_cache"]

ENV_DIR = "JAXBLEND_CACHE_DIR"


def compilation_cache_dir() -> Path:
    """Where the compilation cache lives unless told otherwise.

    ``$JAXBLEND_CACHE_DIR`` if set, else ``xla/`` in jaxblend's cache folder
    (:func:`jaxblend.weights.cache_dir`: ``$JAXBLEND_CACHE``, ``$XDG_CACHE_HOME/jaxblend`` or
    ``~/.cache/jaxblend``). Not created here.
    """
    from jaxblend.weights import cache_dir

    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env).expanduser()
    return cache_dir() / "xla"


def enable_compilation_cache(path: str | os.PathLike[str] | None = None) -> Path | None:
    """Turn on JAX's persistent compilation cache for this process, caching every program.

    Sets ``jax_compilation_cache_dir`` and lowers the thresholds that would otherwise skip
    programs: ``jax_persistent_cache_min_compile_time_secs`` (default 1 s) to 0 and
    ``jax_persistent_cache_min_entry_size_bytes`` to -1 (no size floor). XLA:CPU programs
    are cached as well as GPU and TPU ones. Call it before the first
    compilation; calling it again with another folder switches to that folder.

    Args:
      path: the cache folder (created if missing); default :func:`compilation_cache_dir`.

    Returns:
      The folder in use, or ``None`` if it cannot be created or written: then a
      ``RuntimeWarning`` says why, the cache stays as it was (off unless enabled before)
      and everything else works as without a cache.

    Example::

      jaxblend.enable_compilation_cache()  # ~/.cache/jaxblend/xla
      jaxblend.blend(...)  # compiles once; the next process loads the programs
    """
    folder = Path(path).expanduser() if path is not None else compilation_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as e:
        warnings.warn(
            f"compilation cache off: cannot write {folder} ({e.strerror or e})",
            RuntimeWarning,
            stacklevel=2,
        )
        return None

    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc

    folder = folder.resolve()
    current = jax.config.jax_compilation_cache_dir
    if current is not None and Path(current) != folder:
        cc.reset_cache()  # jax opens its cache folder once per process; let it reopen
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return folder
