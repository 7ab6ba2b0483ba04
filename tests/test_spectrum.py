"""jaxblend.spectrum against NumPy and on images whose answer is known."""

import math

import numpy as np
import pytest
from scipy import ndimage

from jaxblend.spectrum import GAIN, HIGH, LOW, amplitude_slope, excess_sigma, fine_scale_sigma


def _pink(rng, n=64, beta=1.0):
    """Noise whose amplitude spectrum falls as f^-beta (random phases)."""
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.fftfreq(n)[None, :]
    f = np.sqrt(fy**2 + fx**2)
    f[0, 0] = 1.0
    amp = f**-beta
    amp[0, 0] = 0.0
    phase = np.exp(2j * np.pi * rng.uniform(size=(n, n)))
    g = np.real(np.fft.ifft2(amp * phase))
    return 128 + 40 * g / g.std()


def _slope_numpy(img):
    g = img.mean(-1) if img.ndim == 3 else img
    g = g - g.mean()
    h, w = g.shape
    p = np.abs(np.fft.fft2(g * np.outer(np.hanning(h), np.hanning(w)))) ** 2
    r = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None, :] ** 2)
    p1 = p[(r >= LOW[0]) & (r < LOW[1])].mean()
    p2 = p[(r >= HIGH[0]) & (r < HIGH[1])].mean()
    return 0.5 * math.log(p1 / p2) / math.log(sum(HIGH) / sum(LOW))


def test_amplitude_slope_is_numpys(rng):
    img = rng.uniform(0, 255, (40, 56, 3))
    img = ndimage.gaussian_filter(img, (1.0, 1.0, 0))
    assert float(amplitude_slope(img)) == pytest.approx(_slope_numpy(img), rel=1e-3)


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_amplitude_slope_of_power_law_noise(rng, beta):
    assert float(amplitude_slope(_pink(rng, beta=beta))) == pytest.approx(beta, abs=0.1)


def test_a_natural_or_grainy_scene_gets_no_smoothing(rng):
    assert float(fine_scale_sigma(_pink(rng, beta=1.0))) < 0.2
    assert float(fine_scale_sigma(rng.uniform(0, 255, (64, 64, 3)))) == 0.0


@pytest.mark.parametrize("sigma", [0.6, 1.0])
def test_a_blurred_scene_gets_about_its_blur(rng, sigma):
    # A 1/f scene blurred by sigma px: the excess fall-off is the blur's own response.
    img = ndimage.gaussian_filter(_pink(rng, beta=1.0), sigma, mode="wrap")
    assert float(excess_sigma(img)) == pytest.approx(sigma, rel=0.15)
    assert float(fine_scale_sigma(img)) == pytest.approx(GAIN * float(excess_sigma(img)))


def test_canvases_above_the_calibrated_side_get_a_narrower_width(rng):
    """Above CALIBRATED_SIDE the width shrinks with the long side: a blurred 1/f scene of
    1024 x 768 gets half the width its excess fall-off alone would give."""
    from jaxblend.optim import SIGMA_MAX
    from jaxblend.spectrum import CALIBRATED_SIDE

    img = ndimage.gaussian_filter(_pink(rng, n=1024, beta=1.0), 1.0, mode="wrap")[:768]
    full = min(GAIN * float(excess_sigma(img)), SIGMA_MAX)
    assert full > 0.8  # the rule itself would smooth this scene
    want = full * CALIBRATED_SIDE / 1024
    assert float(fine_scale_sigma(img)) == pytest.approx(want, rel=1e-5)
