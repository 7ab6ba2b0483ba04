"""The two-stage deep blend on tiny canvases: invariants, batching, caching, bad input."""

from __future__ import annotations

import subprocess
import sys
import warnings

import jax
import numpy as np
import pytest
from PIL import Image

import jaxblend
from jaxblend import BlendConfig, StageConfig
from jaxblend.blend import NonFiniteWarning, run_stages
from jaxblend.errors import InputError
from jaxblend.io import place

SHALLOW = (("relu1_2", 1.0), ("relu2_2", 1.0))
# Tiny stages reading only VGG blocks 1–2 keep compilation short; every term is active.
TINY = BlendConfig(
    stage1=StageConfig(grad=1.0, content=1e-3, style=3e-4, hist=1e-4, tv=1e-6, steps=6,
                       style_layers=SHALLOW, hist_layers=(("relu2_2", 1.0),)),
    stage2=StageConfig(content=1e-3, style=1e-1, hist=1e-4, tv=1e-6, steps=6,
                       style_layers=SHALLOW, hist_layers=(("relu2_2", 1.0),)),
    canvas=32, source_size=18, init="paste",
)  # fmt: skip


@pytest.fixture(scope="module")
def vgg():
    return jaxblend.load_vgg()


@pytest.fixture(scope="module")
def job(case1):
    return place(
        case1 / "source.png", case1 / "target.png", case1 / "mask.png",
        center=(13, 15), canvas=32, source_size=18,
    )  # fmt: skip


def test_blend_keeps_target_outside_mask_and_is_deterministic(case1, vgg, job):
    cfg = TINY.replace(init="noise", seed=3)
    a = jaxblend.blend(case1 / "source.png", case1 / "target.png", case1 / "mask.png",
                       center=(13, 15), config=cfg, vgg=vgg)  # fmt: skip
    b = jaxblend.blend(case1 / "source.png", case1 / "target.png", case1 / "mask.png",
                       center=(13, 15), config=cfg, vgg=vgg)  # fmt: skip
    assert a.image.shape == (32, 32, 3) and a.image.dtype == np.uint8
    outside = job.mask == 0
    np.testing.assert_array_equal(a.image[outside], job.target.astype(np.uint8)[outside])
    np.testing.assert_array_equal(a.stage1[outside], job.target.astype(np.uint8)[outside])
    np.testing.assert_array_equal(a.image, b.image)
    assert 6 <= a.evaluations["stage1"] <= 6 + 25  # budget, plus at most one line search
    # The solve lowered the objective of both stages.
    for stage in ("stage1", "stage2"):
        start = sum(v[0] for v in a.losses[stage].values())
        end = sum(v[1] for v in a.losses[stage].values())
        assert end < start


def test_init_modes_differ_and_seed_matters(vgg, job):
    cfg = TINY.replace(stage2_enabled=False, init="noise")
    r0 = run_stages(cfg, vgg, job.target, job.source, job.mask, seed=0)
    r1 = run_stages(cfg, vgg, job.target, job.source, job.mask, seed=1)
    assert not np.array_equal(np.asarray(r0["image"]), np.asarray(r1["image"]))


def test_vmap_over_two_jobs_equals_two_single_runs(vgg, job, case1):
    job2 = place(case1 / "source.png", case1 / "target.png", case1 / "mask.png",
                 center=(17, 16), canvas=32, source_size=18)  # fmt: skip
    cfg = TINY
    singles = [run_stages(cfg, vgg, j.target, j.source, j.mask) for j in (job, job2)]
    stack = run_stages(
        cfg, vgg,
        np.stack([job.target, job2.target]), np.stack([job.source, job2.source]),
        np.stack([job.mask, job2.mask]), seed=np.array([cfg.seed, cfg.seed]), batched=True,
    )  # fmt: skip
    for i, s in enumerate(singles):
        np.testing.assert_allclose(
            np.asarray(stack["image"][i]), np.asarray(s["image"]), rtol=1e-3, atol=0.05
        )


def test_second_blend_of_same_shapes_does_not_recompile(vgg, job):
    cfg = TINY.replace(stage2_enabled=False)
    run_stages(cfg, vgg, job.target, job.source, job.mask)
    with jax.log_compiles(True):
        import logging

        records: list[str] = []

        class H(logging.Handler):
            def emit(self, record):
                records.append(record.getMessage())

        h = H()
        logging.getLogger("jax").addHandler(h)
        try:
            run_stages(cfg, vgg, job.target + 1.0, job.source, job.mask)
        finally:
            logging.getLogger("jax").removeHandler(h)
    compiled = [r for r in records if "Compiling" in r and "jit(" in r]
    big = [r for r in compiled if any(k in r for k in ("prepare", "start", "advance", "terms"))]
    assert big == [], big


def test_optax_solver_runs_and_lowers_loss(vgg, job):
    cfg = TINY.replace(solver="optax", stage2_enabled=False)
    r = run_stages(cfg, vgg, job.target, job.source, job.mask)
    start = sum(float(v[0]) for v in r["losses"]["stage1"].values())
    end = sum(float(v[1]) for v in r["losses"]["stage1"].values())
    assert end < start


def test_non_finite_solve_warns_and_keeps_best_finite_iterate(vgg, job):
    bad = StageConfig(style=3e38, steps=4, style_layers=SHALLOW)  # overflows float32
    cfg = TINY.replace(stage2=bad)
    with pytest.warns(NonFiniteWarning, match="non-finite"):
        r = run_stages(cfg, vgg, job.target, job.source, job.mask)
    img = np.asarray(r["image"])
    assert np.all(np.isfinite(img))
    np.testing.assert_array_equal(img, np.asarray(r["stage1"]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"source": "missing.png"}, "not found"),
        ({"mask": np.zeros((18, 18), np.uint8)}, "all zero"),
        ({"mask": np.ones((10, 12), np.uint8)}, "same size"),
        ({"center": (2, 2)}, "outside"),
        ({"target": np.zeros((8, 8, 3), np.uint8), "mask": np.ones((18, 18))}, "whole canvas"),
    ],
)
def test_bad_input_one_line_error(kwargs, match, case1, tmp_path):
    args = {
        "source": np.full((18, 18, 3), 200, np.uint8),
        "target": np.full((32, 32, 3), 50, np.uint8),
        "mask": np.ones((18, 18), np.uint8),
        "center": (16, 16),
    }
    args.update(kwargs)
    if args["target"].shape[0] == 8:  # whole-canvas mask: a canvas no larger than the object
        args["source"] = np.full((8, 8, 3), 200, np.uint8)
        args["mask"] = np.ones((8, 8), np.uint8)
        args["center"] = (4, 4)
    with pytest.raises(InputError, match=match) as e:
        place(args["source"], args["target"], args["mask"], center=args["center"],
              canvas=None)  # fmt: skip
    assert "\n" not in str(e.value)


def test_unreadable_image_is_one_line_error(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(InputError, match="not a readable image"):
        place(bad, bad, bad)


def _run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "jaxblend", *args], capture_output=True, text=True, timeout=600
    )


def test_cli_bad_inputs_exit_2_without_traceback(tmp_path, case1):
    zero = tmp_path / "zero.png"
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(zero)
    src = tmp_path / "src.png"
    Image.fromarray(np.full((20, 20, 3), 9, np.uint8)).save(src)
    cases = [
        ["--source", str(tmp_path / "nope.png"), "--mask", str(zero), "--target", str(src)],
        ["--source", str(src), "--mask", str(zero), "--target", str(case1 / "target.png")],
        ["--source", str(src), "--mask", str(case1 / "mask.png"), "--target",
         str(case1 / "target.png")],
    ]  # fmt: skip
    for c in cases:
        p = _run_cli("blend", *c, "--canvas", "32", "-o", str(tmp_path / "o.png"))
        assert p.returncode == 2, p.stderr
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("jaxblend: error:"), p.stderr
        assert "Traceback" not in p.stderr
    assert not (tmp_path / "o.png").exists()


def test_cli_blend_writes_output(tmp_path, case1):
    out = tmp_path / "out.png"
    s1 = tmp_path / "s1.png"
    p = _run_cli(
        "blend", "--source", str(case1 / "source.png"), "--mask", str(case1 / "mask.png"),
        "--target", str(case1 / "target.png"), "--center", "13,15", "--canvas", "32",
        "--source-size", "18", "--steps", "3", "2", "--init", "paste", "--stage1-out", str(s1),
        "--frames", str(tmp_path / "frames"), "-o", str(out),
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    with warnings.catch_warnings():
        im = np.asarray(Image.open(out))
    assert im.shape == (32, 32, 3)
    assert s1.exists() and any((tmp_path / "frames").iterdir())
    assert "stage1" in p.stderr  # the progress bar


def test_coarse_to_fine_scales(vgg, job):
    cfg = TINY.replace(stage2_enabled=False, scales=(0.5, 1.0))
    r = run_stages(cfg, vgg, job.target, job.source, job.mask)
    img = np.asarray(r["image"])
    outside = job.mask == 0
    np.testing.assert_array_equal(img[outside], job.target[outside])
    assert 6 <= int(r["evaluations"]["stage1"]) <= 6 + 2 * 20
    start, end = (sum(float(v[i]) for v in r["losses"]["stage1"].values()) for i in (0, 1))
    assert end < start
    with pytest.raises(InputError, match="scales"):
        TINY.replace(scales=(1.0, 0.5))


def test_poisson_init_starts_from_the_poisson_blend(vgg, job):
    from jaxblend.blend import initial_image
    from jaxblend.poisson import poisson_solve

    x0 = initial_image("poisson", job.target, job.source, job.mask, 0)
    np.testing.assert_array_equal(
        np.asarray(x0), np.asarray(poisson_solve(job.target, job.source, job.mask))
    )
    cfg = TINY.replace(stage2_enabled=False)
    paste = run_stages(cfg, vgg, job.target, job.source, job.mask)
    pois = run_stages(cfg.replace(init="poisson"), vgg, job.target, job.source, job.mask)
    # The Poisson blend satisfies the guidance inside the mask: its gradient loss at the
    # start (which also counts the ring outside the mask) is far below the pasted source's.
    assert float(pois["losses"]["stage1"]["grad"][0]) < 0.5 * float(
        paste["losses"]["stage1"]["grad"][0]
    )


def test_normalized_terms_are_one_at_the_naive_paste(case1):
    """With normalize=True each term is measured against the job's own scale: the naive
    paste scores 1.0 on the gradient (band), style and TV terms, and the scene itself 1.0
    on the content term."""
    import dataclasses

    import jax.numpy as jnp

    from jaxblend.io import place
    from jaxblend.solve import VGGSpec, composite, programs
    from jaxblend.vgg import load_vgg

    job = place(
        case1 / "source.png", case1 / "target.png", case1 / "mask.png",
        center=(25, 29), canvas=64, source_size=38,
    )  # fmt: skip
    cfg = dataclasses.replace(
        BlendConfig().stage2,
        normalize=True, grad=1.0, band=2, style=1.0, content=1.0, tv=1.0, range=0.0,
        smooth=0.0,
    )  # fmt: skip
    t, s, m = (jnp.asarray(a) for a in (job.target, job.source, job.mask))
    p = programs(cfg, VGGSpec(), True, "lbfgs", 5, False)
    naive = composite(s, t, m)
    data = p.prepare(load_vgg().params, t, m, s, naive)
    at_naive = {k: float(v) for k, v in p.terms(naive, data).items()}
    assert at_naive["grad"] == pytest.approx(1.0, rel=1e-4)
    assert at_naive["style"] == pytest.approx(1.0, rel=1e-4)
    assert at_naive["tv"] == pytest.approx(1.0, rel=1e-4)
    assert at_naive["content"] == pytest.approx(0.0, abs=1e-6)
    at_target = {k: float(v) for k, v in p.terms(t, data).items()}
    assert at_target["content"] == pytest.approx(1.0, rel=1e-4)
    assert at_target["style"] == pytest.approx(0.0, abs=1e-6)
    # smooth="auto" (the default stage 2) weighs the seam by 1 + the job's own sigma
    auto = dataclasses.replace(cfg, smooth="auto")
    pa = programs(auto, VGGSpec(), True, "lbfgs", 5, False)
    da = pa.prepare(load_vgg().params, t, m, s, naive)
    assert 0 < float(da.sigma) <= 1.5
    assert float(pa.terms(naive, da)["grad"]) == pytest.approx(1 + float(da.sigma), rel=1e-4)


def test_stage_image_region():
    """region="mask" composites the iterate into the target; region="image" is the iterate."""
    import dataclasses

    import jax.numpy as jnp

    from jaxblend.solve import stage_image

    x = jnp.full((4, 5, 3), 7.0)
    t = jnp.zeros((4, 5, 3))
    m = jnp.zeros((4, 5)).at[1:3, 1:4].set(1.0)
    s = BlendConfig().stage2
    inside = np.asarray(stage_image(dataclasses.replace(s, region="mask"), x, t, m))
    assert inside[0, 0, 0] == 0 and inside[1, 1, 0] == 7
    whole = np.asarray(stage_image(dataclasses.replace(s, region="image"), x, t, m))
    assert (whole == 7).all()
    with pytest.raises(jaxblend.InputError, match="region"):
        BlendConfig(stage2=dataclasses.replace(s, region="everything"))


def test_style_image_iterate_reads_the_canvas_outside_the_mask(vgg, job):
    """style_image="iterate" (the authors' stage 1): the style term is the Gram of the
    iterate itself, so pixels outside the mask, which the composite discards, change it;
    with "blend" they do not. The other terms read the composite either way."""
    import dataclasses

    import jax.numpy as jnp

    from jaxblend import losses
    from jaxblend.solve import VGGSpec, composite, programs

    t, s, m = (jnp.asarray(a) for a in (job.target, job.source, job.mask))
    params = vgg.params
    base = dataclasses.replace(BlendConfig().stage1, normalize=False, style=1.0, content=1.0)
    x = composite(s, t, m)
    x_out = x + 40.0 * (1 - m)[..., None]  # the same composite, another canvas outside
    got = {}
    for image in ("blend", "iterate"):
        cfg = dataclasses.replace(base, style_image=image)
        p = programs(cfg, VGGSpec(), True, "lbfgs", 5, False)
        data = p.prepare(params, t, m, s, x)
        got[image] = [{k: float(v) for k, v in p.terms(z, data).items()} for z in (x, x_out)]
    b, it = got["blend"], got["iterate"]
    assert b[0] == b[1]  # the composite is all the blend's terms see
    assert it[1]["style"] > 1.5 * it[0]["style"]
    for k in ("grad", "content", "tv"):
        assert it[0][k] == pytest.approx(b[0][k], rel=1e-5)
        assert it[1][k] == pytest.approx(b[1][k], rel=1e-5)
    # the iterate's style at x is the composite's (x is a composite already), checked
    # against the Gram computed directly
    feats = vgg.features(x, [n for n, _ in base.style_layers])
    tg = vgg.features(t, [n for n, _ in base.style_layers])
    direct = sum(
        float(jnp.mean((losses.gram(feats[n]) - losses.gram(tg[n])) ** 2)) * w
        for n, w in base.style_layers
    )
    assert it[0]["style"] == pytest.approx(direct, rel=1e-3)
    with pytest.raises(jaxblend.InputError, match="style_image"):
        dataclasses.replace(base, style_image="canvas")


def test_masked_content_is_the_authors_crop_mean(case1, vgg):
    """content_image="masked" is the authors' content term: VGG of the source-sized crop
    of the blend times the mask against VGG of the source times the mask, the mean over
    the crop's features (computed here on the crop itself, as their code does). The
    object lies far enough inside the box that the crop's zero padding does not reach it."""
    import dataclasses

    import jax.numpy as jnp
    from PIL import Image

    from jaxblend.solve import VGGSpec, composite, programs, source_box_fraction

    src = Image.open(case1 / "source.png").convert("RGB").resize((40, 40))
    yy, xx = np.mgrid[:40, :40]
    disc = (((yy - 20) ** 2 + (xx - 21) ** 2) <= 64).astype(np.float32) * 255
    job = place(np.asarray(src, np.float32), case1 / "target.png", disc,
                center=(30, 34), canvas=64, source_size=40)  # fmt: skip
    t, s, m = (jnp.asarray(a) for a in (job.target, job.source, job.mask))
    top, left, h, w = job.placement
    assert float(source_box_fraction(s, t)) == pytest.approx(h * w / 64**2)
    cfg = dataclasses.replace(
        BlendConfig().stage1, normalize=False, grad=0.0, style=0.0, range=0.0, content=1.0,
        content_layers=(("relu2_2", 1.0),), content_image="masked",
    )  # fmt: skip
    p = programs(cfg, VGGSpec(), True, "lbfgs", 5, False)
    data = p.prepare(vgg.params, t, m, s, composite(s, t, m))
    x = t + 30.0 * jnp.sin(jnp.arange(64.0))[:, None, None]  # some iterate
    got = float(p.terms(x, data)["content"])
    box = (slice(top, top + h), slice(left, left + w))
    crop_m = m[box][..., None]
    mine = vgg.features(composite(x, t, m)[box] * crop_m, ["relu2_2"])["relu2_2"]
    ref = vgg.features(s[box] * crop_m, ["relu2_2"])["relu2_2"]
    want = float(jnp.mean((mine - ref) ** 2))
    assert want > 0
    assert got == pytest.approx(want, rel=1e-4)
    with pytest.raises(jaxblend.InputError, match="content_image"):
        dataclasses.replace(cfg, content_image="crop")


def test_object_style_term_is_one_at_the_naive_paste_and_batches(case1, vgg, job):
    """style_object: the object's Gram against its matched target features, normalised to
    1.0 at the naive paste like the whole-image term; a stack equals single runs."""
    import dataclasses

    import jax.numpy as jnp

    from jaxblend.solve import VGGSpec, composite, programs

    cfg = dataclasses.replace(
        BlendConfig().stage2, normalize=True, grad=0.0, content=0.0, style=1.0, range=0.0,
        style_object=1.0, style_layers=SHALLOW,
    )  # fmt: skip
    t, s, m = (jnp.asarray(a) for a in (job.target, job.source, job.mask))
    p = programs(cfg, VGGSpec(), True, "lbfgs", 5, False)
    naive = composite(s, t, m)
    data = p.prepare(vgg.params, t, m, s, naive)
    assert float(p.terms(naive, data)["style"]) == pytest.approx(1.0, rel=1e-4)
    half = dataclasses.replace(cfg, style_object=0.5)
    ph = programs(half, VGGSpec(), True, "lbfgs", 5, False)
    assert float(ph.terms(naive, ph.prepare(vgg.params, t, m, s, naive))["style"]) == (
        pytest.approx(1.0, rel=1e-4)
    )
    # the object term reads only the object: changing the scene far from it leaves it be
    far = np.asarray(job.mask) == 0
    from scipy import ndimage

    far &= ~ndimage.binary_dilation(~far, iterations=12)  # relu2_2 sees 14 px
    moved = jnp.where(jnp.asarray(far)[..., None], 0.5 * naive, naive)
    assert float(p.terms(moved, data)["style"]) == pytest.approx(1.0, rel=1e-3)
    with pytest.raises(InputError, match="style_object"):
        dataclasses.replace(cfg, style_object=1.5)
    # in the solve: a stack of two jobs equals the two single runs
    tiny = TINY.replace(stage2=dataclasses.replace(TINY.stage2, style_object=0.5))
    job2 = place(case1 / "source.png", case1 / "target.png", case1 / "mask.png",
                 center=(17, 16), canvas=32, source_size=18)  # fmt: skip
    singles = [run_stages(tiny, vgg, j.target, j.source, j.mask) for j in (job, job2)]
    stack = run_stages(
        tiny, vgg,
        np.stack([job.target, job2.target]), np.stack([job.source, job2.source]),
        np.stack([job.mask, job2.mask]), seed=np.array([0, 0]), batched=True,
    )  # fmt: skip
    plain = run_stages(TINY, vgg, job.target, job.source, job.mask)
    assert not np.allclose(np.asarray(plain["image"]), np.asarray(singles[0]["image"]))
    for i, one in enumerate(singles):
        np.testing.assert_allclose(
            np.asarray(stack["image"][i]), np.asarray(one["image"]), rtol=1e-3, atol=0.05
        )


def test_smooth_auto_takes_each_jobs_sigma_from_its_scene(vgg, job):
    """smooth="auto": a soft (blurred) scene gets a wider search smoothing than a grainy
    one, each job of a stack its own, and a stack equals the single runs."""
    import dataclasses

    from scipy import ndimage

    from jaxblend.solve import VGGSpec, prepare
    from jaxblend.spectrum import fine_scale_sigma

    s2 = dataclasses.replace(TINY.stage2, smooth="auto")
    tiny = TINY.replace(stage2=s2)
    soft = ndimage.gaussian_filter(np.asarray(job.target, np.float32), (1.2, 1.2, 0))
    t2 = np.where(np.asarray(job.mask)[..., None] > 0, job.target, soft).astype(np.float32)
    m = jax.numpy.asarray(job.mask, jax.numpy.float32)
    sig = [
        float(prepare(s2, VGGSpec(), vgg.params, jax.numpy.asarray(t), m,
                      jax.numpy.asarray(job.source), jax.numpy.asarray(job.source)).sigma)
        for t in (job.target, soft)
    ]  # fmt: skip
    assert sig[0] == pytest.approx(float(fine_scale_sigma(jax.numpy.asarray(job.target))))
    assert sig[1] > sig[0] + 0.2
    singles = [run_stages(tiny, vgg, t, job.source, job.mask) for t in (job.target, t2)]
    stack = run_stages(
        tiny, vgg, np.stack([job.target, t2]), np.stack([job.source, job.source]),
        np.stack([job.mask, job.mask]), seed=np.array([0, 0]), batched=True,
    )  # fmt: skip
    for i, one in enumerate(singles):
        np.testing.assert_allclose(
            np.asarray(stack["image"][i]), np.asarray(one["image"]), rtol=1e-3, atol=0.05
        )
    plain = run_stages(TINY, vgg, job.target, job.source, job.mask)
    assert not np.allclose(np.asarray(plain["image"]), np.asarray(singles[0]["image"]))
    with pytest.raises(InputError, match="smooth"):
        dataclasses.replace(s2, smooth="wide")


def test_stage2_content_object_keeps_the_object_only(vgg, job):
    """stage2_content="object": the stage-1 blend's content inside the mask only, so the
    scene is held by the seam band and style alone; "stage1" holds the whole canvas."""
    import dataclasses

    s2 = dataclasses.replace(TINY.stage2, region="image", content=1.0, normalize=True)
    runs = {
        c: run_stages(TINY.replace(stage2=s2, stage2_content=c), vgg, job.target, job.source,
                      job.mask)
        for c in ("stage1", "object")
    }  # fmt: skip
    outside = np.asarray(job.mask) == 0
    moved = {
        c: float(np.abs(np.asarray(r["image"]) - np.asarray(r["stage1"]))[outside].mean())
        for c, r in runs.items()
    }
    assert moved["object"] > moved["stage1"]
    with pytest.raises(InputError, match="stage2_content"):
        TINY.replace(stage2_content="scene")


def test_style_stop_ends_a_job_where_its_style_is_reached(vgg, job, case1):
    """style_stop: a stage ends for a job once its normalised style term is at most the
    threshold (checked per chunk); in a stack each job stops where it would alone."""
    import dataclasses

    s2 = dataclasses.replace(
        TINY.stage2, normalize=True, style=1.0, content=0.1, steps=60, style_layers=SHALLOW
    )
    base = TINY.replace(stage2=s2, chunk=4)
    full = run_stages(base, vgg, job.target, job.source, job.mask)
    end = float(full["losses"]["stage2"]["style"][1])
    # a threshold the full run passes on its way: the stopped run spends less and ends
    # at or below it, while the full run goes further
    stop = base.replace(stage2=dataclasses.replace(s2, style_stop=0.5 + 0.5 * end))
    r = run_stages(stop, vgg, job.target, job.source, job.mask)
    assert r["evaluations"]["stage2"] < full["evaluations"]["stage2"]
    assert float(r["losses"]["stage2"]["style"][1]) <= 0.5 + 0.5 * end
    job2 = place(case1 / "source.png", case1 / "target.png", case1 / "mask.png",
                 center=(17, 16), canvas=32, source_size=18)  # fmt: skip
    single2 = run_stages(stop, vgg, job2.target, job2.source, job2.mask)
    stack = run_stages(
        stop, vgg,
        np.stack([job.target, job2.target]), np.stack([job.source, job2.source]),
        np.stack([job.mask, job2.mask]), seed=np.array([0, 0]), batched=True,
    )  # fmt: skip
    for i, one in enumerate((r, single2)):
        assert int(np.asarray(stack["evaluations"]["stage2"])[i]) == int(
            np.asarray(one["evaluations"]["stage2"])
        )
        np.testing.assert_allclose(
            np.asarray(stack["image"][i]), np.asarray(one["image"]), rtol=1e-3, atol=0.05
        )
    with pytest.raises(InputError, match="style_stop needs normalize"):
        dataclasses.replace(s2, normalize=False, style_stop=0.1)


def test_tone_term_holds_the_objects_tones_and_batches(vgg, job):
    """Stage 2's tone term: normalised, the scene itself scores 1.0 against the reference
    and the reference 0; with a strong tone weight the stage keeps the object's coarse
    colours closer to stage 1's than without; a stack equals the single runs; a stage with
    a tone term is never windowed."""
    import dataclasses

    import jax.numpy as jnp

    from jaxblend import losses, window
    from jaxblend.solve import VGGSpec, loss_terms, prepare

    s2 = dataclasses.replace(TINY.stage2, normalize=True, tone=1.0, tone_sigma=2.0)
    t, s, m = (jnp.asarray(a, jnp.float32) for a in (job.target, job.source, job.mask))
    ref = jnp.asarray(job.naive, jnp.float32)
    data = prepare(s2, VGGSpec(), vgg.params, t, m, s, ref, masked=False)
    at = lambda x: float(loss_terms(s2, VGGSpec(), x, data, masked=False)["tone"])  # noqa: E731
    assert at(t) == pytest.approx(1.0, rel=1e-4)
    assert at(ref) == pytest.approx(0.0, abs=1e-9)
    assert not window.windowable(dataclasses.replace(s2, region="mask"))

    def coarse_gap(r):
        a, b = np.asarray(r["image"], np.float32), np.asarray(r["stage1"], np.float32)
        return float(losses.tone_loss(a, b, job.mask, 2.0))

    base = TINY.replace(
        stage2=dataclasses.replace(TINY.stage2, normalize=True, content=1.0, style=30.0, steps=8)
    )
    strong = base.replace(stage2=dataclasses.replace(base.stage2, tone=30.0, tone_sigma=2.0))
    free, held = (run_stages(c, vgg, job.target, job.source, job.mask) for c in (base, strong))
    assert coarse_gap(held) < 0.5 * coarse_gap(free)
    stack = run_stages(
        strong, vgg, np.stack([job.target, job.target[::-1]]), np.stack([job.source] * 2),
        np.stack([job.mask] * 2), seed=np.array([0, 0]), batched=True,
    )  # fmt: skip
    np.testing.assert_allclose(
        np.asarray(stack["image"][0]), np.asarray(held["image"]), rtol=1e-3, atol=0.05
    )
    with pytest.raises(InputError, match="tone_sigma"):
        dataclasses.replace(s2, tone_sigma=0.0)


def test_screened_start(vgg, job):
    """screen > 0: the start is the screened Poisson blend with λ = screen² / mask area,
    per job in a stack; 0 is the classical one; a bad value is a one-line error."""
    from jaxblend.blend import initial_image, screen_weight
    from jaxblend.poisson import poisson_solve

    area = float(np.sum(job.mask))
    lam = float(screen_weight(job.mask, 4.0))
    assert lam == pytest.approx(16.0 / area)
    x0 = initial_image("poisson", job.target, job.source, job.mask, 0, 4.0)
    want = poisson_solve(job.target, job.source, job.mask, screen=16.0 / area)
    np.testing.assert_allclose(np.asarray(x0), np.asarray(want), atol=1e-3)
    plain = initial_image("poisson", job.target, job.source, job.mask, 0, 0.0)
    assert np.abs(np.asarray(plain) - np.asarray(x0)).max() > 1.0
    small = np.asarray(job.mask).copy()
    small[: small.shape[0] // 2] = 0
    masks = np.stack([job.mask, small])
    xs = initial_image(
        "poisson", np.stack([job.target] * 2), np.stack([job.source] * 2), masks,
        np.array([0, 0]), 4.0,
    )  # fmt: skip
    for i in range(2):
        one = initial_image("poisson", job.target, job.source, masks[i], 0, 4.0)
        np.testing.assert_allclose(np.asarray(xs[i]), np.asarray(one), atol=1e-3)
    with pytest.raises(InputError, match="screen"):
        BlendConfig(screen=-1.0)


def test_stage1_content_start_holds_the_poisson_start(vgg, job):
    """stage1_content="start": stage 1's content reference is its own (Poisson) start, so
    a content-only stage 1 has nothing to correct and stays there, while the default
    reference (the naive paste) pulls the object back towards its own colours."""
    import dataclasses

    from jaxblend.blend import initial_image

    s1 = dataclasses.replace(TINY.stage1, grad=0.0, style=0.0, hist=0.0, tv=0.0, content=1.0,
                             range=0.0, normalize=True)  # fmt: skip
    cfg = TINY.replace(stage1=s1, init="poisson", stage2_enabled=False)
    x0 = np.asarray(
        initial_image(
            "poisson", *(np.asarray(a, np.float32) for a in (job.target, job.source, job.mask)), 0
        )
    )
    moved = {}
    for c in ("source", "start"):
        r = run_stages(cfg.replace(stage1_content=c), vgg, job.target, job.source, job.mask)
        moved[c] = float(np.abs(np.asarray(r["image"]) - x0).mean())
    assert moved["start"] < 1e-3 < moved["source"]
    with pytest.raises(InputError, match="stage1_content"):
        TINY.replace(stage1_content="poisson")
    with pytest.raises(InputError, match="init='poisson'"):
        TINY.replace(stage1_content="start", init="noise")
