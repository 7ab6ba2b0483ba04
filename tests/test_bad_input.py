"""Bad input never crashes, never gives a silently wrong image, never loses a batch.

A battery of bad inputs across the command line, the Python API and manifests. Every CLI
case asserts exit status 2, exactly one line on stderr (``jaxblend: error: ...``), no
traceback and nothing new on disk; every API case a one-line :class:`JaxblendError`. Most
cases fail in validation, before anything is compiled, so the CLI cases run in this
process through :func:`jaxblend.cli.main` (what ``python -m jaxblend`` calls), with a few
real subprocess runs beside them. Then: images of every Pillow mode load correctly, a
batch with one job of each failure kind finishes the good ones and resumes, and no
exception type escapes a job.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import jaxblend
from jaxblend import BlendConfig, StageConfig
from jaxblend.batch import _OutDirLock, blend_batch, load_config, read_manifest
from jaxblend.cli import main
from jaxblend.errors import InputError, JaxblendError, RunError
from jaxblend.io import load_image, load_mask, place
from jaxblend.poisson import poisson_blend, poisson_solve

# --------------------------------------------------------------------------- inputs

TINY = {
    "canvas": 32, "source_size": 18, "init": "noise", "chunk": 100, "stage2_enabled": False,
    "solver": "lbfgs",
    "stage1": {"grad": 1.0, "content": 1e-3, "style": 3e-4, "hist": 1e-4, "tv": 1e-6,
               "range": 0, "steps": 1, "normalize": False,
               "content_layers": [["relu2_2", 1.0]],
               "style_layers": [["relu1_2", 1.0], ["relu2_2", 1.0]],
               "hist_layers": [["relu2_2", 1.0]]},
}  # fmt: skip


@pytest.fixture(scope="module")
def img(case1, tmp_path_factory) -> Path:
    """Small inputs, good and bad, in one folder (outside each test's tmp_path)."""
    d = tmp_path_factory.mktemp("bad-inputs")
    Image.open(case1 / "target.png").convert("RGB").resize((48, 48)).save(d / "target.png")
    Image.open(case1 / "source.png").convert("RGB").resize((24, 24)).save(d / "source.png")
    Image.open(case1 / "mask.png").convert("L").resize((24, 24)).save(d / "mask.png")
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (d / "text.png").write_text("not an image at all")
    (d / "folder.png").mkdir()
    Image.fromarray(np.zeros((24, 24), np.uint8)).save(d / "zero.png")
    Image.fromarray(np.full((12, 10), 255, np.uint8)).save(d / "small_mask.png")
    Image.fromarray(np.full((24, 24), 255, np.uint8)).save(d / "full_mask.png")
    Image.fromarray(np.full((48, 48), 0.5, np.float32)).save(d / "float01.tif")
    Image.fromarray(np.zeros((300, 400, 3), np.uint8)).save(d / "big.png")
    rgba = np.dstack([np.asarray(Image.open(d / "source.png")), np.full((24, 24), 255, np.uint8)])
    Image.fromarray(rgba).save(d / "opaque.png")
    (d / "tiny.json").write_text(json.dumps(TINY))
    (d / "canvs.json").write_text(json.dumps({"canvs": 32}))
    (d / "history0.json").write_text(json.dumps({"history": 0}))
    (d / "stage_typo.json").write_text(json.dumps({"stage1": {"stpes": 3}}))
    (d / "badjson.json").write_text("{")
    (d / "seedcfg.json").write_text(json.dumps({"seed": -3}))
    return d


GOOD = {"id": "g", "source": "source.png", "mask": "mask.png", "target": "target.png",
        "center": [16, 16]}  # fmt: skip

MANIFESTS = {
    "missing_id.jsonl": '{"source": "source.png", "target": "target.png", "center": "1,2"}\n',
    "dup.jsonl": json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "\n",
    "typo.jsonl": json.dumps({**GOOD, "canvs": 32}) + "\n",
    "step.jsonl": json.dumps({**GOOD, "step": 3}) + "\n",
    "array.json": json.dumps([GOOD, {**GOOD, "id": "h"}], indent=1),
    "comma.jsonl": json.dumps(GOOD) + ",\n",
    "scalar.jsonl": "3\n",
    "empty.jsonl": "\n\n",
    "nocenter.jsonl": json.dumps({k: v for k, v in GOOD.items() if k != "center"}) + "\n",
    "notarget.jsonl": json.dumps({k: v for k, v in GOOD.items() if k != "target"}) + "\n",
    "slash.jsonl": json.dumps({**GOOD, "id": "a/b"}) + "\n",
    "jobs.txt": json.dumps(GOOD) + "\n",
    "header.csv": "id,source,mask,target,center_row,center_col,canvs\ng,source.png,mask.png,"
    "target.png,16,16,32\n",
    "extra.csv": "id,source,target,center\ng,source.png,target.png,16,16,oops\n",
    "latin1.csv": 'id,source,target,center\ncaf\xe9,s.png,t.png,"1,2"\n',
    "dupcol.csv": "id,id,source,target,center\n",
}


def _materialise(tmp: Path, img: Path, text: str) -> str:
    """``{img}``, ``{out}``, ``{tmp}`` and ``{man:NAME}`` placeholders, manifests written
    into the image folder (their paths are relative to it)."""

    def manifest(m: re.Match) -> str:
        name = m.group(1)
        p = img / name
        data = MANIFESTS[name]
        if name == "latin1.csv":
            p.write_bytes(data.encode("latin-1"))
        else:
            p.write_text(data)
        return str(p)

    text = re.sub(r"\{man:([^}]+)\}", manifest, text)
    return text.format(img=img, out=tmp / "out", tmp=tmp)


BLEND = ["blend", "--source", "{img}/source.png", "--mask", "{img}/mask.png", "--target",
         "{img}/target.png", "--center", "16,16", "--canvas", "32", "--source-size", "12",
         "--steps", "1", "1", "--no-compile-cache", "--quiet", "-o", "{out}/o.png"]  # fmt: skip
POISSON = ["poisson", *BLEND[1:13], "--no-compile-cache", "--quiet", "-o", "{out}/o.png"]
PLACE = ["place", *BLEND[1:13], "-o", "{out}/o.png"]
MASK = ["mask", "--source", "{img}/source.png", "-o", "{out}/m.png"]
BATCH = ["--out-dir", "{out}", "--config", "{img}/tiny.json", "--no-compile-cache",
         "--quiet"]  # fmt: skip


def B(*extra: str) -> list[str]:
    """blend's base arguments with ``extra`` after them (argparse keeps an option's last)."""
    return [*BLEND, *extra]


# (id, argv with placeholders, regex the one line must match, extra env, folders to make)
CLI_CASES = [
    # output paths: checked before anything is read or computed
    ("out-suffix-txt", B("-o", "{out}/o.txt"), r"\.txt.*\.png", None, ()),
    ("out-no-suffix", B("-o", "{out}/o"), r"no suffix", None, ()),
    ("out-is-folder", B("-o", "{tmp}"), r"is a folder", None, ()),
    ("out-trailing-slash", B("-o", "{out}/x/"), r"is a folder", None, ()),
    ("out-under-a-file", B("-o", "{img}/source.png/o.png"), r"is a file", None, ()),
    ("out-unwritable", B("-o", "/sys/jaxblend-o.png"), r"cannot write in /sys", None, ()),
    ("out-empty", B("-o", ""), r"-o is empty", None, ()),
    ("stage1-suffix", B("--stage1-out", "{out}/s1.xyz"), r"stage1-out.*\.xyz", None, ()),
    ("stage1-same-as-o", B("--stage1-out", "{out}/o.png"), r"same file", None, ()),
    ("stage1-folder", B("--stage1-out", "{tmp}"), r"is a folder", None, ()),
    ("frames-is-file", B("--frames", "{img}/source.png"), r"frames.*is a file", None, ()),
    ("frames-under-file", B("--frames", "{img}/mask.png/f"), r"is a file", None, ()),
    # numbers
    ("seed-negative", B("--seed", "-1"), r"seed must be an integer in 0\.\.4294967295", None, ()),
    ("seed-too-big", B("--seed", str(2**32)), r"seed must be an integer", None, ()),
    ("seed-text", B("--seed", "abc"), r"--seed: expected an integer", None, ()),
    ("center-nan", B("--center", "nan,nan"), r"finite", None, ()),
    ("center-inf", B("--center", "inf,3"), r"finite", None, ()),
    ("center-three", B("--center", "1,2,3"), r"ROW,COL", None, ()),
    ("center-text", B("--center", "a,b"), r"ROW,COL", None, ()),
    ("center-outside", B("--center", "5000,5000"), r"outside the 32x32 canvas", None, ()),
    ("center-negative-outside", B("--center", "-20,16"), r"outside", None, ()),
    ("canvas-4", B("--canvas", "4"), r"canvas must be an integer in 8\.\.", None, ()),
    ("canvas-0", B("--canvas", "0"), r"positive integer", None, ()),
    ("canvas-text", B("--canvas", "big"), r"positive integer", None, ()),
    ("canvas-over-max", B("--canvas", "200000"), r"canvas must be an integer", None, ()),
    ("canvas-exceeds-memory", B("--canvas", "60000", "--source-size", "12"),
     r"60000x60000 canvas needs about .* lower the canvas \(--canvas\) to \d+", None, ()),
    ("source-size-0", B("--source-size", "0"), r"positive integer", None, ()),
    ("source-size-huge", B("--source-size", "90000"), r"larger than the 32x32 canvas", None, ()),
    ("steps-0", B("--steps", "0"), r"positive integer", None, ()),
    ("steps-three", B("--steps", "1", "2", "3"), r"one or two numbers", None, ()),
    ("steps-text", B("--steps", "many"), r"positive integer", None, ()),
    ("threshold-300", B("--mask-threshold", "300"), r"\[0, 255\)", None, ()),
    ("threshold-nan", B("--mask-threshold", "nan"), r"\[0, 255\)", None, ()),
    ("init-bogus", B("--init", "bogus"), r"invalid choice", None, ()),
    ("solver-bogus", B("--solver", "bogus"), r"invalid choice", None, ()),
    ("precision-bogus", B("--precision", "fp8"), r"invalid choice", None, ()),
    ("vgg-missing-file", B("--vgg", "{img}/nope.safetensors"), r"not found", None, ()),
    ("unknown-option", B("--bogus"), r"unrecognized arguments", None, ()),
    ("missing-out", BLEND[:-2], r"required: -o", None, ()),
    ("no-command", [], r"required: cmd|arguments are required", None, ()),
    ("unknown-command", ["bogus"], r"invalid choice", None, ()),
    # images
    ("source-missing", B("--source", "{img}/nope.png"), r"source file not found", None, ()),
    ("source-folder", B("--source", "{img}/folder.png"), r"is a folder", None, ()),
    ("source-corrupt", B("--source", "{img}/corrupt.png"), r"not a readable image", None, ()),
    ("source-text", B("--source", "{img}/text.png"), r"not a readable image", None, ()),
    ("target-missing", B("--target", "{img}/nope.png"), r"target file not found", None, ()),
    ("target-corrupt", B("--target", "{img}/corrupt.png"), r"not a readable image", None, ()),
    ("target-float01", B("--target", "{img}/float01.tif"), r"value_range=\(0, 1\)", None, ()),
    ("mask-zero", B("--mask", "{img}/zero.png"), r"mask is all zero", None, ()),
    ("mask-size", B("--mask", "{img}/small_mask.png"), r"same size", None, ()),
    ("mask-corrupt", B("--mask", "{img}/corrupt.png"), r"not a readable image", None, ()),
    ("no-mask-no-alpha", [a for a in B() if "mask" not in a], r"no alpha channel", None, ()),
    ("opaque-alpha", [*[a for a in B() if "mask" not in a], "--source", "{img}/opaque.png"],
     r"opaque everywhere", None, ()),
    ("mask-whole-canvas",
     B("--mask", "{img}/full_mask.png", "--canvas", "24", "--source-size", "24", "--center",
       "12,12"), r"whole canvas", None, ()),
    ("decompression-bomb", B("--target", "{img}/big.png"),
     r"400x300 = 0\.1 megapixels, over the limit of 1000 pixels.*MAX_IMAGE_PIXELS=120000",
     {"JAXBLEND_MAX_IMAGE_PIXELS": "1000"}, ()),
    ("bad-pixel-limit", B(), r"JAXBLEND_MAX_IMAGE_PIXELS must be",
     {"JAXBLEND_MAX_IMAGE_PIXELS": "x"}, ()),
    # poisson, place, mask, demo
    ("poisson-mode", [*POISSON, "--mode", "weird"], r"invalid choice", None, ()),
    ("poisson-out-folder", [*POISSON, "-o", "{tmp}"], r"is a folder", None, ()),
    ("poisson-out-suffix", [*POISSON, "-o", "{out}/p.doc"], r"\.doc", None, ()),
    ("poisson-canvas", [*POISSON, "--canvas", "4"], r"canvas must be an integer", None, ()),
    ("poisson-canvas-memory", [*POISSON, "--canvas", "100000", "--source-size", "12"],
     r"100000x100000 canvas needs about .* lower the canvas", None, ()),
    ("poisson-center", [*POISSON, "--center", "nan,1"], r"finite", None, ()),
    ("poisson-corrupt", [*POISSON, "--target", "{img}/corrupt.png"], r"not a readable", None, ()),
    ("place-out-suffix", [*PLACE, "-o", "{out}/p.zz"], r"\.zz", None, ()),
    ("place-outside", [*PLACE, "--center", "1,1"], r"outside", None, ()),
    ("mask-out-jpg", [*MASK, "-o", "{out}/m.jpg"], r"must be a PNG", None, ()),
    ("mask-preview-suffix", [*MASK, "--preview", "{out}/p.qq"], r"\.qq", None, ()),
    ("mask-preview-same", [*MASK, "--preview", "{out}/m.png"], r"same file", None, ()),
    ("mask-smooth-negative", [*MASK, "--smooth", "-1"], r"--smooth must be", None, ()),
    ("mask-tolerance-nan", [*MASK, "--tolerance", "nan"], r"finite number", None, ()),
    ("mask-rect-three", [*MASK, "--method", "grabcut", "--rect", "1,2,3"], r"TOP,LEFT", None, ()),
    ("mask-source-missing", [*MASK, "--source", "{img}/nope.png"], r"not found", None, ()),
    ("demo-out-file", ["demo", "-o", "{img}/source.png", "--quiet"], r"is a file", None, ()),
    ("demo-steps", ["demo", "-o", "{out}", "--steps", "1", "2", "3"], r"one or two", None, ()),
    # batch
    ("batch-manifest-missing", ["batch", "{img}/nope.jsonl", *BATCH], r"not found", None, ()),
    ("batch-manifest-folder", ["batch", "{img}/folder.png", *BATCH], r"folder", None, ()),
    ("batch-out-dir-file", ["batch", "{man:dup.jsonl}", *BATCH, "--out-dir", "{img}/source.png"],
     r"is a file", None, ()),
    ("batch-size-0", ["batch", "{man:dup.jsonl}", *BATCH, "--batch-size", "0"],
     r"batch-size must be an integer", None, ()),
    ("batch-size-text", ["batch", "{man:dup.jsonl}", *BATCH, "--batch-size", "many"],
     r"give N or auto", None, ()),
    ("batch-config-missing", ["batch", "{man:dup.jsonl}", *BATCH, "--config", "{img}/no.json"],
     r"config file not found", None, ()),
    ("batch-config-typo", ["batch", "{man:dup.jsonl}", *BATCH, "--config", "{img}/canvs.json"],
     r"unknown setting 'canvs'.*did you mean 'canvas'", None, ()),
    ("batch-config-stage-typo",
     ["batch", "{man:dup.jsonl}", *BATCH, "--config", "{img}/stage_typo.json"],
     r"unknown setting 'stpes'.*did you mean 'steps'", None, ()),
    ("batch-config-history0",
     ["batch", "{man:dup.jsonl}", *BATCH, "--config", "{img}/history0.json"],
     r"history .* must be an integer in 1\.\.", None, ()),
    ("batch-config-seed", ["batch", "{man:dup.jsonl}", *BATCH, "--config", "{img}/seedcfg.json"],
     r"seed must be", None, ()),
    ("batch-config-json", ["batch", "{man:dup.jsonl}", *BATCH, "--config", "{img}/badjson.json"],
     r"not valid JSON", None, ()),
    ("manifest-missing-id", ["batch", "{man:missing_id.jsonl}", *BATCH], r"missing id", None, ()),
    ("manifest-dup-id", ["batch", "{man:dup.jsonl}", *BATCH], r"duplicate id 'g'", None, ()),
    ("manifest-typo-canvs", ["batch", "{man:typo.jsonl}", *BATCH],
     r"line 1: unknown field 'canvs' \(did you mean 'canvas'\?\)", None, ()),
    ("manifest-typo-step", ["batch", "{man:step.jsonl}", *BATCH],
     r"unknown field 'step' \(did you mean 'steps'\?\)", None, ()),
    ("manifest-json-array", ["batch", "{man:array.json}", *BATCH],
     r"JSON array.*one job object per line", None, ()),
    ("manifest-trailing-comma", ["batch", "{man:comma.jsonl}", *BATCH], r"no commas", None, ()),
    ("manifest-scalar-line", ["batch", "{man:scalar.jsonl}", *BATCH], r"expected a JSON object",
     None, ()),
    ("manifest-empty", ["batch", "{man:empty.jsonl}", *BATCH], r"holds no jobs", None, ()),
    ("manifest-no-center", ["batch", "{man:nocenter.jsonl}", *BATCH], r"missing center", None,
     ()),
    ("manifest-no-target", ["batch", "{man:notarget.jsonl}", *BATCH], r"missing target", None,
     ()),
    ("manifest-id-slash", ["batch", "{man:slash.jsonl}", *BATCH], r"cannot be a file name", None,
     ()),
    ("manifest-suffix", ["batch", "{man:jobs.txt}", *BATCH], r"must be \.jsonl or \.csv", None,
     ()),
    ("manifest-csv-typo", ["batch", "{man:header.csv}", *BATCH],
     r"unknown column 'canvs' \(did you mean 'canvas'\?\)", None, ()),
    ("manifest-csv-extra", ["batch", "{man:extra.csv}", *BATCH], r"header columns", None, ()),
    ("manifest-csv-latin1", ["batch", "{man:latin1.csv}", *BATCH], r"not UTF-8", None, ()),
    ("manifest-csv-dup-column", ["batch", "{man:dupcol.csv}", *BATCH], r"appears twice", None,
     ()),
    # weights and warmup
    ("weights-out-folder",
     ["weights", "convert", "{img}/mask.png", "--arch", "vgg16", "-o", "{tmp}"], r"is a folder",
     None, ()),
    ("weights-out-unwritable",
     ["weights", "convert", "{img}/mask.png", "--arch", "vgg16", "-o", "/sys/w.safetensors"],
     r"cannot write in /sys", None, ()),
    ("weights-src-missing",
     ["weights", "convert", "{img}/no.pth", "--arch", "vgg16", "-o", "{out}/w.safetensors"],
     r"not found", None, ()),
    ("weights-arch", ["weights", "convert", "{img}/mask.png", "--arch", "vgg11", "-o", "{out}/w"],
     r"invalid choice", None, ()),
    ("weights-fetch-name", ["weights", "fetch", "alexnet"], r"invalid choice", None, ()),
    ("warmup-config-missing", ["warmup", "--config", "{img}/no.json", "--quiet"], r"not found",
     None, ()),
    ("warmup-batch-size", ["warmup", "--manifest", "{man:dup.jsonl}", "--batch-size", "0"],
     r"batch-size must be", None, ()),
    ("warmup-canvas-text", ["warmup", "--canvas", "big", "--quiet"], r"canvas must be N or HxW",
     None, ()),
    ("warmup-canvas-memory", ["warmup", "--canvas", "60000", "--quiet", "--no-compile-cache"],
     r"60000x60000 canvas needs about", None, ()),
    ("place-id-slash", [*PLACE, "--id", "a/b"], r"cannot be a file name", None, ()),
]  # fmt: skip


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")} if root.exists() else set()


@pytest.mark.parametrize("argv, match, env, dirs", [c[1:] for c in CLI_CASES],
                         ids=[c[0] for c in CLI_CASES])  # fmt: skip
def test_cli_bad_input(argv, match, env, dirs, img, tmp_path, capsys, monkeypatch):
    if any("/sys/" in a for a in argv) and not Path("/sys").is_dir():
        pytest.skip("needs a folder no one can create files in (/sys on Linux)")
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    for d in dirs:
        (tmp_path / d).mkdir(parents=True)
    args = [_materialise(tmp_path, img, a) for a in argv]
    before_tmp, before_img = _files(tmp_path), _files(img)
    capsys.readouterr()
    rc = main(args)
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, (rc, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("jaxblend: error:") and "Traceback" not in err, err
    assert re.search(match, lines[0]), lines[0]
    assert _files(tmp_path) == before_tmp, "partial output"
    assert _files(img) - before_img <= {img / n for n in MANIFESTS}, "partial output"


def test_cli_battery_is_large_enough():
    assert len(CLI_CASES) + len(API_CASES) + len(MANIFEST_CASES) >= 80


def test_batch_out_dir_locked_by_another_runner(img, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (img / "one.jsonl").write_text(json.dumps(GOOD) + "\n")
    lock = _OutDirLock(out, None)  # another runner holds the folder
    try:
        capsys.readouterr()
        rc = main(["batch", str(img / "one.jsonl"), "--out-dir", str(out), "--config",
                   str(img / "tiny.json"), "--no-compile-cache"])  # fmt: skip
        err = capsys.readouterr().err
    finally:
        lock.release()
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, err
    assert f"another jaxblend batch (pid {os.getpid()}) is running on {out}" in lines[0]
    assert sorted(p.name for p in out.iterdir()) == [".jaxblend-batch.lock"]


SUBPROCESS_CASES = [
    ("blend", "--source", "{img}/source.png", "--target", "{img}/target.png", "-o", "{out}/o.gif2"),
    ("blend", "--source", "{img}/source.png", "--target", "{img}/target.png", "--center",
     "nan,nan", "-o", "{out}/o.png"),
    ("poisson", "--source", "{img}/corrupt.png", "--target", "{img}/target.png", "-o",
     "{out}/o.png"),
    ("batch", "{man:typo.jsonl}", "--out-dir", "{out}"),
]  # fmt: skip


@pytest.mark.parametrize("argv", SUBPROCESS_CASES, ids=lambda a: a[0])
def test_real_entry_point_bad_input(argv, img, tmp_path):
    """``python -m jaxblend``: exit 2, one line, no traceback, nothing written."""
    args = [_materialise(tmp_path, img, a) for a in argv]
    p = subprocess.run([sys.executable, "-m", "jaxblend", *args], capture_output=True,
                       text=True, timeout=300)  # fmt: skip
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert lines[0].startswith("jaxblend: error:") and "Traceback" not in p.stderr
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- API


def _arrays():
    return {
        "source": np.full((18, 18, 3), 200, np.uint8),
        "target": np.full((32, 32, 3), 50, np.uint8),
        "mask": np.ones((18, 18), np.uint8),
    }


def _place(**kw):
    a = {**_arrays(), "center": (16, 16), "canvas": None, **kw}
    return place(a.pop("source"), a.pop("target"), a.pop("mask"), **a)


def _blend(**kw):
    return jaxblend.blend(**{**_arrays(), "center": (16, 16), **kw})


API_CASES = [
    ("float01-target", lambda: _place(target=np.full((32, 32, 3), 0.2)), r"value_range=\(0, 1\)"),
    ("float01-source", lambda: _place(source=np.full((18, 18, 3), 0.9, np.float32)),
     r"\[0, 1\]"),
    ("value-range-reversed", lambda: _place(value_range=(1, 0)), r"low < high"),
    ("value-range-nan", lambda: _place(value_range=(0, float("nan"))), r"finite"),
    ("value-range-text", lambda: _place(value_range="0-1"), r"\(low, high\)"),
    ("outside-value-range", lambda: _place(value_range=(0, 1)), r"outside its value range"),
    ("uint16-array", lambda: _place(source=np.full((18, 18, 3), 40000, np.uint16)),
     r"value_range=\(0, 65535\)"),
    ("negative-int", lambda: _place(source=np.full((18, 18, 3), -5, np.int16)),
     r"outside 0\.\.255"),
    ("float-above-255", lambda: _place(target=np.full((32, 32, 3), 1000.0)), r"outside"),
    ("nan-array", lambda: _place(target=np.full((32, 32, 3), np.nan)), r"NaN"),
    ("string-array", lambda: _place(source=np.array([["a"]])), r"must hold numbers"),
    ("bytes-source", lambda: _place(source=b"\x89PNG"), r"must be a path, a PIL image"),
    ("none-target", lambda: _place(target=None), r"must be a path"),
    ("bad-shape", lambda: _place(source=np.zeros((18, 18, 5), np.uint8)), r"HxW"),
    ("empty-array", lambda: _place(target=np.zeros((0, 32, 3), np.uint8)), r"empty|HxW"),
    ("negative-mask", lambda: _place(mask=np.full((18, 18), -1.0)), r"negative"),
    ("nan-mask", lambda: _place(mask=np.full((18, 18), np.nan)), r"NaN"),
    ("zero-mask", lambda: _place(mask=np.zeros((18, 18))), r"all zero"),
    ("center-nan", lambda: _place(center=(float("nan"), 3)), r"finite"),
    ("center-one-number", lambda: _place(center=(3,)), r"two numbers"),
    ("canvas-inf", lambda: _place(canvas=float("inf")), r"canvas must be an integer"),
    ("canvas-bool", lambda: _place(canvas=True), r"canvas must be an integer"),
    ("canvas-fraction", lambda: _place(canvas=40.5), r"canvas must be an integer"),
    ("source-size-nan", lambda: _place(source_size=float("nan")), r"source_size"),
    ("threshold-negative", lambda: _place(mask_threshold=-1), r"mask_threshold"),
    ("threshold-255", lambda: _place(mask_threshold=255), r"\[0, 255\)"),
    ("tol-negative", lambda: poisson_blend(**{**_arrays(), "center": (16, 16)}, tol=-1),
     r"tol .* must be in \(0, 1\)"),
    ("tol-zero", lambda: poisson_blend(**_arrays(), center=(16, 16), tol=0), r"\(0, 1\)"),
    ("tol-two", lambda: poisson_blend(**_arrays(), center=(16, 16), tol=2), r"\(0, 1\)"),
    ("tol-nan", lambda: poisson_blend(**_arrays(), center=(16, 16), tol=float("nan")),
     r"\(0, 1\)"),
    ("maxiter-0", lambda: poisson_blend(**_arrays(), center=(16, 16), maxiter=0), r"maxiter"),
    ("maxiter-float", lambda: poisson_blend(**_arrays(), center=(16, 16), maxiter=2.5),
     r"maxiter"),
    ("poisson-mode", lambda: poisson_blend(**_arrays(), center=(16, 16), mode="Normal"),
     r"mode must be"),
    ("poisson-solve-shapes",
     lambda: poisson_solve(np.zeros((8, 8, 3)), np.zeros((8, 9, 3)), np.zeros((8, 8))),
     r"shape"),
    ("history-0", lambda: BlendConfig(history=0), r"history .* 1\.\.1000"),
    ("seed-negative", lambda: BlendConfig(seed=-1), r"0\.\.4294967295"),
    ("seed-too-big", lambda: BlendConfig(seed=2**32), r"0\.\.4294967295"),
    ("seed-float", lambda: BlendConfig(seed=1.5), r"seed must be an integer"),
    ("chunk-0", lambda: BlendConfig(chunk=0), r"chunk"),
    ("config-canvas-4", lambda: BlendConfig(canvas=4), r"canvas"),
    ("scales-not-ending-1", lambda: BlendConfig(scales=(0.5,)), r"end with 1"),
    ("scales-nan", lambda: BlendConfig(scales=(float("nan"), 1.0)), r"scales"),
    ("style-strength-inf", lambda: BlendConfig(style_strength=float("inf")), r"style_strength"),
    ("stage-grad-negative", lambda: StageConfig(grad=-1.0), r"grad .* finite number in \[0, "),
    ("stage-tv-nan", lambda: StageConfig(tv=float("nan")), r"tv"),
    ("stage-steps-0", lambda: StageConfig(steps=0), r"steps must be an integer in 1"),
    ("stage-layers", lambda: StageConfig(style_layers=("relu1_1",)), r"\(layer, weight\)"),
    ("stage-band", lambda: StageConfig(band=-2), r"band"),
    ("tone-channels", lambda: StageConfig(tone_channels="lab"), r"tone_channels must be one of"),
    ("tone-highpass-narrow", lambda: StageConfig(tone_sigma=4.0, tone_highpass=2.0),
     r"tone_highpass .* above tone_sigma"),
    ("vgg-int", lambda: _blend(vgg=3), r"vgg must be a network"),
    ("vgg-missing-file", lambda: _blend(vgg="nope.safetensors"), r"not found"),
    ("config-dict", lambda: _blend(config={"canvas": 32}), r"config must be a BlendConfig"),
    ("blend-job-dict", lambda: jaxblend.blend_job({"target": 1}), r"takes a Job"),
    ("blend-canvas-memory", lambda: _blend(config=BlendConfig(canvas=60000)),
     r"60000x60000 canvas needs about"),
]  # fmt: skip


@pytest.mark.parametrize("call, match", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_api_bad_input(call, match):
    with pytest.raises(JaxblendError, match=match) as e:
        call()
    assert "\n" not in str(e.value)


MANIFEST_CASES = [
    ("typo", "m.jsonl", json.dumps({**GOOD, "canvs": 32}), r"did you mean 'canvas'"),
    ("centre", "m.jsonl", json.dumps({**GOOD, "centre": [1, 2]}), r"did you mean 'center'"),
    ("no-close-match", "m.jsonl", json.dumps({**GOOD, "zzzz": 1}), r"unknown field 'zzzz'; known"),
    ("array", "m.json", json.dumps([GOOD]), r"JSON array"),
    ("seed-negative", "m.jsonl", json.dumps({**GOOD, "seed": -1}), r"line 1: seed must be"),
    ("seed-huge", "m.jsonl", json.dumps({**GOOD, "seed": 2**40}), r"seed must be"),
    ("steps-0", "m.jsonl", json.dumps({**GOOD, "steps": 0}), r"steps must be"),
    ("steps-inf", "m.jsonl", json.dumps({**GOOD, "steps": "1e999"}), r"steps must be"),
    ("steps-three", "m.jsonl", json.dumps({**GOOD, "steps": [1, 2, 3]}), r"steps must be"),
    ("canvas-text", "m.jsonl", json.dumps({**GOOD, "canvas": "big"}), r"canvas must be"),
    ("center-nan", "m.jsonl", json.dumps({**GOOD, "center": "nan,1"}), r"finite"),
    ("center-three", "m.jsonl", json.dumps({**GOOD, "center": [1, 2, 3]}), r"two numbers"),
    ("threshold", "m.jsonl", json.dumps({**GOOD, "mask_threshold": 999}), r"mask_threshold"),
    ("init", "m.jsonl", json.dumps({**GOOD, "init": "zero"}), r"init must be one of"),
    ("source-number", "m.jsonl", json.dumps({**GOOD, "source": 3}), r"source must be a file"),
    ("csv-typo", "m.csv", "id,source,target,center,stpes\ng,s.png,t.png,\"1,2\",3\n",
     r"unknown column 'stpes' \(did you mean 'steps'\?\)"),
]  # fmt: skip


@pytest.mark.parametrize("name, text, match", [c[1:] for c in MANIFEST_CASES],
                         ids=[c[0] for c in MANIFEST_CASES])  # fmt: skip
def test_manifest_bad_input(name, text, match, tmp_path):
    p = tmp_path / name
    p.write_text(text + "\n")
    with pytest.raises(InputError, match=match) as e:
        read_manifest(p)
    assert "\n" not in str(e.value)


def test_bad_values_are_per_job_when_not_strict(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "id": "b", "seed": -1}) + "\n")
    good, bad = read_manifest(p, strict=False)
    assert "error" not in good and good["center"] == (16.0, 16.0)
    assert bad["id"] == "b" and "seed must be an integer" in bad["error"]


def test_spreadsheet_csv_reads_like_a_plain_one(tmp_path):
    """UTF-8 BOM, spaces after commas, CRLF, quoted centre, empty trailing columns and an
    empty row, as spreadsheets save them; and a ';'-separated export."""
    plain = tmp_path / "plain.csv"
    plain.write_text('id,source,mask,target,center,steps\na,s.png,m.png,t.png,"3,4",2 3\n')
    sheet = tmp_path / "sheet.csv"
    sheet.write_bytes(
        b"\xef\xbb\xbfid, source, mask, target, center, steps,,\r\n"
        b'a, s.png, m.png, t.png, "3, 4", 2 3,,\r\n,,,,,,,\r\n'
    )
    semi = tmp_path / "semi.csv"
    semi.write_text(
        "id;source;mask;target;center_row;center_col;steps\na;s.png;m.png;t.png;3;4;2 3\n"
    )
    ref = read_manifest(plain)
    assert ref == read_manifest(sheet) == read_manifest(semi)
    assert ref[0]["center"] == (3.0, 4.0) and ref[0]["steps"] == (2, 3)
    assert ref[0]["source"] == tmp_path / "s.png"


def test_config_errors_name_the_closest_setting(img):
    with pytest.raises(InputError, match=r"did you mean 'canvas'"):
        load_config(img / "canvs.json")
    with pytest.raises(InputError, match=r"history"):
        load_config(img / "history0.json")


# --------------------------------------------------------------------------- images


def test_image_modes_load_correctly(tmp_path):
    """16-bit grey is scaled (not white), float with its range, palette, CMYK, LA, RGBA
    and EXIF orientation as viewers show them; soft float masks stay inside."""
    ramp = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    g16 = np.asarray(load_image(tmp_path / "g16.png"))
    want = np.round(ramp / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(g16[..., 0], want)
    assert g16.min() == 0 and g16.max() == 255  # not clipped to white
    m16 = np.asarray(load_mask(tmp_path / "g16.png"))
    assert (m16 > 0).sum() == (ramp > 0).sum()  # nonzero stays nonzero
    rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    f01 = rgb.astype(np.float32) / 255
    np.testing.assert_array_equal(np.asarray(load_image(f01, value_range=(0, 1))), rgb)
    np.testing.assert_array_equal(np.asarray(load_image(rgb.astype(np.float64))), rgb)
    np.testing.assert_array_equal(
        np.asarray(load_image(rgb.astype(np.uint16) * 257, value_range=(0, 65535))), rgb
    )
    Image.fromarray(f01[..., 0]).save(tmp_path / "f.tif")
    with pytest.raises(InputError, match=r"value_range"):
        load_image(tmp_path / "f.tif")
    np.testing.assert_array_equal(
        np.asarray(load_image(tmp_path / "f.tif", value_range=(0, 1)))[..., 0], rgb[..., 0]
    )
    pal = Image.fromarray(rgb).quantize(16)
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(
        np.asarray(load_image(tmp_path / "p.png")), np.asarray(pal.convert("RGB"))
    )
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.tif")
    assert np.asarray(load_image(tmp_path / "c.tif"))[4, 4].tolist() == [255, 0, 0]
    la = np.dstack([rgb[..., 0], np.full((48, 64), 200, np.uint8)])
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert load_image(tmp_path / "la.png").mode == "RGB"
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    im.save(tmp_path / "rot.jpg", exif=exif, quality=100)
    assert load_image(tmp_path / "rot.jpg").size == (48, 64)  # upright: 48 wide, 64 high
    soft = np.full((18, 18), 0.3)
    job = _place(mask=soft)
    assert job.mask.sum() == 18 * 18  # a soft float mask of 0.3 is inside, not "all zero"
    a = _place(target=np.full((32, 32, 3), 50 / 255), source=np.full((18, 18, 3), 200 / 255),
               value_range=(0, 1))  # fmt: skip
    ref = _place()
    np.testing.assert_array_equal(a.target, ref.target)  # 0..1 with value_range = uint8
    np.testing.assert_array_equal(a.source, ref.source)


def test_decompression_bomb_limit_is_clear_and_can_be_lifted(img, monkeypatch):
    monkeypatch.setenv("JAXBLEND_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(InputError, match=r"400x300 .*JAXBLEND_MAX_IMAGE_PIXELS=120000"):
        load_image(img / "big.png")
    monkeypatch.setenv("JAXBLEND_MAX_IMAGE_PIXELS", "0")
    assert load_image(img / "big.png").size == (400, 300)
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's own setting is left as it was


# --------------------------------------------------------------------------- batches


@pytest.fixture(scope="module")
def vgg():
    return jaxblend.load_vgg()


def test_batch_with_one_job_of_each_failure_kind(img, tmp_path, capsys, monkeypatch):
    """Every good job finishes, each bad one is recorded with its reason, the exit status
    is 1 with a one-line summary, and a rerun skips the finished jobs."""
    monkeypatch.setenv("JAXBLEND_MAX_IMAGE_PIXELS", "50000")  # big.png (400x300) is a "bomb"
    good = [{**GOOD, "id": f"g{i}", "seed": i} for i in range(3)]
    bad = {
        "missing": {"source": "nope.png"},
        "corrupt": {"source": "corrupt.png"},
        "text": {"target": "text.png"},
        "bomb": {"target": "big.png"},
        "ambiguous": {"target": "float01.tif"},
        "seedneg": {"seed": -1},
        "seedbig": {"seed": 2**40},
        "steps0": {"steps": 0},
        "canvas4": {"canvas": 4},
        "canvasmem": {"canvas": 100000},
        "centernan": {"center": "nan,3"},
        "outside": {"center": [1, 1]},
        "zero": {"mask": "zero.png"},
        "mismatch": {"mask": "small_mask.png"},
        "init": {"init": "zero"},
        "threshold": {"mask_threshold": 300},
        "folder": {"source": "folder.png"},
        "blocked": {},  # its output path is a folder: the write fails
    }
    rows = good[:2] + [{**GOOD, "id": k, **v} for k, v in bad.items()] + good[2:]
    man = img / "mixed.jsonl"
    man.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "out"
    (out / "blocked.png").mkdir(parents=True)
    args = ["batch", str(man), "--out-dir", str(out), "--config", str(img / "tiny.json"),
            "--batch-size", "4", "--no-compile-cache"]  # fmt: skip
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert re.fullmatch(r"3 ok, 18 failed, 0 skipped in .* jobs/min; reasons in .*", err[-1])
    assert "Traceback" not in "\n".join(err)
    recs = {r["id"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert {k for k, r in recs.items() if r["status"] == "ok"} == {"g0", "g1", "g2"}
    assert set(recs) == {r["id"] for r in rows}
    reasons = {
        "missing": "not found", "corrupt": "not a readable image", "text": "not a readable",
        "bomb": "JAXBLEND_MAX_IMAGE_PIXELS", "ambiguous": "value_range", "seedneg": "seed",
        "seedbig": "seed", "steps0": "steps", "canvas4": "canvas", "canvasmem": "memory",
        "centernan": "finite", "outside": "outside", "zero": "all zero", "mismatch": "same size",
        "init": "init", "threshold": "mask_threshold", "folder": "folder",
        "blocked": "cannot write",
    }  # fmt: skip
    for k, why in reasons.items():
        assert recs[k]["status"] == "failed" and why in recs[k]["error"], (k, recs[k])
        assert k == "blocked" or not (out / f"{k}.png").exists()
    for k in ("g0", "g1", "g2"):
        assert np.asarray(Image.open(out / f"{k}.png")).shape == (32, 32, 3)
    stamps = {k: (out / f"{k}.png").stat().st_mtime_ns for k in ("g0", "g1", "g2")}

    assert main(args) == 1  # the rerun skips the good jobs and tries the bad ones again
    err = capsys.readouterr().err.strip().splitlines()
    assert re.fullmatch(r"0 ok, 18 failed, 3 skipped in .*", err[-1]), err[-1]
    assert {k: (out / f"{k}.png").stat().st_mtime_ns for k in stamps} == stamps
    again = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in again if r["status"] == "ok"] == ["g0", "g1", "g2"]


class _Weird:
    def __array__(self, *args, **kwargs):
        raise ZeroDivisionError("an array that cannot be read")


def test_blend_batch_no_exception_type_escapes(vgg, img, monkeypatch):
    """API jobs with bad fields of every type come back as their own errors; a stack whose
    solve raises (here: forced) gives each of its jobs a RunError; the rest blend."""
    cfg = load_config(img / "tiny.json")
    src, tgt, msk = (img / n for n in ("source.png", "target.png", "mask.png"))
    ok = {"source": src, "target": tgt, "mask": msk, "center": (16, 16)}
    jobs = [
        ok,
        {**ok, "seed": "x"},
        {**ok, "canvs": 40},
        {**ok, "source": 123},
        {**ok, "center": object()},
        {**ok, "mask": np.full((24, 24), 0.3)},  # soft float mask: fine
        {**ok, "value_range": (1, 0)},
        {**ok, "steps": [1, "two"]},
        {**ok, "canvas": 40},  # its stack fails below
        {**ok, "source": _Weird()},  # an array-like that raises an unexpected exception
    ]
    import jaxblend.batch as batch

    real = batch._solve_stack

    def flaky(cfg_, *a, **k):
        if cfg_.canvas == 40:
            raise RuntimeError("RESOURCE_EXHAUSTED: out of memory while allocating")
        return real(cfg_, *a, **k)

    monkeypatch.setattr(batch, "_solve_stack", flaky)
    got = blend_batch(jobs, cfg, batch_size=4, vgg=vgg)
    kinds = [type(r).__name__ for r in got]
    assert kinds[0] == kinds[5] == "BlendResult", kinds
    errors = {1: "seed", 2: "did you mean 'canvas'", 3: "source must be a path", 4: "center",
              6: "value_range", 7: "steps", 9: "ZeroDivisionError"}  # fmt: skip
    for i, match in errors.items():
        assert isinstance(got[i], JaxblendError) and re.search(match, str(got[i])), (i, got[i])
    assert isinstance(got[8], RunError) and "lower the batch size" in str(got[8])


def test_full_disk_on_a_later_write_leaves_no_output(img, tmp_path, capsys, monkeypatch):
    """Outputs are written all or none: a write that fails after another succeeded (a disk
    filling up) is one line, exit 2, and the file already written is removed."""
    import jaxblend.io as jio
    from jaxblend.errors import OutputError

    real, calls = jio.save_image, []

    def filling_up(image, path):
        calls.append(path)
        if len(calls) > 1:
            raise OutputError(f"cannot write {path} (No space left on device)")
        return real(image, path)

    cutout = tmp_path / "cutout.png"
    rgb, alpha = Image.open(img / "source.png"), Image.open(img / "mask.png")
    Image.fromarray(np.dstack([np.asarray(rgb), np.asarray(alpha)])).save(cutout)
    monkeypatch.setattr(jio, "save_image", filling_up)
    out = tmp_path / "out"
    capsys.readouterr()
    rc = main(["mask", "--source", str(cutout), "--method", "alpha", "-o", str(out / "m.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "No space left on device" in err[0], err
    assert len(calls) == 2 and not out.exists()
