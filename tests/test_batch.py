"""Batch blending: stacks equal single jobs, sharding, padding, manifests, kill and resume.

One tiny configuration (canvas 32, VGG blocks 1–2, a few steps, stage 1 only) and one
stack size (4, the host device count) throughout, so the compiled programs are shared.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

import jaxblend
from jaxblend import BlendConfig, StageConfig
from jaxblend.batch import blend_batch, load_config, read_manifest, run_manifest
from jaxblend.blend import blend_job
from jaxblend.errors import InputError
from jaxblend.io import place

SHALLOW = (("relu1_2", 1.0), ("relu2_2", 1.0))
CFG = BlendConfig(
    stage1=StageConfig(grad=1.0, content=1e-3, style=3e-4, hist=1e-4, tv=1e-6, steps=4,
                       style_layers=SHALLOW, hist_layers=(("relu2_2", 1.0),)),
    stage2_enabled=False, canvas=32, source_size=18, init="noise", chunk=100, solver="lbfgs",
)  # fmt: skip
CFG_JSON = {
    "canvas": 32, "source_size": 18, "init": "noise", "chunk": 100, "stage2_enabled": False,
    "solver": "lbfgs",
    "stage1": {"grad": 1.0, "content": 1e-3, "style": 3e-4, "hist": 1e-4, "tv": 1e-6, "range": 0,
               "steps": 4, "style_layers": [list(x) for x in SHALLOW],
               "hist_layers": [["relu2_2", 1.0]], "normalize": False,
               "content_layers": [["relu2_2", 1.0]]},
}  # fmt: skip
STACK = 4
CENTERS = [(13, 15), (16, 16), (15, 14), (17, 15), (14, 17), (16, 13)]


@pytest.fixture(scope="module")
def vgg():
    return jaxblend.load_vgg()


@pytest.fixture(scope="module")
def images(case1, tmp_path_factory) -> Path:
    """case1 shrunk to a 48-pixel target and a 24-pixel source, plus a manifest folder."""
    d = tmp_path_factory.mktemp("imgs")
    Image.open(case1 / "target.png").convert("RGB").resize((48, 48)).save(d / "target.png")
    Image.open(case1 / "source.png").convert("RGB").resize((24, 24)).save(d / "source.png")
    Image.open(case1 / "mask.png").convert("L").resize((24, 24)).save(d / "mask.png")
    (d / "config.json").write_text(json.dumps(CFG_JSON))
    return d


def _jobs(d: Path, n: int) -> list[dict]:
    return [
        {"id": f"j{i}", "source": d / "source.png", "mask": d / "mask.png",
         "target": d / "target.png", "center": CENTERS[i % len(CENTERS)], "seed": i}
        for i in range(n)
    ]  # fmt: skip


def _manifest(d: Path, jobs: list[dict], name: str = "m.jsonl") -> Path:
    p = d / name
    lines = []
    for j in jobs:
        row = {k: (v.name if isinstance(v, Path) else v) for k, v in j.items()}
        row["center"] = f"{j['center'][0]},{j['center'][1]}"
        lines.append(json.dumps(row))
    p.write_text("\n".join(lines) + "\n")
    return p


def test_config_json_matches_and_stack_size_rounds(images):
    assert load_config(images / "config.json") == CFG
    assert jax.device_count() == 4


def test_stack_equals_single_jobs(vgg, images):
    """Each job of a padded stack equals :func:`blend_job` on it alone (same seed)."""
    jobs = _jobs(images, 3)  # 3 jobs on a stack of 4: one padding copy
    got = blend_batch(jobs, CFG, batch_size=STACK, vgg=vgg)
    for j, r in zip(jobs, got, strict=True):
        one = place(j["source"], j["target"], j["mask"], center=j["center"], canvas=32,
                    source_size=18)  # fmt: skip
        ref = blend_job(one, config=CFG.replace(seed=j["seed"]), vgg=vgg)
        np.testing.assert_allclose(r.image_float, ref.image_float, rtol=1e-3, atol=0.05)
        assert r.evaluations == ref.evaluations


def test_sharded_over_four_devices_equals_one_device(vgg, images):
    """A stack of 4 jobs sharded over the 4 host CPU devices (one job each) gives, bit for
    bit, what one device gives for each job; the same stack on one device (a batch of 4 in
    each convolution, summed in another order) the same PNG bytes."""
    assert jax.device_count() == 4
    jobs = _jobs(images, 4)
    sharded = blend_batch(jobs, CFG, batch_size=STACK, vgg=vgg)
    alone = blend_batch(jobs, CFG, batch_size=1, vgg=vgg, devices=jax.devices()[:1])
    stacked = blend_batch(jobs, CFG, batch_size=STACK, vgg=vgg, devices=jax.devices()[:1])
    for a, b, c in zip(sharded, alone, stacked, strict=True):
        np.testing.assert_array_equal(a.image_float, b.image_float)
        assert a.evaluations == b.evaluations == c.evaluations
        np.testing.assert_array_equal(a.image, c.image)
        np.testing.assert_allclose(a.image_float, c.image_float, rtol=0, atol=1e-3)


def test_remainder_stack_does_not_recompile(vgg, images):
    blend_batch(_jobs(images, 1), CFG, batch_size=STACK, vgg=vgg)  # warm: 1 + 3 padded
    records: list[str] = []

    class H(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    h = H()
    logging.getLogger("jax").addHandler(h)
    try:
        with jax.log_compiles(True):
            out = blend_batch(_jobs(images, 5), CFG, batch_size=STACK, vgg=vgg)  # 4 + 1 padded
    finally:
        logging.getLogger("jax").removeHandler(h)
    assert len(out) == 5 and all(r.image.shape == (32, 32, 3) for r in out)
    big = [r for r in records if "Compiling" in r and
           any(k in r for k in ("prepare", "start", "advance", "terms"))]  # fmt: skip
    assert big == [], big


def test_manifest_with_bad_jobs_finishes_good_ones(images, tmp_path, capsys):
    bad = images / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    jobs = _jobs(images, 4)
    jobs[1]["source"] = bad
    jobs[2]["mask"] = images / "missing.png"
    jobs[3]["center"] = (2, 2)  # outside the canvas
    jobs += [dict(j, id=f"g{k}") for k, j in enumerate(_jobs(images, 3))]
    out = tmp_path / "out"
    rc = run_manifest(_manifest(images, jobs, "bad.jsonl"), out, batch_size=STACK,
                      config_path=images / "config.json")  # fmt: skip
    assert rc == 1
    recs = {r["id"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert {k for k, r in recs.items() if r["status"] == "ok"} == {"j0", "g0", "g1", "g2"}
    assert "not a readable image" in recs["j1"]["error"]
    assert "not found" in recs["j2"]["error"]
    assert "outside" in recs["j3"]["error"]
    for k in ("j0", "g0", "g1", "g2"):
        assert np.asarray(Image.open(out / f"{k}.png")).shape == (32, 32, 3)
    assert not (out / "j1.png").exists()
    err = capsys.readouterr().err
    assert "4 ok, 3 failed, 0 skipped" in err

    # Resume: the finished jobs are skipped and only the failed ones are tried again.
    t = time.perf_counter()
    rc = run_manifest(_manifest(images, jobs, "bad.jsonl"), out, batch_size=STACK,
                      config_path=images / "config.json")  # fmt: skip
    assert rc == 1 and time.perf_counter() - t < 10
    err = capsys.readouterr().err
    assert "0 ok, 3 failed, 4 skipped" in err


@pytest.mark.parametrize(
    "text, match",
    [
        ('{"id": "a", "source": "s.png", "mask": "m.png", "target": "t.png", "center": "1,2"}\n'
         '{"id": "a", "source": "s.png", "mask": "m.png", "target": "t.png", "center": "1,2"}',
         "duplicate id"),
        ('{"source": "s.png", "mask": "m.png", "target": "t.png", "center": "1,2"}', "missing id"),
        ('{"id": "a", "source": "s.png"', "not valid JSON"),
        ('{"id": "a", "source": "s.png", "mask": "m.png", "target": "t.png"}', "missing center"),
    ],
)  # fmt: skip
def test_bad_manifest_is_one_line_input_error(text, match, tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text(text)
    with pytest.raises(InputError, match=match) as e:
        read_manifest(p)
    assert "\n" not in str(e.value)


def test_csv_manifest_and_bad_config(images, tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("id,source,mask,target,center_row,center_col,steps\na,s.png,m.png,t.png,3,4,2 3\n")
    (job,) = read_manifest(p)
    assert job["center"] == (3.0, 4.0) and job["steps"] == (2, 3)
    assert job["source"] == tmp_path / "s.png"
    c = tmp_path / "c.json"
    for text, match in [
        ('{"canvs": 3}', "unknown setting"),
        ('{"stage1": {"steps": "x"}}', "stage1: steps must be an integer"),
        ("{", "not valid JSON"),
        ('{"init": "zz"}', "init"),
    ]:
        c.write_text(text)
        with pytest.raises(InputError, match=match) as e:
            load_config(c)
        assert "\n" not in str(e.value)


def _cli(*args, **kw):
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=kw.pop("cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")  # fmt: skip
    cmd = [sys.executable, "-m", "jaxblend", "batch", *args]
    pipe = subprocess.PIPE
    return subprocess.Popen(cmd, env=env, stdout=pipe, stderr=pipe, text=True, **kw)


def test_cli_bad_manifest_exit_2_one_line(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"id": "a"}\n')
    r = _cli(str(p), "--out-dir", str(tmp_path / "o"), cache=str(tmp_path / "cache"))
    _, err = r.communicate(timeout=120)
    assert r.returncode == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("jaxblend: error:"), err


def test_sigkill_mid_batch_then_rerun_equals_uninterrupted(images, tmp_path):
    man = _manifest(images, _jobs(images, 12), "kill.jsonl")  # 3 stacks of 4
    args = [str(man), "--batch-size", str(STACK), "--config", str(images / "config.json")]
    cache = str(tmp_path / "cache")
    ref = _cli(*args, "--out-dir", str(tmp_path / "ref"), "--quiet", cache=cache)
    _, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, err

    out = tmp_path / "killed"
    p = _cli(*args, "--out-dir", str(out), "--quiet", cache=cache)
    log = out / "results.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and p.poll() is None:
        if log.exists() and log.read_bytes().count(b"\n") >= 1:
            break
        time.sleep(0.005)
    killed = p.poll() is None
    p.send_signal(signal.SIGKILL)
    p.communicate()
    lines_at_kill = log.read_bytes().count(b"\n") if log.exists() else 0
    for f in out.glob("*.png"):  # nothing partial under a final name, ever
        Image.open(f).load()

    again = _cli(*args, "--out-dir", str(out), cache=cache)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    if killed and lines_at_kill < 12:
        assert f"{lines_at_kill} jobs already done" in err or lines_at_kill == 0, err
    for i in range(12):
        a = np.asarray(Image.open(tmp_path / "ref" / f"j{i}.png"))
        b = np.asarray(Image.open(out / f"j{i}.png"))
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1, i
    recs = [json.loads(x) for x in log.read_text().splitlines()]
    assert {r["id"] for r in recs if r["status"] == "ok"} == {f"j{i}" for i in range(12)}

    # A second rerun does no work at all.
    with warnings.catch_warnings():
        rerun = _cli(*args, "--out-dir", str(out), cache=cache)
        _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0 and "0 ok, 0 failed, 12 skipped" in err, err
    assert len(log.read_text().splitlines()) == len(recs)


class _FakeAccelerator:
    """A device with memory statistics, as GPUs and TPUs report them."""

    platform = "gpu"

    def __init__(self, limit: int, in_use: int = 0):
        self._stats = {"bytes_limit": limit, "bytes_in_use": in_use}

    def memory_stats(self):
        return self._stats


def test_auto_batch_size_from_measured_per_job_bytes(vgg):
    from jaxblend.batch import AUTO_CAP, _per_job_bytes, auto_batch_size

    small, how = _per_job_bytes(CFG, vgg, (32, 32, 3))
    big, _ = _per_job_bytes(CFG, vgg, (64, 64, 3))
    assert how == "measured"
    # A job holds at least its image, target, source, mask and L-BFGS history (float32) ...
    history = 2 * CFG.history * 32 * 32 * 3 * 4
    assert small >= 4 * 32 * 32 * 3 * 4 + history
    # ... and its memory grows with the canvas area.
    assert 3.0 < big / small < 5.0
    # Half the free device memory, over the per-job bytes, rounded to the device count.
    devs = [_FakeAccelerator(limit=40 * small + 6 * small, in_use=6 * small)] * 2
    n, per_job, _ = auto_batch_size(CFG, vgg, (32, 32, 3), devs)
    assert per_job == small and n == 40
    devs = [_FakeAccelerator(limit=2 * 7 * small)] * 2
    assert auto_batch_size(CFG, vgg, (32, 32, 3), devs)[0] == 14
    assert auto_batch_size(CFG, vgg, (32, 32, 3), [_FakeAccelerator(small)])[0] == 1
    huge = [_FakeAccelerator(limit=10**6 * small)] * 4
    assert auto_batch_size(CFG, vgg, (32, 32, 3), huge)[0] == AUTO_CAP


def test_per_job_bytes_counts_the_window_a_small_object_runs_on(vgg, monkeypatch):
    """With the job's mask, the per-job bytes are those of the windowed program the job
    runs (a small object on its canvas: far less than the canvas's program)."""
    import functools

    from jaxblend import window
    from jaxblend.batch import _per_job_bytes

    cfg = BlendConfig(
        stage1=StageConfig(grad=1.0, content=1.0, style=1.0, steps=2, style_layers=SHALLOW,
                           content_layers=(("relu2_2", 1.0),)),
        stage2_enabled=False, canvas=64, init="noise",
    )  # fmt: skip
    monkeypatch.setattr(window, "plan", functools.partial(window.plan, bucket=8))
    m = np.zeros((64, 64), np.float32)
    m[30:34, 30:34] = 1
    geom = window.plan(cfg.stage1, "vgg16", m)
    assert geom is not None and geom.size[0] * geom.size[1] <= 0.4 * 64 * 64
    full, _ = _per_job_bytes(cfg, vgg, (64, 64, 3))
    win, how = _per_job_bytes(cfg, vgg, (64, 64, 3), m)
    assert how == "measured"
    assert win < 0.6 * full


def test_cli_batch_size_auto_runs_and_reports(images, tmp_path):
    m = _manifest(images, _jobs(images, 2), name="auto.jsonl")
    cmd = [sys.executable, "-m", "jaxblend", "batch", str(m), "--out-dir", str(tmp_path),
           "--batch-size", "auto", "--config", str(images / "config.json")]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    line = next(s for s in r.stderr.splitlines() if s.startswith("batch size auto:"))
    n = int(line.split()[3])
    assert n >= 1 and n % jax.device_count() == 0 and "measured" in line
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["j0.png", "j1.png"]


def _mixed_jobs(n: int = 8, size: int = 40) -> list[dict]:
    """Jobs of mixed difficulty on one canvas: flat or noisy sources of different
    brightness, small and large discs, with and without holes (the Poisson start of a small
    flat disc converges in a couple of iterations, a large noisy ring takes several)."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    y2, x2 = np.mgrid[:24, :24]
    jobs = []
    for i in range(n):
        rng = np.random.default_rng(i)
        t = np.stack([120 + 60 * np.sin(xx / (4 + i) + c) + 40 * np.cos(yy / (3 + i))
                      for c in range(3)], -1)  # fmt: skip
        amp = [5, 255, 60, 255, 0, 200, 30, 255][i % 8]
        src = np.clip(rng.uniform(0, amp, (24, 24, 3)) + 20 * i, 0, 255)
        r = [3, 11, 7, 10, 2, 9, 5, 11][i % 8]
        m = ((y2 - 12) ** 2 + (x2 - 12) ** 2 < r * r).astype(np.uint8) * 255
        if i % 2:
            m[(y2 - 12) ** 2 + (x2 - 12) ** 2 < (r // 2) ** 2] = 0
        jobs.append({"source": src.astype(np.uint8), "mask": m, "target": t.astype(np.uint8),
                     "center": (20, 20), "seed": i})  # fmt: skip
    return jobs


@pytest.mark.parametrize("init", ["poisson", "paste", "noise"])
def test_stacked_equals_single_for_every_init(vgg, init):
    """A job's output is the same, byte for byte, alone (blend_job) or in a stack of 1, 3
    or 8 (padded, sharded) of jobs of mixed difficulty, for every init. The stacked Poisson
    start used to stop on the whole stack's residual, which moved jobs by grey levels."""
    cfg = CFG.replace(init=init, canvas=None, source_size=None, steps1=1)
    jobs = _mixed_jobs()
    alone = [
        blend_job(place(j["source"], j["target"], j["mask"], center=j["center"], canvas=None),
                  config=cfg.replace(seed=j["seed"]), vgg=vgg).image
        for j in jobs
    ]  # fmt: skip
    for n in (1, 3, 8):
        for start in range(0, len(jobs), n):
            got = blend_batch(jobs[start : start + n], cfg, batch_size=n, vgg=vgg)
            for k, r in enumerate(got):
                np.testing.assert_array_equal(r.image, alone[start + k], err_msg=f"{n} {k}")
