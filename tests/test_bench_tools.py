"""Tests for the benchmark helpers in ``bench/`` (torch baseline, FLOP counts, ceilings)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bench.hardware import (  # noqa: E402
    authors_step_flops,
    conv_gflops,
    device_info,
    matmul_gflops,
    vgg16_flops,
)
from bench.report import pick  # noqa: E402
from bench.torch_step import (  # noqa: E402
    CAFFE_MEAN_BGR,
    STYLE_LAYERS,
    VGG16_BLOCKS,
    _exact_float32,
    _pytorch_defaults,
    build_torch_vgg16,
    default_device,
    make_authors_step,
    random_vgg16_weights,
    time_authors_step,
)


def _jax_vgg16_reference(weights, image_rgb):
    """Independent VGG16 blocks 1-4 with jax.lax.conv_general_dilated (NHWC, HWIO)."""
    h = image_rgb[..., ::-1] - jnp.asarray(CAFFE_MEAN_BGR, image_rgb.dtype).reshape(1, 1, 3)
    h = h[None]
    outs = []
    for k, (b, n) in enumerate(VGG16_BLOCKS):
        if k > 0:
            h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        for i in range(1, n + 1):
            kernel = jnp.asarray(weights[f"conv{b}_{i}.kernel"])
            bias = jnp.asarray(weights[f"conv{b}_{i}.bias"]).reshape(1, 1, 1, -1)
            h = jax.lax.conv_general_dilated(
                h,
                kernel,
                (1, 1),
                "SAME",
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
                precision=jax.lax.Precision.HIGHEST,
            )
            h = jax.nn.relu(h + bias)
        outs.append(h[0])
    return outs


def test_torch_vgg16_matches_jax_conv_stack():
    weights = random_vgg16_weights(seed=1)
    img = np.random.default_rng(2).uniform(0, 255, (16, 16, 3)).astype(np.float32)
    ref = jax.jit(_jax_vgg16_reference)(weights, jnp.asarray(img))
    net = build_torch_vgg16(weights)
    with torch.no_grad():
        got = net(torch.from_numpy(img.transpose(2, 0, 1).copy())[None])
    assert got._fields == STYLE_LAYERS
    expected_shapes = [(16, 16, 64), (8, 8, 128), (4, 4, 256), (2, 2, 512)]
    for layer, r, shape in zip(STYLE_LAYERS, ref, expected_shapes, strict=True):
        g = getattr(got, layer)[0].numpy().transpose(1, 2, 0)
        assert g.shape == shape
        r = np.asarray(r)
        assert np.abs(g - r).max() <= 1e-4 * np.abs(r).max(), layer


def test_torch_vgg16_rejects_bad_weights():
    weights = random_vgg16_weights(seed=0)
    weights["conv2_1.kernel"] = weights["conv2_1.kernel"][:, :, :32]
    with pytest.raises(ValueError, match="conv2_1.kernel"):
        build_torch_vgg16(weights)


@pytest.mark.parametrize("style_on", ["input", "blend"])
def test_authors_step_gradient_matches_finite_difference(style_on):
    rng = np.random.default_rng(3)
    size, ss = 16, 8
    weights = random_vgg16_weights(seed=4, dtype=np.float64)
    target = rng.uniform(0, 255, (size, size, 3))
    source = rng.uniform(0, 255, (ss, ss, 3))
    mask = np.zeros((ss, ss), np.uint8)
    mask[1:7, 2:7] = 1
    step = make_authors_step(
        weights, target, source, mask, (3, 5), style_on=style_on, dtype=torch.float64
    )
    x = torch.from_numpy(rng.uniform(0, 255, (1, 3, size, size)))
    loss, grad = step(x)
    assert loss.ndim == 0 and np.isfinite(loss.item())
    assert grad.shape == x.shape and torch.isfinite(grad).all()
    direction = torch.from_numpy(rng.standard_normal(x.shape))
    eps = 1e-4
    fd = (step(x + eps * direction)[0] - step(x - eps * direction)[0]).item() / (2 * eps)
    analytic = torch.sum(grad * direction).item()
    np.testing.assert_allclose(fd, analytic, rtol=1e-5)
    # The step does not keep state between calls.
    np.testing.assert_allclose(step(x)[1].numpy(), grad.numpy())


def test_authors_step_rejects_box_outside_canvas():
    weights = random_vgg16_weights(seed=0)
    with pytest.raises(ValueError, match="does not fit"):
        make_authors_step(
            weights, np.zeros((16, 16, 3)), np.zeros((8, 8, 3)), np.ones((8, 8)), (10, 0)
        )


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_time_authors_step_on_device_records_it(device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    r = time_authors_step(random_vgg16_weights(seed=0), 32, repeats=2, device=device)
    assert r["device"].startswith(device) and len(r["times"]) == 2
    assert r["seconds_per_eval"] > 0 and np.isfinite(r["loss"])
    assert r["precision"]["tf32"] == ("off" if device == "cuda" else "n/a (CPU)")
    assert default_device() == ("cuda" if torch.cuda.is_available() else "cpu")


def test_torch_step_command_times_the_shipped_weights(capsys):
    import json

    from bench import torch_step

    torch_step.main(["--sizes", "32", "--repeats", "1", "--device", "cpu"])
    r = json.loads(capsys.readouterr().out)
    assert r["weights"].endswith("vgg16_imagenet_blocks1-4.safetensors")
    assert r["size"] == 32 and r["device"] == "cpu" and np.isfinite(r["loss"])


def test_exact_float32_turns_tf32_off_and_restores_the_flags():
    b = torch.backends
    if hasattr(b.cudnn, "conv") and hasattr(b.cudnn.conv, "fp32_precision"):
        flags, off = [(b.cudnn.conv, "fp32_precision"), (b.cuda.matmul, "fp32_precision")], "ieee"
    else:
        flags, off = [(b.cudnn, "allow_tf32"), (b.cuda.matmul, "allow_tf32")], False
    before = [getattr(o, a) for o, a in flags]
    # Only the backend flags are touched, so this runs without a GPU too.
    with _exact_float32(torch.device("cuda")) as settings:
        assert [getattr(o, a) for o, a in flags] == [off, off]
        assert settings["tf32"] == "off"
    assert [getattr(o, a) for o, a in flags] == before


def test_pytorch_defaults_turn_tf32_convolutions_on_and_restore_the_flags():
    b = torch.backends
    if hasattr(b.cudnn, "conv") and hasattr(b.cudnn.conv, "fp32_precision"):
        flags = [(b.cudnn.conv, "fp32_precision"), (b.cuda.matmul, "fp32_precision")]
        want = ["tf32", "ieee"]
    else:
        flags = [(b.cudnn, "allow_tf32"), (b.cuda.matmul, "allow_tf32")]
        want = [True, False]
    before = [getattr(o, a) for o, a in flags]
    with _exact_float32(torch.device("cuda")), _pytorch_defaults(torch.device("cuda")) as s:
        assert [getattr(o, a) for o, a in flags] == want
        assert s["tf32"].startswith("on")
    assert [getattr(o, a) for o, a in flags] == before
    with _pytorch_defaults(torch.device("cpu")) as s:
        assert s["tf32"] == "n/a (CPU)"


def test_vgg16_flops_full_network_224():
    # Well-known: VGG16's 13 convs at 224x224 are 15.35 GMAC = 30.7 GFLOP.
    f = vgg16_flops(224, 224, upto="relu5_3")
    assert len(f["layers"]) == 13
    assert f["forward_macs"] == pytest.approx(15.35e9, rel=0.02)
    assert f["forward_flops"] == pytest.approx(30.7e9, rel=0.02)
    assert f["forward_backward_flops"] == 2 * f["forward_flops"]


def test_vgg16_flops_design_figure_512():
    # DESIGN.md: ~146 GFLOP forward at 512x512 up to relu4_3.
    f = vgg16_flops(512, 512)
    assert len(f["layers"]) == 10
    assert f["forward_flops"] == pytest.approx(146e9, rel=0.01)
    # conv1_1 by hand: 512*512*3*64*9 multiply-adds.
    assert f["layers"][0]["macs"] == 512 * 512 * 3 * 64 * 9
    assert f["layers"][-1]["h"] == 64
    a = authors_step_flops(512, 300)
    assert a["cached_constants_flops"] == f["forward_backward_flops"]
    assert 1.5 < a["ratio"] < 2.5


def test_vgg16_flops_rejects_unknown_layer():
    with pytest.raises(ValueError):
        vgg16_flops(64, 64, upto="fc6")


def test_measured_rates_positive():
    m = matmul_gflops(n=128, repeats=2)
    c = conv_gflops(16, 16, 8, 8, repeats=2)
    assert m["gflops"] > 0 and c["gflops"] > 0
    info = device_info()
    assert info["cpu_count"] >= 1 and info["versions"]["jax"] == jax.__version__


def test_report_picks_each_platforms_newest_file(tmp_path):
    names = [
        "cpu-cpu-2026-11-24.md", "cpu-cpu-2026-11-25.md", "gpu-NVIDIA_H200-2026-11-26.md",
        "gpu-NVIDIA_H100-2026-11-20.md", "case1-default-2026-11-25.md",
        "case1-cpu-default-2026-11-24.md", "case1-gpu-default-2026-11-26.md",
        "batch-cpu-2026-11-25.md", "batch-gpu-2026-11-26.md", "batch-cpu-2026-11-24.md",
        "poisson-cpu-2026-11-25.md", "poisson-gpu-2026-11-26.md",
        "compile-cache-cpu-2026-11-26.md", "calibrate.jsonl", "cpu-cpu-2026-11-27.json",
        "compile-warmup-cpu-2026-12-02.md", "pipeline-cpu-2026-12-02.md",
        "quality-default-2026-12-01.md", "quality-default-2026-12-02.md",
        "quality-case1-default.png", "eval-cost-cpu-2026-12-02.md",
        "quality-authors-2026-12-02.md", "quality-authors-s1-2026-12-03.md",
        "window-cost-cpu-2026-12-03.md",
        "window-cost-cpu-2026-12-03.json",
    ]  # fmt: skip
    for n in names:
        (tmp_path / n).write_text(n)
    got = {k: v.name if v else None for k, v in pick(tmp_path).items()}
    assert got == {
        "perf": "cpu-cpu-2026-11-25.md",  # the .json of the 27th is not a section's source
        "perf-gpu": "gpu-NVIDIA_H200-2026-11-26.md",
        "case1": "case1-default-2026-11-25.md",  # the older name, newer date than case1-cpu
        "case1-gpu": "case1-gpu-default-2026-11-26.md",
        "poisson": "poisson-cpu-2026-11-25.md",
        "poisson-gpu": "poisson-gpu-2026-11-26.md",
        "batch": "batch-cpu-2026-11-25.md",
        "batch-gpu": "batch-gpu-2026-11-26.md",
        "cache": "compile-cache-cpu-2026-11-26.md",
        "warmup": "compile-warmup-cpu-2026-12-02.md",
        "pipeline": "pipeline-cpu-2026-12-02.md",
        "pipeline-gpu": None,
        "quality": "quality-default-2026-12-02.md",  # the tables, not the contact sheets
        "quality-authors": "quality-authors-2026-12-02.md",  # not the newer stage-1-only run
        "eval-cost": "eval-cost-cpu-2026-12-02.md",
        "window": "window-cost-cpu-2026-12-03.md",
    }
    (tmp_path / "case1-cpu-default-2026-11-27.md").write_text("x")
    for n in ("gpu-NVIDIA_H200-2026-11-26.md", "compile-cache-cpu-2026-11-26.md"):
        (tmp_path / n).unlink()
    got = pick(tmp_path)
    assert got["case1"].name == "case1-cpu-default-2026-11-27.md"
    assert got["perf-gpu"].name == "gpu-NVIDIA_H100-2026-11-20.md"
    assert got["perf"].name == "cpu-cpu-2026-11-25.md" and got["cache"] is None


def test_variants_table_marks_each_check_against_the_authors():
    from bench.variants_table import table

    fig = {"style": 0.1, "ghosting": 0.01, "outline": 9.0, "seam": 30.0, "fidelity": 0.2}
    quality = {"cases": {
        "case4": {"figures": {"authors_final": fig, "final": fig}},
        "pair": {"figures": {"final": fig}},  # a cross pair: no authors' final
    }}  # fmt: skip
    worse = {**fig, "style": 0.12, "fidelity": 0.25}
    rows = [
        {"tag": "t", "case": "case4", "evaluations": 50, "figures": {**worse, "structure": 0.7}},
        {"tag": "t", "case": "case4", "evaluations": 40, "figures": {**worse, "structure": 0.7}},
        {"tag": "t", "case": "pair", "evaluations": 50, "figures": {**fig, "structure": 0.5}},
    ]
    lines = table(rows, quality, ["t"], (50,)).splitlines()
    assert len(lines) == 4  # header, rule, two rows at 50 evaluations
    assert "0.12 ✗" in lines[2] and "0.01 ✓" in lines[2] and lines[2].endswith("| 2 |")
    assert "✓" not in lines[3] and lines[3].endswith("| – |")
