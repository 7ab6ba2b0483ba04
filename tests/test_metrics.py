"""Quality figures on constructed cases whose answer is known, and against SciPy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from jaxblend import metrics
from jaxblend.lpips import load_lpips, lpips_distance

H = W = 64


def _texture(rng, sigma=1.5, amp=40.0, base=(120.0, 110.0, 100.0)):
    x = rng.normal(size=(H, W, 3))
    x = np.stack([ndimage.gaussian_filter(x[..., c], sigma) for c in range(3)], -1)
    x = x / x.std() * amp
    return np.clip(np.asarray(base) + x, 0, 255)


@pytest.fixture
def job(rng):
    source = _texture(rng, base=(200, 90, 60))
    target = _texture(rng, sigma=2.0, base=(60, 120, 170))
    yy, xx = np.mgrid[:H, :W]
    mask = ((yy - 32) ** 2 / 18**2 + (xx - 30) ** 2 / 22**2 <= 1).astype(np.float32)
    m = mask[..., None] > 0.5
    naive = np.where(m, source, target)
    return source, target, mask, naive


def test_dilate_erode_match_scipy(rng):
    m = ndimage.gaussian_filter(rng.normal(size=(40, 50)), 3) > 0.1
    for r in (1, 1.5, 3, 4):
        disk = np.hypot(*np.mgrid[-4:5, -4:5]) <= r
        np.testing.assert_array_equal(metrics.dilate(m, r), ndimage.binary_dilation(m, disk))
        want = ndimage.binary_erosion(np.pad(m, 5), disk)[5:-5, 5:-5]
        np.testing.assert_array_equal(metrics.erode(m, r), want)


def test_ghosting_naive_is_zero_and_mix_is_half(job):
    source, target, mask, naive = job
    g, s = metrics.ghosting(naive, source, target, mask)
    assert abs(g) < 1e-9 and abs(s - 1) < 1e-9
    m = mask[..., None] > 0.5
    for alpha in (0.5, 0.25):
        mix = np.where(m, (1 - alpha) * source + alpha * target, target)
        g, s = metrics.ghosting(mix, source, target, mask)
        assert g == pytest.approx(alpha, abs=1e-6) and s == pytest.approx(1 - alpha, abs=1e-6)


def test_ghosting_ignores_added_texture_and_smooth_corrections(job, rng):
    source, target, mask, naive = job
    m = mask[..., None] > 0.5
    yy = np.mgrid[:H, :W][0][..., None]
    stylised = np.where(m, source + 0.5 * _texture(rng, base=(0, 0, 0)) + 0.4 * yy, target)
    g, s = metrics.ghosting(stylised, source, target, mask)
    assert abs(g) < 0.1 and abs(s - 1) < 0.1


def test_outline_rises_with_a_bright_or_dark_line(job):
    source, target, mask, naive = job
    assert metrics.outline(naive, naive, mask) == 0.0
    m = mask > 0.5
    inner = m & ~metrics.erode(m, 1)
    for sign in (1, -1):
        line = naive.copy()
        line[inner] = np.clip(line[inner] + sign * 60, 0, 255)
        assert metrics.outline(line, naive, mask) > 15


def test_outline_ignores_smooth_changes_and_texture(job, rng):
    source, target, mask, naive = job
    m = mask[..., None] > 0.5
    yy, xx = np.mgrid[:H, :W]
    smooth = (20 * np.exp(-((yy - 30) ** 2 + (xx - 20) ** 2) / 400) + 0.3 * xx)[..., None]
    assert metrics.outline(naive + smooth * m, naive, mask) < 1.0
    noisy = naive + m * rng.normal(size=naive.shape) * 20
    assert metrics.outline(noisy, naive, mask) < 3.0


def test_seam_error_matches_scipy(job, rng):
    source, target, mask, naive = job
    result = naive + rng.normal(size=naive.shape) * 3
    k = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], np.float64)

    def lap(x):
        return np.stack([ndimage.convolve(x[..., c], k, mode="nearest") for c in range(3)], -1)

    m = mask > 0.5
    guide = lap(source) * m[..., None] + lap(target) * ~m[..., None]
    region = ndimage.binary_dilation(m, np.hypot(*np.mgrid[-4:5, -4:5]) <= 4)
    want = np.sqrt(np.mean((lap(result) - guide)[region] ** 2))
    assert metrics.seam_error(result, source, target, mask) == pytest.approx(want, rel=1e-12)
    assert metrics.seam_error(np.where(m[..., None], source, target), source, target, mask) > 0


def test_contrast_of_a_half_faded_object(job):
    source, target, mask, naive = job
    m = mask[..., None] > 0.5
    inner = metrics.erode(mask > 0.5, 2)
    mean = naive[inner].mean(axis=0)
    faded = np.where(m, mean + 0.5 * (naive - mean), target)
    assert metrics.contrast(naive, naive, mask) == pytest.approx(1.0)
    assert metrics.contrast(faded, naive, mask) == pytest.approx(0.5, rel=1e-9)


def test_fidelity_is_lpips_on_the_object_box(job, rng):
    source, target, mask, naive = job
    assert metrics.object_fidelity(naive, naive, mask) == pytest.approx(0.0, abs=1e-7)
    m = mask[..., None] > 0.5
    mix = np.where(m, 0.5 * source + 0.5 * target, target)
    got = metrics.object_fidelity(mix, naive, mask, pad=100)  # box = the whole canvas
    want = float(lpips_distance(load_lpips().params, mix, naive))
    assert got == pytest.approx(want, rel=1e-5) and got > 0.01


def test_style_distance_is_one_for_the_naive_paste_and_zero_for_the_target(job):
    source, target, mask, naive = job
    assert metrics.style_distance(naive, target, naive) == pytest.approx(1.0, rel=1e-6)
    assert metrics.style_distance(target, target, naive) == pytest.approx(0.0, abs=1e-9)
    m = mask[..., None] > 0.5
    mix = np.where(m, 0.5 * source + 0.5 * target, target)
    assert 0 < metrics.style_distance(mix, target, naive) < 1
    layers = metrics.style_layers(mix, target, naive)
    assert len(layers) == 5 and all(0 < v < 1 for v in layers)
    assert np.mean(layers) == pytest.approx(metrics.style_distance(mix, target, naive))
    assert metrics.style_layers(naive, target, naive) == pytest.approx([1.0] * 5, rel=1e-6)
    scorer = metrics.Scorer(source, target, mask)
    assert scorer.style_layers(mix) == pytest.approx(layers, rel=1e-6)


def test_scorer_gives_every_figure_and_checks_shapes(job):
    source, target, mask, naive = job
    s = metrics.Scorer(source, target, mask)
    q = s(naive)
    assert tuple(q) == metrics.FIGURES
    assert q["ghosting"] == pytest.approx(0, abs=1e-9) and q["style"] == pytest.approx(1)
    assert q == pytest.approx(metrics.score(naive, source, target, mask))
    with pytest.raises(ValueError, match="canvas"):
        s(naive[:32])
    with pytest.raises(ValueError, match="mask is empty"):
        metrics.Scorer(source, target, np.zeros((H, W)))
