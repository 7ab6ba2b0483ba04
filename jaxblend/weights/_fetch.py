"""Getting weights onto a machine: the cache folder and the checked downloaders."""

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

__all__ = ["FETCH_SOURCES", "cache_dir", "fetch_weights"]

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
