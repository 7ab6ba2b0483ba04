"""Masks: RGBA sources, mask making (alpha, plain background, GrabCut), hygiene, previews,
progress lines and file modes."""

from __future__ import annotations

import io as _io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jaxblend import masks
from jaxblend.errors import InputError
from jaxblend.io import place, save_image
from jaxblend.progress import BlendProgress, StatusLine, stage_plan


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return float((a & b).sum() / (a | b).sum())


def cli(*args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "jaxblend", *args], capture_output=True, text=True, timeout=600, **kw
    )


@pytest.fixture
def cutout(case1, tmp_path):
    """case1's source as an RGBA cutout (alpha: a soft-edged copy of the shipped mask) and
    that alpha saved on its own as a grey mask."""
    src = np.asarray(Image.open(case1 / "source.png").convert("RGB"))
    m = np.asarray(Image.open(case1 / "mask.png").convert("L"))
    soft = np.asarray(Image.fromarray(m).resize((125, 125), Image.BILINEAR).resize((500, 500)))
    rgba = tmp_path / "cut.png"
    Image.fromarray(np.dstack([src, soft])).save(rgba)
    alpha = tmp_path / "alpha.png"
    Image.fromarray(soft).save(alpha)
    return rgba, alpha


def synthetic_object(rng, h=120, w=160, jpeg=None, tmp_path=None):
    """A textured ellipse on a plain, slightly noisy background; optionally JPEG-saved."""
    yy, xx = np.mgrid[:h, :w]
    obj = ((yy - 0.55 * h) / (0.3 * h)) ** 2 + ((xx - 0.45 * w) / (0.3 * w)) ** 2 < 1
    obj |= (abs(yy - 0.3 * h) < 0.05 * h) & (abs(xx - 0.7 * w) < 0.15 * w)  # a second part
    im = np.full((h, w, 3), (228, 232, 238), np.float32) + rng.normal(0, 3, (h, w, 3))
    shade = np.stack([160 + 40 * np.sin(xx / 7.0), 70 + 30 * np.cos(yy / 5.0), 50 + 0 * xx], -1)
    im[obj] = shade[obj] + rng.normal(0, 8, (int(obj.sum()), 3))
    im = np.clip(np.round(im), 0, 255).astype(np.uint8)
    if jpeg is None:
        return im, obj
    path = tmp_path / "obj.jpg"
    Image.fromarray(im).save(path, quality=jpeg)
    return path, obj


# --------------------------------------------------------------------------- RGBA sources


def test_rgba_alpha_is_the_mask(case1, cutout):
    rgba, alpha = cutout
    kw = dict(center=(30, 34), canvas=64, source_size=36)
    tgt = case1 / "target.png"
    a = place(rgba, tgt, None, **kw)
    b = place(rgba, tgt, alpha, **kw)
    for f in ("target", "source", "mask"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert a.placement == b.placement
    # the same with a threshold, and from arrays instead of files
    arr = np.asarray(Image.open(rgba))
    c = place(arr, tgt, **kw, mask_threshold=127)
    d = place(rgba, tgt, alpha, **kw, mask_threshold=127)
    np.testing.assert_array_equal(c.mask, d.mask)
    assert c.mask.sum() < a.mask.sum()  # mid-grey cuts the soft rim that "nonzero" keeps


def test_no_mask_and_no_alpha_is_one_clear_error(case1, tmp_path):
    with pytest.raises(InputError, match="no alpha channel.*jaxblend mask"):
        place(case1 / "source.png", case1 / "target.png", canvas=64)
    opaque = tmp_path / "opaque.png"
    Image.open(case1 / "source.png").convert("RGBA").save(opaque)
    with pytest.raises(InputError, match="opaque everywhere"):
        place(opaque, case1 / "target.png", canvas=64)
    with pytest.raises(InputError, match="threshold"):
        place(case1 / "source.png", case1 / "target.png", case1 / "mask.png", mask_threshold=300)


def test_from_alpha_keeps_values_and_manifest_mask_is_optional(cutout, case1, tmp_path):
    from jaxblend.batch import _layout, job_config, read_manifest
    from jaxblend.config import BlendConfig

    rgba, alpha = cutout
    np.testing.assert_array_equal(masks.from_alpha(rgba), np.asarray(Image.open(alpha)))
    with pytest.raises(InputError, match="no alpha"):
        masks.from_alpha(case1 / "source.png")
    man = tmp_path / "jobs.jsonl"
    man.write_text(
        '{"id": "a", "source": "cut.png", "target": "%s", "center": [30, 34], "canvas": 64, '
        '"source_size": 36, "mask_threshold": 127}\n' % (case1 / "target.png")
    )
    (job,) = read_manifest(man)
    assert job["mask"] is None and job["mask_threshold"] == 127
    laid = _layout(job, job_config(BlendConfig(), job))
    ref = place(rgba, case1 / "target.png", alpha, center=(30, 34), canvas=64, source_size=36,
                mask_threshold=127)  # fmt: skip
    np.testing.assert_array_equal(laid.mask, ref.mask)


# --------------------------------------------------------------------------- making masks


def test_plain_background_threshold_recovers_the_object(rng, tmp_path):
    im, obj = synthetic_object(rng)
    assert iou(masks.from_background(im), obj) >= 0.98
    path, obj = synthetic_object(rng, jpeg=80, tmp_path=tmp_path)
    bg = masks.estimate_background(path)
    np.testing.assert_allclose(bg.colour, (228, 232, 238), atol=4)
    assert iou(masks.from_background(path), obj) >= 0.95
    # a border that is not plain is refused with a way out
    with pytest.raises(InputError, match="not a plain background.*grabcut"):
        masks.from_background(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))


def test_mask_cli_threshold_writes_mask_and_preview(rng, tmp_path):
    path, obj = synthetic_object(rng, jpeg=80, tmp_path=tmp_path)
    out = tmp_path / "m.png"
    p = cli("mask", "--source", str(path), "-o", str(out))
    assert p.returncode == 0, p.stderr
    assert "threshold" in p.stdout
    m = np.asarray(Image.open(out))
    assert m.shape == obj.shape and set(np.unique(m)) <= {0, 255}
    assert iou(m, obj) >= 0.95
    prev = np.asarray(Image.open(tmp_path / "m_preview.png"))
    assert prev.shape == (*obj.shape, 3)
    assert (prev == masks.OUTLINE).all(-1).any()  # the outline is drawn
    # bad input: one line, exit 2
    p = cli("mask", "--source", str(path), "--method", "alpha", "-o", str(out))
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "no alpha channel" in p.stderr and "Traceback" not in p.stderr
    p = cli("mask", "--source", str(path), "-o", str(tmp_path / "m.jpg"))
    assert p.returncode == 2 and "PNG" in p.stderr


def test_grabcut_on_case1_from_a_rectangle(case1):
    pytest.importorskip("cv2")
    from scipy import ndimage

    shipped = np.asarray(Image.open(case1 / "mask.png")) > 0
    rect = (250, 60, 410, 476)  # drawn around the glasses
    # GrabCut's own cut takes the glasses as one object, lenses included (their colours do
    # not set them apart from the frame's inside); the shipped mask leaves the lens
    # openings out. Against the shipped mask's outline (its holes filled) it reaches 0.8:
    raw = masks.from_rectangle(case1 / "source.png", rect, openings=False, margin=0) > 0
    assert iou(raw, ndimage.binary_fill_holes(shipped)) >= 0.8
    assert 0.3 <= iou(raw, shipped) < 0.5
    # The defaults cut the lenses out as see-through openings and add the safety margin:
    got = masks.from_rectangle(case1 / "source.png", rect) > 0
    assert iou(got, shipped) >= 0.8
    assert not got[:200].any() and not got[440:].any()  # nothing far outside the glasses
    lbl, n = ndimage.label(~got)
    assert n == 3  # the outside and two lens openings
    # the openings show the face: each is mostly (90%) inside the shipped mask's openings
    holes = ndimage.binary_fill_holes(shipped) & ~shipped
    for j in (lbl[330, 170], lbl[330, 355]):
        assert j > 0 and (holes[lbl == j]).mean() >= 0.9
    # a slightly tighter rectangle does as well (a looser one, down to row 420, lets
    # GrabCut's own cut take the nose, and then the openings do not come out right)
    tighter = masks.from_rectangle(case1 / "source.png", (255, 62, 408, 474)) > 0
    assert iou(tighter, shipped) >= 0.8


def test_grabcut_margin_and_openings_options(case1):
    pytest.importorskip("cv2")
    rect = (250, 60, 410, 476)
    raw = masks.from_rectangle(case1 / "source.png", rect, openings=False, margin=0) > 0
    grown = masks.from_rectangle(case1 / "source.png", rect, openings=False) > 0
    assert (grown >= raw).all() and grown.sum() > raw.sum()  # the margin only adds
    hollow = masks.from_rectangle(case1 / "source.png", rect, margin=0) > 0
    assert (hollow <= raw).all() and hollow.sum() < 0.8 * raw.sum()  # openings only remove
    with pytest.raises(InputError, match="margin"):
        masks.from_rectangle(case1 / "source.png", rect, margin=-1)


def test_grabcut_without_opencv_says_how_to_install(monkeypatch, case1):
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 -> ImportError
    with pytest.raises(InputError, match="pip install opencv-python-headless"):
        masks.from_rectangle(case1 / "source.png", (250, 60, 410, 476))


def test_grabcut_bad_rectangles(case1):
    pytest.importorskip("cv2")
    with pytest.raises(InputError, match="not inside"):
        masks.from_rectangle(case1 / "source.png", (10, 10, 600, 20))
    with pytest.raises(InputError, match="whole image"):
        masks.from_rectangle(case1 / "source.png", (0, 0, 500, 500))


# --------------------------------------------------------------------------- hygiene


def test_soft_mask_warning_counts_affected_pixels(rng):
    hard = np.zeros((100, 100), np.uint8)
    hard[20:80, 30:70] = 255
    assert masks.soft_mask_warning(hard) is None
    assert masks.soft_mask_warning((hard > 0).astype(np.uint8)) is None  # a 0/1 mask
    noisy = np.clip(hard.astype(int) + rng.integers(-12, 13, hard.shape), 0, 255).astype(np.uint8)
    h = masks.mask_health(noisy)
    # independent count of the pixels strictly between 0 and the peak
    expected = np.count_nonzero((noisy > 0) & (noisy < noisy.max())) / noisy.size
    assert h.soft == pytest.approx(expected)
    msg = masks.soft_mask_warning(noisy)
    assert msg is not None and f"{expected:.1%}" in msg and "--mask-threshold 127" in msg
    assert masks.soft_mask_warning(noisy, threshold=127) is None


def test_mask_threshold_cuts_a_jpeg_mask(case1, tmp_path):
    m = np.asarray(Image.open(case1 / "mask.png"))
    jpg = tmp_path / "mask.jpg"
    Image.fromarray(m).save(jpg, quality=60)
    kw = dict(center=(200, 235), canvas=512, source_size=300)
    ref = place(case1 / "source.png", case1 / "target.png", case1 / "mask.png", **kw).mask
    any_nonzero = place(case1 / "source.png", case1 / "target.png", jpg, **kw).mask
    mid = place(case1 / "source.png", case1 / "target.png", jpg, **kw, mask_threshold=127).mask
    assert any_nonzero.sum() > 1.05 * ref.sum()  # JPEG ringing grows "any nonzero"
    assert iou(mid, ref) > iou(any_nonzero, ref)
    assert masks.soft_mask_warning(Image.open(jpg)) is not None


# --------------------------------------------------------------------------- previews


def test_overlay_and_placement_preview(case1):
    m = np.asarray(Image.open(case1 / "mask.png"))
    ov = masks.overlay(case1 / "source.png", m)
    src = np.asarray(Image.open(case1 / "source.png").convert("RGB"))
    inner = masks._erode(m > 0, 4)
    np.testing.assert_array_equal(ov[inner], src[inner])  # the object is shown as it is
    assert (ov[~masks._dilate(m > 0, 2)] <= 0.35 * 255 + 0.25 * 255 + 1).all()
    job = place(case1 / "source.png", case1 / "target.png", case1 / "mask.png",
                center=(100, 117), canvas=256, source_size=150)  # fmt: skip
    pv = masks.placement_preview(job)
    edge = masks.outline(job.mask)
    assert (pv[edge] == masks.OUTLINE).all()
    far = ~masks._dilate(job.mask > 0, 2)
    far[job.placement.top : job.placement.top + job.placement.height] = False
    np.testing.assert_array_equal(pv[far], np.round(job.target[far]).astype(np.uint8))


# --------------------------------------------------------------------------- progress


def _drive(progress, plan):
    for stage, scale, budget in plan:
        n = 0
        while n < budget:
            n = min(budget, n + 10)
            progress({"stage": stage, "scale": scale, "evaluations": n, "budget": budget,
                      "loss": 1.0 / n})  # fmt: skip


def test_progress_off_a_terminal_is_plain_lines():
    from jaxblend.config import BlendConfig

    cfg = BlendConfig().replace(steps1=30, steps2=20)
    buf = _io.StringIO()  # not a terminal
    p = BlendProgress(buf)
    p.phase("loading weights: vgg16")
    p.expect(cfg)
    _drive(p, stage_plan(cfg))
    p.phase("writing out.png")
    p.close()
    text = buf.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[0].endswith("loading weights: vgg16")
    assert "stage1: compiling" in lines[1]
    first = next(ln for ln in lines if "10/30 evals" in ln)
    assert "incl. compiling" in first and "eta measuring" in first  # no made-up ETA
    assert "eta 0.0s" not in first and "0.0s eta" not in first
    second = next(ln for ln in lines if "20/30 evals" in ln)
    assert "s/eval" in second and "eta " in second and "measuring" not in second
    assert any("stage1 done: 30 evaluations" in ln for ln in lines)
    assert any("stage2: compiling" in ln for ln in lines)
    assert lines[-1].endswith("writing out.png")
    quiet = _io.StringIO()
    q = BlendProgress(quiet, quiet=True)
    q.phase("x")
    q.expect(cfg)
    _drive(q, stage_plan(cfg))
    assert quiet.getvalue() == ""


def test_progress_on_a_terminal_rewrites_one_line():
    buf = _io.StringIO()
    s = StatusLine(buf, tty=True)
    s.update("stage1 [##..] 10/40")
    s.update("stage1 [#...] 2")
    s.note("done")
    assert buf.getvalue() == "\rstage1 [##..] 10/40\rstage1 [#...] 2    \ndone\n"


def test_stage_plan_follows_the_coarse_scales():
    from jaxblend.config import BlendConfig

    cfg = BlendConfig().replace(steps1=41, steps2=7, scales=(0.5, 1.0))
    assert stage_plan(cfg) == [("stage1", 0.5, 20), ("stage1", 1.0, 21), ("stage2", 1.0, 7)]
    assert stage_plan(cfg.replace(stage2_enabled=False))[-1] == ("stage1", 1.0, 21)


# --------------------------------------------------------------------------- file modes


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_saved_images_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = save_image(np.zeros((4, 4, 3), np.uint8), tmp_path / "a.png")
        with open(tmp_path / "ref.txt", "w") as f:  # what open() gives, for comparison
            f.write("x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode
    assert (tmp_path / "ref.txt").stat().st_mode & 0o777 == mode
    assert not list(tmp_path.glob(".*.tmp"))
