"""Issue 14: precision "auto", the host/device pipeline, ahead-of-time warm-up, and a real
two-process run through ``jax.distributed`` on 127.0.0.1.

Tiny jobs throughout (32² canvas, VGG blocks 1–2, one or two evaluations, stage 1 only).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

import jaxblend
from jaxblend import BlendConfig, StageConfig
from jaxblend.batch import blend_batch, run_manifest
from jaxblend.blend import AUTO_PRECISION, blend_job, resolve_precision, vgg_spec
from jaxblend.io import place

ROOT = Path(__file__).resolve().parents[1]
SHALLOW = (("relu1_2", 1.0), ("relu2_2", 1.0))
CFG = BlendConfig(
    stage1=StageConfig(grad=1.0, content=1e-3, style=3e-4, tv=1e-6, steps=2,
                       style_layers=SHALLOW),
    stage2_enabled=False, canvas=32, source_size=18, init="noise", chunk=100,
)  # fmt: skip
CFG_JSON = {
    "canvas": 32, "source_size": 18, "init": "noise", "chunk": 100, "stage2_enabled": False,
    "stage1": {"grad": 1.0, "content": 1e-3, "style": 3e-4, "tv": 1e-6, "steps": 2,
               "style_layers": [list(x) for x in SHALLOW]},
}  # fmt: skip
CENTERS = [(13, 15), (16, 16), (15, 14), (17, 15), (14, 17), (16, 13)]


@pytest.fixture(scope="module")
def vgg():
    return jaxblend.load_vgg()


@pytest.fixture(scope="module")
def images(case1, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("acc")
    Image.open(case1 / "target.png").convert("RGB").resize((48, 48)).save(d / "target.png")
    Image.open(case1 / "source.png").convert("RGB").resize((24, 24)).save(d / "source.png")
    Image.open(case1 / "mask.png").convert("L").resize((24, 24)).save(d / "mask.png")
    (d / "config.json").write_text(json.dumps(CFG_JSON))
    return d


def _manifest(d: Path, n: int, name: str) -> Path:
    rows = [
        {"id": f"j{i}", "source": "source.png", "mask": "mask.png", "target": "target.png",
         "center": "{},{}".format(*CENTERS[i % len(CENTERS)]), "seed": i}
        for i in range(n)
    ]  # fmt: skip
    p = d / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


# --------------------------------------------------------------------------- precision


def test_auto_precision_rule_and_default():
    assert BlendConfig().precision == "auto"
    assert [resolve_precision("auto", p) for p in ("cpu", "gpu", "tpu")] == [
        "float32",
        "tf32",
        "bfloat16",
    ]
    assert resolve_precision("auto", "some-new-platform") == "float32"
    for p in ("float32", "bfloat16", "tf32"):
        assert resolve_precision(p, "gpu") == p  # an explicit choice is kept
    assert jax.default_backend() == "cpu" and resolve_precision("auto") == "float32"
    assert set(AUTO_PRECISION.values()) <= {"float32", "tf32", "bfloat16"}


def test_auto_on_cpu_is_float32_byte_for_byte(vgg, images):
    assert vgg_spec(vgg, "auto") == vgg_spec(vgg, "float32")
    job = place(images / "source.png", images / "target.png", images / "mask.png",
                center=(15, 15), canvas=32, source_size=18)  # fmt: skip
    auto = blend_job(job, config=CFG.replace(precision="auto"), vgg=vgg)
    f32 = blend_job(job, config=CFG.replace(precision="float32"), vgg=vgg)
    assert auto.image.tobytes() == f32.image.tobytes()
    assert auto.image_float.tobytes() == f32.image_float.tobytes()
    assert auto.losses == f32.losses


# --------------------------------------------------------------------------- pipeline


def test_pipeline_threads_equal_serial_and_log_follows_images(vgg, images, tmp_path):
    """With host threads (layouts ahead, writes behind) the images and the log are the
    ones the serial run writes; every logged job's image exists."""
    m = _manifest(images, 5, "pipe.jsonl")  # 4 + 1 padded on the 4 host devices
    cfg = images / "config.json"
    assert run_manifest(m, tmp_path / "serial", batch_size=4, config_path=cfg, workers=0) == 0
    assert run_manifest(m, tmp_path / "threads", batch_size=4, config_path=cfg, workers=3) == 0
    for i in range(5):
        a = (tmp_path / "serial" / f"j{i}.png").read_bytes()
        assert a == (tmp_path / "threads" / f"j{i}.png").read_bytes(), i
    recs = [
        json.loads(x) for x in (tmp_path / "threads" / "results.jsonl").read_text().splitlines()
    ]
    assert sorted(r["id"] for r in recs) == [f"j{i}" for i in range(5)]
    assert all(r["status"] == "ok" and Path(r["output"]).exists() for r in recs)
    assert not list((tmp_path / "threads").glob(".*.tmp"))


def test_streamed_buckets_pad_to_the_full_stack(vgg, images):
    """Two canvas shapes interleaved: each bucket is solved when full, its rest padded to
    the full stack (no new program), a bucket that never fills to its own size."""
    jobs = []
    for i in range(7):
        j = {"source": images / "source.png", "mask": images / "mask.png",
             "target": images / "target.png", "center": CENTERS[i % 6], "seed": i}  # fmt: skip
        if i % 3 == 2:
            j["canvas"] = 40  # another shape: 2 jobs in that bucket
        jobs.append(j)
    got = blend_batch(jobs, CFG, batch_size=4, vgg=vgg, workers=2)
    assert [r.image.shape[0] for r in got] == [40 if i % 3 == 2 else 32 for i in range(7)]
    ref = blend_batch(jobs, CFG, batch_size=4, vgg=vgg, workers=0)
    for a, b in zip(got, ref, strict=True):
        assert a.image.tobytes() == b.image.tobytes()


# --------------------------------------------------------------------------- warm-up


def _cache_files(folder: Path) -> set[str]:
    return {p.name for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")}


def _jaxblend(*args, cache: Path, timeout: int = 600, env: dict | None = None):
    e = dict(os.environ, JAXBLEND_CACHE_DIR=str(cache), **(env or {}))
    e.pop("JAXBLEND_COMPILE_CACHE", None)
    cmd = [sys.executable, "-m", "jaxblend", *args]
    return subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=timeout)


def test_warmup_fills_the_cache_a_batch_then_only_reads(images, tmp_path):
    """`jaxblend warmup --manifest` compiles every program `jaxblend batch` then runs: the
    batch (another process, another budget) adds no entry to the compilation cache."""
    cache = tmp_path / "xla"
    m = _manifest(images, 3, "warm.jsonl")  # 3 jobs: one stack of 4 (one padding copy)
    cfg = str(images / "config.json")
    r = _jaxblend("warmup", "--manifest", str(m), "--batch-size", "4", "--config", cfg,
                  cache=cache)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "warmed 1 program set" in r.stdout and str(cache.resolve()) in r.stdout
    warmed = _cache_files(cache)
    assert len(warmed) >= 5  # the stage's programs and the small ones around them
    cfg2 = tmp_path / "c2.json"
    cfg2.write_text(json.dumps({**CFG_JSON, "stage1": {**CFG_JSON["stage1"], "steps": 3}}))
    r = _jaxblend("batch", str(m), "--out-dir", str(tmp_path / "o"), "--batch-size", "4",
                  "--config", str(cfg2), cache=cache)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert _cache_files(cache) == warmed
    recs = [json.loads(x) for x in (tmp_path / "o" / "results.jsonl").read_text().splitlines()]
    assert {r["evaluations"]["stage1"] for r in recs} == {3}


def test_warmup_in_process_then_a_batch_compiles_nothing(vgg, images):
    import logging

    from jaxblend.warmup import warmup

    cfg = CFG.replace(canvas=40)  # a shape no other test compiles
    rows = warmup(cfg, shape=(40, 40), stacks=[4], vgg=vgg)
    assert rows[0]["stack"] == 4 and rows[0]["shape"] == [40, 40]
    records: list[str] = []

    class H(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    h = H()
    logging.getLogger("jax").addHandler(h)
    try:
        with jax.log_compiles(True):
            jobs = [{"source": images / "source.png", "mask": images / "mask.png",
                     "target": images / "target.png", "center": c, "seed": i}
                    for i, c in enumerate(CENTERS[:4])]  # fmt: skip
            out = blend_batch(jobs, cfg, batch_size=4, vgg=vgg)
    finally:
        logging.getLogger("jax").removeHandler(h)
    assert all(r.image.shape == (40, 40, 3) and r.evaluations["stage1"] == 2 for r in out)
    big = [r for r in records if "Compiling" in r and
           any(k in r for k in ("prepare", "start", "advance", "terms", "_solve"))]  # fmt: skip
    assert big == [], big


def test_warmup_single_blend_programs_then_blend_reads_only(images, tmp_path):
    cache = tmp_path / "xla"
    cfg = str(images / "config.json")
    r = _jaxblend("warmup", "--canvas", "32", "--config", cfg, "--quiet", cache=cache)
    assert r.returncode == 0 and r.stderr == "", r.stderr[-3000:]
    warmed = _cache_files(cache)
    from jaxblend.warmup import parse_canvas

    assert parse_canvas("32") == (32, 32) and parse_canvas("24x40") == (24, 40)
    with pytest.raises(jaxblend.errors.InputError):
        parse_canvas("4x")
    # A blend of another 32² job (the target is square) with the same settings.
    code = (
        "import jaxblend, json, sys; from jaxblend.batch import load_config; "
        "jaxblend.enable_compilation_cache(); c = load_config(sys.argv[1]); d = sys.argv[2]; "
        "r = jaxblend.blend(d + '/source.png', d + '/target.png', d + '/mask.png', "
        "center=(16, 15), config=c.replace(steps1=2)); print(r.image.shape)"
    )
    e = dict(os.environ, JAXBLEND_CACHE_DIR=str(cache))
    p = subprocess.run([sys.executable, "-c", code, cfg, str(images)], env=e, text=True,
                       capture_output=True, timeout=600)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    assert "(32, 32, 3)" in p.stdout
    assert _cache_files(cache) == warmed


# --------------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_split_one_manifest_and_write_each_output_once(images, tmp_path):
    n = 6
    m = _manifest(images, n, "dist.jsonl")
    cfg = str(images / "config.json")
    cache = tmp_path / "xla"
    env = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    out = tmp_path / "dist"
    port = _free_port()
    procs = []
    for pid in (0, 1):
        e = dict(os.environ, JAXBLEND_CACHE_DIR=str(cache), **env)
        cmd = [sys.executable, "-m", "jaxblend", "batch", str(m), "--out-dir", str(out),
               "--batch-size", "2", "--config", cfg, "--coordinator", f"127.0.0.1:{port}",
               "--num-processes", "2", "--process-id", str(pid)]  # fmt: skip
        procs.append(subprocess.Popen(cmd, env=e, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))  # fmt: skip
    errs = []
    for p in procs:
        _, err = p.communicate(timeout=600)
        errs.append(err)
        assert p.returncode == 0, err[-3000:]
    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in recs) == sorted(f"j{i}" for i in range(n))  # once each
    assert {r["id"]: r["process"] for r in recs} == {f"j{i}": i % 2 for i in range(n)}
    assert all(r["status"] == "ok" for r in recs)
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"j{i}.png" for i in range(n))
    for pid, err in enumerate(errs):
        assert "3 ok, 0 failed" in err, (pid, err[-2000:])
    # The same manifest in one process: the same bytes (a shard holds one job either way).
    r = _jaxblend("batch", str(m), "--out-dir", str(tmp_path / "one"), "--batch-size", "2",
                  "--config", cfg, cache=cache, env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    for i in range(n):
        a = np.asarray(Image.open(out / f"j{i}.png"))
        b = np.asarray(Image.open(tmp_path / "one" / f"j{i}.png"))
        np.testing.assert_array_equal(a, b)
