"""Each loss term against an independent NumPy reference on small arrays."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from jaxblend import losses


def np_laplacian(x):
    # scipy.ndimage.convolve with mode="nearest" = edge replication, the kernel of the
    # authors' code.
    k = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], np.float64)
    return np.stack(
        [ndimage.convolve(x[..., c], k, mode="nearest") for c in range(x.shape[-1])], -1
    )


def np_forward(x):
    xp = np.pad(x, ((0, 1), (0, 1), (0, 0)), mode="edge")
    return np.stack([xp[1:, :-1] - x, xp[:-1, 1:] - x], -1)


def test_laplacian_matches_scipy(rng):
    x = rng.uniform(0, 255, (13, 17, 3))
    np.testing.assert_allclose(jax.jit(losses.laplacian)(x), np_laplacian(x), rtol=1e-5, atol=1e-3)


def test_laplacian_of_constant_is_zero():
    np.testing.assert_array_equal(losses.laplacian(jnp.full((8, 9, 3), 77.0)), 0.0)


def test_forward_differences(rng):
    x = rng.uniform(0, 255, (6, 7, 2))
    np.testing.assert_allclose(losses.forward_differences(x), np_forward(x), atol=1e-4)


def test_guidance_normal_and_gradient_loss(rng):
    s, t = rng.uniform(0, 255, (2, 10, 12, 3))
    m = np.zeros((10, 12))
    m[3:7, 2:9] = 1
    g = np.asarray(losses.guidance(s, t, m))
    ref = np_laplacian(s) * m[..., None] + np_laplacian(t) * (1 - m[..., None])
    np.testing.assert_allclose(g, ref, rtol=1e-5, atol=1e-3)
    b = rng.uniform(0, 255, (10, 12, 3))
    want = np.mean((np_laplacian(b) - ref) ** 2)
    got = jax.jit(losses.gradient_loss)(b, g)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    gg = losses.guidance(s, t, m, operator="gradient")
    refg = np_forward(s) * m[..., None, None] + np_forward(t) * (1 - m[..., None, None])
    np.testing.assert_allclose(gg, refg, atol=1e-3)
    np.testing.assert_allclose(
        losses.gradient_loss(b, gg, operator="gradient"),
        np.mean((np_forward(b) - refg) ** 2),
        rtol=1e-5,
    )


def test_guidance_mixed(rng):
    s, t = rng.uniform(0, 255, (2, 9, 11, 3))
    m = np.zeros((9, 11))
    m[2:7, 3:9] = 1
    # Mixed with source == target is the plain Laplacian.
    np.testing.assert_allclose(
        losses.guidance(t, t, m, mixed=True), np_laplacian(t), rtol=1e-5, atol=1e-3
    )
    # Reference: per forward difference the larger in magnitude inside the mask, then
    # Σ_q (f_p − f_q) assembled pair by pair.
    gs, gt = np_forward(s), np_forward(t)
    v = np.where(np.abs(gs) > np.abs(gt), gs, gt)
    v = v * m[..., None, None] + gt * (1 - m[..., None, None])
    ref = np.zeros_like(s)
    h, w = m.shape
    for i in range(h):
        for j in range(w):
            if i + 1 < h:
                ref[i, j] -= v[i, j, :, 0]
                ref[i + 1, j] += v[i, j, :, 0]
            if j + 1 < w:
                ref[i, j] -= v[i, j, :, 1]
                ref[i, j + 1] += v[i, j, :, 1]
    np.testing.assert_allclose(losses.guidance(s, t, m, mixed=True), ref, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(
        losses.guidance(s, t, m, operator="gradient", mixed=True), v, atol=1e-4
    )


def test_content_loss_masked_and_unmasked(rng):
    f = {"a": rng.normal(size=(4, 6, 5)), "b": rng.normal(size=(2, 3, 7))}
    r = {"a": rng.normal(size=(4, 6, 5)), "b": rng.normal(size=(2, 3, 7))}
    mask = (rng.uniform(size=(8, 12)) > 0.5).astype(np.float64)
    w = {"a": 2.0, "b": 0.5}
    want = 0.0
    for k, a in w.items():
        h, ww = f[k].shape[:2]
        kk = 8 // h
        ml = mask.reshape(h, kk, ww, kk).mean(axis=(1, 3))[..., None]
        want += a * np.mean((f[k] * ml - r[k] * ml) ** 2)
    np.testing.assert_allclose(losses.content_loss(f, r, mask, weights=w), want, rtol=1e-5)
    want_u = sum(a * np.mean((f[k] - r[k]) ** 2) for k, a in w.items())
    np.testing.assert_allclose(losses.content_loss(f, r, None, weights=w), want_u, rtol=1e-5)


def test_gram_and_style_loss(rng):
    f = rng.normal(size=(5, 4, 6))
    g = f.reshape(-1, 6).T @ f.reshape(-1, 6) / (5 * 4 * 6)
    np.testing.assert_allclose(jax.jit(losses.gram)(f), g, rtol=1e-5, atol=1e-7)
    t = rng.normal(size=(6, 6))
    np.testing.assert_allclose(
        losses.style_loss({"x": f}, {"x": t}, weights={"x": 3.0}),
        3 * np.mean((g - t) ** 2),
        rtol=1e-5,
    )


def test_histogram_match_exact_on_permutation(rng):
    # The feature is a permutation of the target's values: matching must reproduce the
    # target exactly, value for value, in the feature's rank order.
    t = rng.normal(size=(6, 5, 3))
    perm = rng.permutation(30)
    f = t.reshape(30, 3)[perm].reshape(6, 5, 3) * 0.1 + 7.0  # same ranks, other values
    r = losses.histogram_match(f, losses.sorted_channels(t.reshape(30, 3)[perm].reshape(6, 5, 3)))
    np.testing.assert_allclose(r, t.reshape(30, 3)[perm].reshape(6, 5, 3), rtol=1e-6)


def test_histogram_match_resamples_quantiles(rng):
    f = rng.normal(size=(4, 4, 2))
    t = rng.normal(size=(8, 8, 2))
    ts = np.sort(t.reshape(-1, 2), axis=0)
    q = np.linspace(0, 63, 16)
    res = np.stack([np.interp(q, np.arange(64), ts[:, c]) for c in range(2)], -1)
    ref = np.empty((16, 2))
    flat = f.reshape(16, 2)
    for c in range(2):
        ref[np.argsort(flat[:, c]), c] = res[:, c]
    got = losses.histogram_match(f, losses.sorted_channels(t))
    np.testing.assert_allclose(got, ref.reshape(4, 4, 2), rtol=1e-5, atol=1e-6)
    # Matched values are held constant: the loss's gradient is 2γ(F − R)/n.
    r = np.asarray(got)
    grad = jax.grad(lambda x: losses.histogram_loss({"l": x}, {"l": ts}, weights={"l": 1.5}))(
        jnp.asarray(f)
    )
    np.testing.assert_allclose(grad, 1.5 * 2 * (f - r) / f.size, rtol=1e-4, atol=1e-7)


def test_tv_loss(rng):
    x = rng.uniform(0, 255, (7, 8, 3))
    want = np.abs(np.diff(x, axis=0)).sum() + np.abs(np.diff(x, axis=1)).sum()
    np.testing.assert_allclose(jax.jit(losses.tv_loss)(x), want, rtol=1e-5)


@pytest.mark.parametrize("name", ["grad", "content", "style", "hist", "tv"])
def test_gradients_finite(name, rng):
    x = jnp.asarray(rng.uniform(0, 255, (8, 8, 3)), jnp.float32)
    m = np.zeros((8, 8), np.float32)
    m[2:6, 2:6] = 1
    t = jnp.asarray(rng.uniform(0, 255, (8, 8, 3)), jnp.float32)
    fr = {"l": jnp.asarray(rng.normal(size=(4, 4, 3)), jnp.float32)}

    def feats(img):  # a smooth stand-in for VGG: pool and mix channels
        p = img.reshape(4, 2, 4, 2, 3).mean(axis=(1, 3))
        return {"l": jnp.tanh(p / 64.0)}

    fns = {
        "grad": lambda z: losses.gradient_loss(z, losses.guidance(t, t, m)),
        "content": lambda z: losses.content_loss(feats(z), fr, m, weights={"l": 1.0}),
        "style": lambda z: losses.style_loss(
            feats(z), {"l": losses.gram(fr["l"])}, weights={"l": 1.0}
        ),
        "hist": lambda z: losses.histogram_loss(
            feats(z), {"l": losses.sorted_channels(fr["l"])}, weights={"l": 1.0}
        ),
        "tv": losses.tv_loss,
    }
    g = jax.jit(jax.grad(fns[name]))(x)
    assert np.all(np.isfinite(np.asarray(g)))
    assert np.any(np.asarray(g) != 0)


def test_boundary_band_matches_scipy(rng):
    m = ndimage.gaussian_filter(rng.normal(size=(40, 48)), 3) > 0.1
    for r in (1, 3):
        sq = np.ones((2 * r + 1, 2 * r + 1), bool)
        want = ndimage.binary_dilation(m, sq) & ~ndimage.binary_erosion(m, sq, border_value=1)
        got = np.asarray(jax.jit(losses.boundary_band, static_argnums=1)(m.astype(np.float32), r))
        np.testing.assert_array_equal(got > 0.5, want)


def test_weighted_gradient_loss(rng):
    blend, guide = rng.normal(size=(2, 16, 16, 3))
    w = np.zeros((16, 16))
    w[4:8, 2:9] = 1
    err = (np.asarray(losses.laplacian(blend)) - guide) ** 2
    want = err[w > 0].mean()
    got = losses.gradient_loss(blend, guide, weight=w)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    np.testing.assert_allclose(
        float(losses.gradient_loss(blend, guide, weight=np.ones((16, 16)))),
        float(losses.gradient_loss(blend, guide)),
        rtol=1e-6,
    )


def np_patch_match(ref, tgt):
    """Brute-force 3 x 3 cosine patch matching (edge-replicated), loops in NumPy."""

    def patches(f):
        h, w, c = f.shape
        p = np.pad(f, ((1, 1), (1, 1), (0, 0)), mode="edge")
        out = np.stack([p[i : i + h, j : j + w] for i in range(3) for j in range(3)], 2)
        out = out.reshape(h * w, -1)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    r, t = patches(ref), patches(tgt)
    return np.array([int(np.argmax([float(a @ b) for b in t])) for a in r])


def test_match_positions_matches_brute_force(rng):
    tgt = rng.normal(size=(6, 7, 5)).astype(np.float32)
    # the reference: the target's rows flipped plus noise, so the answer is not the identity
    ref = (tgt[::-1] + 0.05 * rng.normal(size=tgt.shape)).astype(np.float32)
    got = np.asarray(jax.jit(losses.match_positions)(ref, tgt))
    np.testing.assert_array_equal(got, np_patch_match(ref, tgt))
    assert (got != np.arange(42)).any()
    same = np.asarray(losses.match_positions(tgt, tgt))
    np.testing.assert_array_equal(same, np.arange(42))  # a patch is its own best match


def test_matched_features_maps_coarse_cells_to_fine_positions(rng):
    fine = rng.normal(size=(8, 6, 2)).astype(np.float32)  # 2x the coarse 4 x 3 grid
    match = rng.integers(0, 12, size=12)
    got = np.asarray(losses.matched_features(fine, match, (4, 3)))
    for i in range(8):
        for j in range(6):
            ci, cj = divmod(int(match[(i // 2) * 3 + j // 2]), 3)
            np.testing.assert_array_equal(got[i, j], fine[ci * 2 + i % 2, cj * 2 + j % 2])


def test_masked_gram_and_object_style_loss(rng):
    f = rng.normal(size=(5, 4, 3)).astype(np.float32)
    w = (rng.uniform(size=(5, 4)) > 0.5).astype(np.float32)
    rows = f.reshape(-1, 3)[w.ravel() > 0]
    want = rows.T @ rows / (len(rows) * 3)
    np.testing.assert_allclose(losses.masked_gram(f, w), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(losses.masked_gram(f, np.ones((5, 4))), losses.gram(f), rtol=1e-6)
    g = {"a": losses.masked_gram(f, w)}
    assert float(losses.style_loss({"a": f}, g, w, weights={"a": 1.0})) < 1e-12
    # only the covered positions count: changing the others leaves the loss at zero
    f2 = np.where(w[..., None] > 0, f, 10.0 * f)
    assert float(losses.style_loss({"a": f2}, g, w, weights={"a": 1.0})) < 1e-12
    f3 = np.where(w[..., None] > 0, 2.0 * f, f)
    loss = float(losses.style_loss({"a": f3}, g, w, weights={"a": 2.0}))
    np.testing.assert_allclose(loss, 2.0 * np.mean((4.0 * want - want) ** 2), rtol=1e-5)


def test_blur_matches_scipy(rng):
    x = rng.uniform(0, 255, (23, 31, 3))
    for sigma in (1.0, 2.0, 4.0):
        ref = ndimage.gaussian_filter(x, (sigma, sigma, 0), mode="constant", truncate=3.0)
        np.testing.assert_allclose(losses.blur(x, sigma), ref, atol=2e-3)


def test_tone_loss_ignores_fine_texture_and_sees_a_tone_shift(rng):
    """A ±30 checkerboard (texture finer than the blur) costs almost nothing, a uniform
    +30 shift (the tone) costs 30² inside the mask; only the mask's pixels count."""
    h, w = 40, 40
    ref = rng.uniform(60, 200, (h, w, 3))
    mask = np.zeros((h, w), np.float32)
    mask[10:30, 10:30] = 1
    yy, xx = np.mgrid[:h, :w]
    checker = 30.0 * np.where((yy + xx) % 2 == 0, 1.0, -1.0)[..., None]
    shift = np.full((h, w, 3), 30.0)
    assert float(losses.tone_loss(ref + checker, ref, mask, 3.0)) < 0.01 * 30**2
    np.testing.assert_allclose(float(losses.tone_loss(ref + shift, ref, mask, 3.0)), 900, rtol=1e-3)
    # a change outside the mask, beyond the blur's reach, costs nothing
    far = ref.copy()
    far[:2] += 100.0
    assert float(losses.tone_loss(far, ref, mask, 2.0)) < 1e-6
    # independent reference: the NumPy formula with scipy's blur
    x = ref + rng.normal(0, 20, ref.shape)
    d = ndimage.gaussian_filter(x - ref, (2.0, 2.0, 0), mode="constant", truncate=3.0)
    want = np.sum(mask[..., None] * d**2) / (3 * mask.sum())
    np.testing.assert_allclose(float(losses.tone_loss(x, ref, mask, 2.0)), want, rtol=1e-3)


def test_luma_tone_loss_sees_brightness_not_hue(rng):
    """``luma=True``: a hue change of equal brightness (R up, B down so that 0.299 dR +
    0.114 dB = 0) costs nothing, a +30 grey shift costs 30²; NumPy reference."""
    h, w = 40, 40
    ref = rng.uniform(60, 200, (h, w, 3))
    mask = np.zeros((h, w), np.float32)
    mask[10:30, 10:30] = 1
    hue = np.zeros((h, w, 3))
    hue[..., 0], hue[..., 2] = 0.114 * 40, -0.299 * 40
    assert float(losses.tone_loss(ref + hue, ref, mask, 3.0, luma=True)) < 1e-3
    assert float(losses.tone_loss(ref + hue, ref, mask, 3.0)) > 5.0
    grey = np.full((h, w, 3), 30.0)
    np.testing.assert_allclose(
        float(losses.tone_loss(ref + grey, ref, mask, 3.0, luma=True)), 900, rtol=1e-3
    )
    x = ref + rng.normal(0, 20, ref.shape)
    y = (x - ref) @ np.array([0.299, 0.587, 0.114])
    d = ndimage.gaussian_filter(y, 2.0, mode="constant", truncate=3.0)
    want = np.sum(mask * d**2) / mask.sum()
    np.testing.assert_allclose(float(losses.tone_loss(x, ref, mask, 2.0, luma=True)), want,
                               rtol=1e-3)  # fmt: skip


def test_highpass_tone_loss_lets_the_whole_object_shift(rng):
    """``highpass``: a smooth brightening of the whole object (a wide Gaussian bump) is
    nearly free, a dark stripe across it (its own light and dark parts) is not; NumPy
    reference with SciPy's blurs."""
    h, w = 96, 96
    ref = rng.uniform(60, 200, (h, w, 3))
    mask = np.zeros((h, w), np.float32)
    mask[32:64, 32:64] = 1
    yy, xx = np.mgrid[:h, :w]
    bump = 40.0 * np.exp(-((yy - 48.0) ** 2 + (xx - 48.0) ** 2) / (2 * 30.0**2))[..., None]
    stripe = np.where(np.abs(yy - 48) < 3, -40.0, 0.0)[..., None] * np.ones(3)
    smooth = float(losses.tone_loss(ref + bump, ref, mask, 1.5, highpass=8.0))
    sharp = float(losses.tone_loss(ref + stripe, ref, mask, 1.5, highpass=8.0))
    assert smooth < 0.02 * float(losses.tone_loss(ref + bump, ref, mask, 1.5))
    assert sharp > 20 * smooth
    x = ref + rng.normal(0, 20, ref.shape)
    f = lambda s: ndimage.gaussian_filter(x - ref, (s, s, 0), mode="constant", truncate=3.0)
    d = f(1.5) - f(8.0)
    want = np.sum(mask[..., None] * d**2) / (3 * mask.sum())
    got = float(losses.tone_loss(x, ref, mask, 1.5, highpass=8.0))
    np.testing.assert_allclose(got, want, rtol=1e-3)
