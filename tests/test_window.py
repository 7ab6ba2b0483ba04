"""The windowed stage-1 objective equals the full-canvas one: value and gradient, real VGG.

The reference is the full-canvas objective (:func:`jaxblend.solve.objective` with
``window=None``), itself tested against NumPy/torch elsewhere; here the window must give the
same number at every object size and position, at the canvas border, for masks with holes
or several parts, and for stacks of jobs under ``vmap``. Canvases are tiny and odd-sized
(pools floor, the window runs past the canvas's end).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxblend
from jaxblend import BlendConfig, StageConfig, window
from jaxblend.config import STAGE1
from jaxblend.solve import VGGSpec, composite, objective, prepare

SPEC = VGGSpec()
# Every term of the default stage 1 on shallow layers (fast to compile at 61 x 67).
SHALLOW = StageConfig(
    grad=1.0, content=1.0, style=1.0, tv=1e-3, range=1.0, normalize=True,
    content_layers=(("relu2_2", 1.0),), style_layers=(("relu1_2", 1.0), ("relu2_2", 1.0)),
)  # fmt: skip
H, W = 61, 67


@pytest.fixture(scope="module")
def vgg():
    return jaxblend.load_vgg()


def _box(*boxes, shape=(H, W), hole=None):
    m = np.zeros(shape, np.float32)
    for y0, y1, x0, x1 in boxes:
        m[y0:y1, x0:x1] = 1
    if hole is not None:
        y0, y1, x0, x1 = hole
        m[y0:y1, x0:x1] = 0
    return m


MASKS = {
    "small-centre": _box((26, 34, 30, 38)),
    "large-offset": _box((8, 28, 36, 52)),
    "top-left-border": _box((0, 10, 0, 12)),
    "bottom-right-border": _box((51, 61, 55, 67)),
    "hole": _box((20, 34, 20, 34), hole=(24, 30, 24, 30)),
    "two-parts": _box((10, 15, 10, 15), (20, 25, 24, 29)),
}


def _images(shape, seed=0):
    rng = np.random.default_rng(seed)
    # Smooth-ish scene and object, so VGG activations are in their usual range.
    t = rng.uniform(0, 255, (*shape, 3)).astype(np.float32)
    t = (t + np.roll(t, 1, 0) + np.roll(t, 1, 1)) / 3
    s = rng.uniform(0, 255, (*shape, 3)).astype(np.float32)
    x = rng.normal(0, 20, (*shape, 3)).astype(np.float32)
    return jnp.asarray(t), jnp.asarray(s), jnp.asarray(x)


@functools.cache
def _value_and_grad(cfg, geom, masked=True, batched=False):
    """prepare + value and gradient of the objective at ``naive + dx``, one jitted program
    (all arrays are arguments)."""

    def one(params, t, m, s, dx):
        naive = composite(s, t, m)
        data = prepare(cfg, SPEC, params, t, m, s, naive, masked=masked, window=geom)
        v, g = jax.value_and_grad(lambda x: objective(cfg, SPEC, masked, x, data))(naive + dx)
        return v, g, data.window

    if batched:
        one = jax.vmap(one, in_axes=(None, 0, 0, 0, 0))
    return jax.jit(one)


def _assert_same(full, win):
    (vf, gf, _), (vw, gw, _) = full, win
    np.testing.assert_allclose(np.asarray(vw), np.asarray(vf), rtol=1e-4)
    gf, gw = np.asarray(gf), np.asarray(gw)
    assert np.abs(gf).max() > 0
    np.testing.assert_allclose(gw, gf, rtol=0, atol=1e-4 * np.abs(gf).max())


@pytest.fixture(scope="module")
def shallow_geom():
    # One window for all the masks (the bucket of the largest box), as for a stack.
    geom = window.plan(SHALLOW, "vgg16", np.stack(list(MASKS.values())), bucket=8, max_fraction=1)
    assert geom is not None and geom.size[0] < H and geom.size[1] < W
    return geom


@pytest.mark.parametrize("name", list(MASKS))
def test_windowed_objective_equals_full_canvas(vgg, shallow_geom, name):
    m = jnp.asarray(MASKS[name])
    t, s, dx = _images((H, W))
    full = _value_and_grad(SHALLOW, None)(vgg.params, t, m, s, dx)
    win = _value_and_grad(SHALLOW, shallow_geom)(vgg.params, t, m, s, dx)
    _assert_same(full, win)
    o = np.asarray(win[2].origin)
    assert (o % shallow_geom.stride == 0).all() and (o >= 0).all()
    if name == "top-left-border":
        assert (o == 0).all()
    if name == "bottom-right-border":  # the window reaches the canvas's end (and past it)
        assert (o + np.array(shallow_geom.size) >= (H, W)).all()


def test_stack_of_different_boxes_under_vmap(vgg, shallow_geom):
    """Jobs with different boxes share one window bucket; each keeps its own origin."""
    masks = jnp.asarray(np.stack(list(MASKS.values())))
    n = masks.shape[0]
    ims = [_images((H, W), seed=i) for i in range(n)]
    t, s, dx = (jnp.stack([im[k] for im in ims]) for k in range(3))
    vw, gw, wd = _value_and_grad(SHALLOW, shallow_geom, batched=True)(vgg.params, t, masks, s, dx)
    assert len({tuple(o) for o in np.asarray(wd.origin)}) > 3
    f = _value_and_grad(SHALLOW, None)
    for i in range(n):
        _assert_same(f(vgg.params, t[i], masks[i], s[i], dx[i]), (vw[i], gw[i], None))


def test_object_style_and_unmasked_content(vgg, shallow_geom):
    """The object-region style term (style_object) and the unmasked content term (Eq. 9)."""
    cfg = dataclasses.replace(SHALLOW, style_object=0.5)
    m = jnp.asarray(MASKS["hole"])
    t, s, dx = _images((H, W), seed=3)
    for masked in (True, False):
        full = _value_and_grad(cfg, None, masked)(vgg.params, t, m, s, dx)
        win = _value_and_grad(cfg, shallow_geom, masked)(vgg.params, t, m, s, dx)
        _assert_same(full, win)


def test_banded_first_order_mixed_gradient_term(vgg, shallow_geom):
    """The gradient term with a band weight, the first-order operator and mixed guidance."""
    cfg = dataclasses.replace(SHALLOW, band=2, operator="gradient", mixed=True, tv=1.0)
    m = jnp.asarray(MASKS["bottom-right-border"])
    t, s, dx = _images((H, W), seed=4)
    full = _value_and_grad(cfg, None)(vgg.params, t, m, s, dx)
    win = _value_and_grad(cfg, shallow_geom)(vgg.params, t, m, s, dx)
    _assert_same(full, win)


@pytest.mark.parametrize("where", ["middle", "right-border"])
def test_default_stage1_layers_to_relu4_3(vgg, where):
    """The default stage 1 (content relu2_2 + relu3_3, style relu1_2..relu4_3, stride 8,
    92-px receptive field) on a long odd canvas: the window runs past the canvas's end in
    y (41 rows, window 48) and covers a part of it in x."""
    shape = (41, 251)
    box = (12, 26, 100, 114) if where == "middle" else (20, 33, 238, 251)
    m = jnp.asarray(_box(box, shape=shape))
    geom = window.plan(STAGE1, "vgg16", m, bucket=8, max_fraction=1)
    assert geom == window.Geometry((48, 208), 8, 91)
    t, s, dx = _images(shape, seed=5)
    full = _value_and_grad(STAGE1, None)(vgg.params, t, m, s, dx)
    win = _value_and_grad(STAGE1, geom)(vgg.params, t, m, s, dx)
    _assert_same(full, win)


def test_a_window_without_the_receptive_field_margin_is_not_exact(vgg, shallow_geom):
    """The comparison can fail: a window placed with too small a margin (the features
    just left of the box then change outside its valid set) gives another objective."""
    m = jnp.asarray(MASKS["small-centre"])
    t, s, dx = _images((H, W))
    short = shallow_geom._replace(margin=shallow_geom.margin - 8)
    vf, gf, _ = _value_and_grad(SHALLOW, None)(vgg.params, t, m, s, dx)
    vs, gs, _ = _value_and_grad(SHALLOW, short)(vgg.params, t, m, s, dx)
    assert abs(float(vs) - float(vf)) > 3e-4 * abs(float(vf))  # _assert_same: 1e-4
    gf, gs = np.asarray(gf), np.asarray(gs)
    assert np.abs(gs - gf).max() > 2e-3 * np.abs(gf).max()  # _assert_same: 1e-4


def test_receptive_fields():
    """Sizes ``lo + hi + 1`` are VGG16's published receptive fields (5, 14, 40, 92 px; e.g.
    Araujo et al., Distill 2019); the window's margin is the deepest one's size minus 1."""
    sizes = {n: sum(window.receptive_field("vgg16", n)[1:]) + 1 for n in
             ("relu1_2", "relu2_2", "relu3_3", "relu4_3")}  # fmt: skip
    assert sizes == {"relu1_2": 5, "relu2_2": 14, "relu3_3": 40, "relu4_3": 92}
    assert window.receptive_field("vgg16", "relu4_3") == (8, 42, 49)
    assert window.receptive_field("vgg16", "pool2") == (4, 6, 9)


def test_receptive_field_by_perturbation(vgg):
    """Independent check of ``RF(j)``: a column (row) of pixels changed just inside its ends
    moves one conv3_1 feature, just outside them leaves it as it was."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(0, 255, (40, 40, 3)), jnp.float32)
    j = (4, 5)
    s, lo, hi = window.receptive_field("vgg16", "conv3_1")
    assert (s, lo + hi + 1) == (4, 24)

    def feature(img):
        return np.asarray(vgg.features(img, ("conv3_1",))["conv3_1"][j])

    f0 = feature(x)
    for axis in (0, 1):
        first, last = s * j[axis] - lo, s * j[axis] + hi
        for pos, inside in ((first, True), (last, True), (first - 1, False), (last + 1, False)):
            idx = (slice(None),) * axis + (pos,)
            moved = np.abs(feature(x.at[idx].add(500.0)) - f0).max()
            if inside:
                assert moved > 1e-2 * np.abs(f0).max(), (axis, pos)
            else:
                assert moved <= 1e-5 * np.abs(f0).max(), (axis, pos)


def test_plan_falls_back_to_the_full_canvas():
    """No window where it cannot be exact or would not pay; the default stage 1 windows a
    200-px object on 1024² (448², 19% of the canvas) but not on 512² (77%)."""
    big = _box((400, 600, 300, 500), shape=(1024, 1024))
    assert window.plan(STAGE1, "vgg16", big) == window.Geometry((448, 448), 8, 91)
    assert window.plan(STAGE1, "vgg16", _box((156, 356, 156, 356), shape=(512, 512))) is None
    off = {
        "switch": dict(window=False),
        "histogram": dict(hist=1.0),
        "iterate style": dict(style_image="iterate"),
        "whole image": dict(region="image"),
        "no VGG term": dict(content=0.0, style=0.0),
    }
    for name, change in off.items():
        assert window.plan(dataclasses.replace(STAGE1, **change), "vgg16", big) is None, name
    assert window.plan(BlendConfig().stage2, "vgg16", big) is None  # stage 2: whole canvas
    with pytest.raises(jaxblend.InputError, match="window"):
        StageConfig(window="yes")


@pytest.mark.parametrize("smooth", [0.0, "auto"])
def test_blend_uses_the_window_and_the_switch_turns_it_off(vgg, case1, smooth):
    """run_stages picks the window automatically on a canvas much wider than the object;
    window=False runs the full canvas; both give the same blend, with a smoothing
    preconditioner too (the window is then the variable as well)."""
    from PIL import Image

    from jaxblend.blend import run_stages, stage_programs, vgg_spec
    from jaxblend.io import place

    scene = np.asarray(Image.open(case1 / "target.png").convert("RGB").resize((256, 256)))
    job = place(
        case1 / "source.png", scene[100:148], case1 / "mask.png",
        center=(24, 60), canvas=None, source_size=24,
    )  # fmt: skip
    t, s, m = (jnp.asarray(a, jnp.float32) for a in (job.target, job.source, job.mask))
    assert t.shape[:2] == (48, 256)
    on = BlendConfig(stage1=dataclasses.replace(SHALLOW, steps=4, smooth=smooth),
                     stage2_enabled=False, canvas=256, init="paste")  # fmt: skip
    off = on.replace(stage1=dataclasses.replace(on.stage1, window=False))
    spec = vgg_spec(vgg, on.precision)
    naive = composite(s, t, m)
    datas = {}
    for name, cfg in (("on", on), ("off", off)):
        p = stage_programs(cfg.stage1, cfg, spec, m, masked=True, batched=False)
        datas[name] = p.prepare(vgg.params, t, m, s, naive)
    assert datas["on"].window is not None and datas["off"].window is None
    assert datas["on"].window.target.shape[1] < t.shape[1] // 2
    from jaxblend.solve import to_variable

    xw = to_variable(on.stage1, naive, datas["on"])  # the window is the variable
    assert xw.shape[:2] == datas["on"].window.mask.shape
    res = {k: run_stages(c, vgg, t, s, m) for k, c in (("on", on), ("off", off))}
    for k in ("stage1",):
        np.testing.assert_allclose(np.asarray(res["on"][k]), np.asarray(res["off"][k]), atol=0.05)
    l_on, l_off = res["on"]["losses"]["stage1"], res["off"]["losses"]["stage1"]
    for term in ("grad", "content", "style"):
        np.testing.assert_allclose(l_on[term], l_off[term], rtol=1e-3)


# ----------------------------------------------------------- bounded region="image" stages

# The default stage 2's terms (seam band on the mask edge, object content, whole-image
# style, range, TV) on shallow layers, with a reach that keeps R well inside 61 x 67.
BOUNDED = StageConfig(
    grad=1.0, content=1.0, style=1.0, tv=1e-3, range=1.0, normalize=True, band=3,
    region="image", reach=0.5,
    content_layers=(("relu2_2", 1.0),), style_layers=(("relu1_2", 1.0), ("relu2_2", 1.0)),
)  # fmt: skip


def _ramp_reference(n, r0, r1, rho):
    """NumPy, written from the docstring of window.region_weight, one axis."""
    w = np.zeros(n)
    for i in range(n):
        if not r0 <= i < r1:
            continue
        t_lo = 1.0 if r0 == 0 else min(max((i - r0 + 1) / (rho + 1), 0), 1)
        t_hi = 1.0 if r1 == n else min(max((r1 - i) / (rho + 1), 0), 1)
        t = min(t_lo, t_hi)
        w[i] = 3 * t**2 - 2 * t**3
    return w


@pytest.mark.parametrize(
    "box, reach",
    [
        ((26, 34, 30, 38), 0.5),
        ((2, 10, 40, 60), 1.0),
        ((30, 58, 10, 20), 0.25),
        ((0, 61, 0, 5), 3.0),
    ],
)
def test_region_weight(box, reach):
    """W is 1 on the mask's box, 0 outside R = box grown by round(reach·long side) and
    clipped, and ramps (smoothstep, min(16, g) px) only where R ends inside the canvas."""
    cfg = dataclasses.replace(BOUNDED, reach=reach)
    m = _box(box)
    y0, y1, x0, x1 = box
    g = int(np.floor(reach * max(y1 - y0, x1 - x0) + 0.5))
    r = (max(y0 - g, 0), min(y1 + g, H), max(x0 - g, 0), min(x1 + g, W))
    lo, hi = (np.asarray(v) for v in window.changed_box(cfg, jnp.asarray(m)))
    assert (lo.tolist(), hi.tolist()) == ([r[0], r[2]], [r[1], r[3]])
    rho = min(window.RAMP, g)
    ref = np.outer(_ramp_reference(H, r[0], r[1], rho), _ramp_reference(W, r[2], r[3], rho))
    w = np.asarray(window.region_weight(cfg, jnp.asarray(m)))
    np.testing.assert_allclose(w, ref, atol=1e-6)
    assert (w[y0:y1, x0:x1] == 1).all()
    if r != (0, H, 0, W):  # R ends inside the canvas somewhere: a ramp there
        assert w.sum() < (r[1] - r[0]) * (r[3] - r[2])
    else:
        assert (w == 1).all()


MASKS2 = {k: MASKS[k] for k in ("small-centre", "top-left-border", "bottom-right-border")}


@pytest.fixture(scope="module")
def bounded_geom():
    geom = window.plan(BOUNDED, "vgg16", np.stack(list(MASKS2.values())), bucket=8, max_fraction=1)
    assert geom is not None and geom.size[0] < H and geom.size[1] < W
    return geom


@pytest.mark.parametrize("name", list(MASKS2))
def test_bounded_stage2_windowed_equals_full_canvas(vgg, bounded_geom, name):
    """A bounded region="image" stage (seam band, object content against a stage-1-like
    reference, whole-image style): the windowed objective's value and gradient equal the
    full canvas's evaluation of the same objective, I = W ⊙ x + (1 − W) ⊙ I_T."""
    m = jnp.asarray(MASKS2[name])
    t, s, dx = _images((H, W), seed=7)
    full = _value_and_grad(BOUNDED, None)(vgg.params, t, m, s, dx)
    win = _value_and_grad(BOUNDED, bounded_geom)(vgg.params, t, m, s, dx)
    _assert_same(full, win)
    # The gradient vanishes outside R (the stage may not change those pixels).
    lo, hi = (np.asarray(v) for v in window.changed_box(BOUNDED, m))
    g = np.abs(np.asarray(full[1])).sum(-1)
    inside = np.zeros((H, W), bool)
    inside[lo[0] : hi[0], lo[1] : hi[1]] = True
    assert g[~inside].max() == 0 and g[inside].max() > 0


def test_bounded_stage2_unmasked_content_and_window_variable(vgg, bounded_geom):
    """The unmasked content term (Eq. 9) too; and with the window itself as the variable
    (solve.to_variable) the gradient is the full one's crop and full_image is stage_image."""
    from jaxblend.solve import full_image, stage_image, to_variable

    m = jnp.asarray(MASKS2["bottom-right-border"])
    t, s, dx = _images((H, W), seed=8)
    full = _value_and_grad(BOUNDED, None, False)(vgg.params, t, m, s, dx)
    win = _value_and_grad(BOUNDED, bounded_geom, False)(vgg.params, t, m, s, dx)
    _assert_same(full, win)

    full = _value_and_grad(BOUNDED, None)(vgg.params, t, m, s, dx)  # masked, as below
    naive = composite(s, t, m)
    x = naive + dx
    data = jax.jit(
        lambda p, t, m, s: prepare(BOUNDED, SPEC, p, t, m, s, naive, window=bounded_geom)
    )(vgg.params, t, m, s)
    xw = to_variable(BOUNDED, x, data)
    assert xw.shape[:2] == bounded_geom.size
    vw, gw = jax.value_and_grad(lambda v: objective(BOUNDED, SPEC, True, v, data))(xw)
    np.testing.assert_allclose(float(vw), float(full[0]), rtol=1e-4)
    gcrop = window.crop(np.asarray(full[1]), bounded_geom, data.window.origin)
    gf = np.asarray(full[1])
    o = np.asarray(data.window.origin)
    ly, lx = min(bounded_geom.size[0], H - o[0]), min(bounded_geom.size[1], W - o[1])
    np.testing.assert_allclose(
        np.asarray(gw)[:ly, :lx], np.asarray(gcrop)[:ly, :lx], atol=1e-4 * np.abs(gf).max()
    )
    assert ly < bounded_geom.size[0] or lx < bounded_geom.size[1]  # runs past the end
    past = np.ones(bounded_geom.size, bool)
    past[:ly, :lx] = False
    assert (np.asarray(gw)[past] == 0).all()  # edge copies, no free variables
    np.testing.assert_array_equal(
        np.asarray(full_image(BOUNDED, xw, data)), np.asarray(stage_image(BOUNDED, x, t, m))
    )


def test_reach_zero_is_the_unbounded_iterate(vgg):
    """reach=0: the stage's image is the iterate itself on the whole canvas (today's
    region="image"), no window; the objective is the loss functions' sum on x."""
    from jaxblend import losses

    cfg = dataclasses.replace(BOUNDED, reach=0.0, normalize=False)
    m = jnp.asarray(MASKS["small-centre"])
    assert window.plan(cfg, "vgg16", np.asarray(m), bucket=8, max_fraction=1) is None
    t, s, dx = _images((H, W), seed=9)
    naive = composite(s, t, m)
    x = naive + dx
    v, g, _ = _value_and_grad(cfg, None)(vgg.params, t, m, s, dx)

    def by_hand(x):
        guide = losses.guidance(s, t, m)
        f = vgg.features(x, ("relu1_2", "relu2_2"))
        fr = vgg.features(naive, ("relu2_2",))
        ft = vgg.features(t, ("relu1_2", "relu2_2"))
        grams = {n: losses.gram(ft[n]) for n in ("relu1_2", "relu2_2")}
        return (
            losses.gradient_loss(x, guide, weight=losses.boundary_band(m, 3))
            + losses.content_loss(f, fr, m, weights={"relu2_2": 1.0})
            + losses.style_loss(f, grams, weights={"relu1_2": 1.0, "relu2_2": 1.0})
            + 1e-3 * losses.tv_loss(x)
            + losses.range_loss(x)
        )

    vh, gh = jax.value_and_grad(by_hand)(x)
    np.testing.assert_allclose(float(v), float(vh), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(g), np.asarray(gh), atol=1e-4 * np.abs(gh).max())
    # A reach whose R covers the canvas weighs every pixel 1: the same objective.
    wide = dataclasses.replace(cfg, reach=100.0)
    assert (np.asarray(window.region_weight(wide, m)) == 1).all()
    vw, gw, _ = _value_and_grad(wide, None)(vgg.params, t, m, s, dx)
    assert float(vw) == float(v)
    np.testing.assert_array_equal(np.asarray(gw), np.asarray(g))
    with pytest.raises(jaxblend.InputError, match="reach"):
        StageConfig(reach=-1.0)


def test_canvas_grams_tile_by_tile(vgg):
    """The target's Grams from tiles (negative-origin windows, owned positions) equal
    losses.gram of the full-canvas features, for tiles smaller than the canvas."""
    from jaxblend import losses

    t, _, _ = _images((H, W), seed=10)
    layers = ("relu1_2", "relu2_2", "relu3_3")
    ref = {n: losses.gram(f) for n, f in vgg.features(t, layers).items()}
    got = jax.jit(lambda p, im: window.canvas_grams(SPEC, p, im, layers, tile=24))(vgg.params, t)
    for n in layers:
        np.testing.assert_allclose(np.asarray(got[n]), np.asarray(ref[n]), rtol=2e-4,
                                   atol=1e-6 * np.abs(np.asarray(ref[n])).max())  # fmt: skip


@pytest.mark.parametrize("rows", [1, 7, 16, 61, 100])
def test_strip_sum_equals_the_whole_canvas_sum(rows):
    """strip_sum over strips with halo rows = the sum of the map on the whole canvas, for
    the Laplacian error, TV and range maps, strips that do not divide the canvas."""
    t, s, _ = _images((H, W), seed=4)
    t = t * 1.2 - 20  # some values out of range
    w = jnp.asarray(np.random.default_rng(5).uniform(0, 1, (H, W)), jnp.float32)
    cfg = dataclasses.replace(SHALLOW, operator="laplacian")
    guide = jaxblend.losses.laplacian(s)
    cases = [
        (functools.partial(window._grad_err, cfg), (t, guide)),
        (window._tv_map, (t,)),
        (window._range_map, (t,)),
    ]
    for fn, images in cases:
        want = float(np.sum(np.asarray(window._per_pixel(fn(*images), w), np.float64)))
        got = float(window.strip_sum(fn, images, w, rows=rows))
        np.testing.assert_allclose(got, want, rtol=2e-5)


def test_crop_gathers_the_window_like_a_padded_slice():
    """crop (row/column gathers) = slicing the canvas padded past its end with zeros or
    edge copies (NumPy), at origins inside the canvas and running past its end."""
    img = np.random.default_rng(6).uniform(0, 1, (H, W, 3)).astype(np.float32)
    geom = window.Geometry((24, 32), 8, 0)
    for o in [(0, 0), (16, 8), (48, 48)]:
        for mode in ("constant", "edge"):
            pad = np.pad(img, [(0, 24), (0, 32), (0, 0)], mode=mode)
            want = pad[o[0] : o[0] + 24, o[1] : o[1] + 32]
            got = window.crop(jnp.asarray(img), geom, jnp.asarray(o), mode=mode)
            np.testing.assert_array_equal(np.asarray(got), want)
        got = window.crop(jnp.asarray(img[..., 0]), geom, jnp.asarray(o), stride=8)
        want = np.pad(img[..., 0], [(0, 3), (0, 4)])[
            o[0] // 8 : o[0] // 8 + 3, o[1] // 8 : o[1] // 8 + 4
        ]
        np.testing.assert_array_equal(np.asarray(got), want)
